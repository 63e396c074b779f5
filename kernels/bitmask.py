"""Constrained decoding: apply a token bitmask to logits in place.

`bitmask` `[B, ceil(V/32)]` int32 in llguidance's layout: bit j (little-endian) of word i allows
token 32*i + j. Disallowed tokens get -inf. Tokens past the mask's width (a model vocabulary
padded beyond the tokenizer's) are disallowed, as llguidance does.
"""

from __future__ import annotations

import torch

from ._triton import tl, triton


def _check(logits: torch.Tensor, bitmask: torch.Tensor) -> None:
    if logits.dim() != 2 or bitmask.dim() != 2 or logits.shape[0] != bitmask.shape[0]:
        raise ValueError(
            f"expected logits [B, V] and bitmask [B, ceil(V/32)], got {tuple(logits.shape)} "
            f"and {tuple(bitmask.shape)}"
        )
    if bitmask.dtype != torch.int32:
        raise TypeError(f"bitmask must be int32, got {bitmask.dtype}")


def apply_token_bitmask_reference_(logits: torch.Tensor, bitmask: torch.Tensor) -> torch.Tensor:
    _check(logits, bitmask)
    v = logits.shape[1]
    shifts = torch.arange(32, dtype=torch.int32, device=bitmask.device)
    bits = ((bitmask[:, :, None] >> shifts) & 1).flatten(1)[:, :v]
    allowed = torch.zeros(logits.shape, dtype=torch.bool, device=logits.device)
    allowed[:, : bits.shape[1]] = bits.to(logits.device) != 0
    return logits.masked_fill_(~allowed, float("-inf"))


def apply_token_bitmask_triton_(logits: torch.Tensor, bitmask: torch.Tensor) -> torch.Tensor:
    _check(logits, bitmask)
    b, v = logits.shape
    if b == 0 or v == 0:
        return logits
    bitmask = bitmask.to(logits.device, non_blocking=True)
    block = 1024
    grid = (b, triton.cdiv(v, block))
    _bitmask_kernel[grid](
        logits, bitmask, v, bitmask.shape[1], logits.stride(0), logits.stride(1),
        bitmask.stride(0), bitmask.stride(1), BLOCK=block, num_warps=4,
    )  # fmt: skip
    return logits


@triton.jit
def _bitmask_kernel(
    logits_ptr, mask_ptr, V, WORDS, stride_lb, stride_lv, stride_mb, stride_mw,
    BLOCK: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    in_vocab = offs < V
    word_idx = offs // 32
    word = tl.load(
        mask_ptr + row * stride_mb + word_idx * stride_mw,
        mask=in_vocab & (word_idx < WORDS),
        other=0,
    )
    allowed = ((word >> (offs % 32)) & 1) != 0
    # Made in fp32 and cast: Triton's CPU interpreter cannot make a bf16 constant directly.
    neg_inf = tl.full((BLOCK,), float("-inf"), dtype=tl.float32).to(logits_ptr.dtype.element_ty)
    tl.store(logits_ptr + row * stride_lb + offs * stride_lv, neg_inf, mask=in_vocab & ~allowed)
