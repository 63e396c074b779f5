"""GPU hot paths of V4-Flash: each op has a plain-torch reference and a Triton kernel.

The functions here dispatch: Triton when the tensors are on CUDA and triton imports, the
reference otherwise. `FLASHBEAM_KERNELS=reference|triton` (or `set_backend`) forces one side;
forcing "triton" on CPU tensors needs `TRITON_INTERPRET=1` set before triton is first imported.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ._triton import HAS_TRITON
from .attention import sparse_attention_reference, sparse_attention_triton
from .bitmask import apply_token_bitmask_reference_, apply_token_bitmask_triton_
from .indexer import ReduceScores, indexer_topk_reference, indexer_topk_triton
from .moe import ExpertWeights, fused_moe_reference, fused_moe_triton
from .quant import (
    dequantize_fp8_blocks,
    e8m0_to_float,
    fp8_linear_reference,
    fp8_linear_triton,
    unpack_fp4,
)

BACKENDS = ("auto", "reference", "triton")
_backend = "auto"


def set_backend(name: str) -> None:
    """Use "auto" (Triton on CUDA), "reference" or "triton" for every op."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"kernel backend must be one of {BACKENDS}, got {name!r}")
    if name == "triton" and not HAS_TRITON:
        raise RuntimeError("kernel backend 'triton' requested but triton is not installed")
    _backend = name


def get_backend() -> str:
    return _backend


@contextmanager
def use_backend(name: str) -> Iterator[None]:
    previous = _backend
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def uses_triton(tensor: torch.Tensor) -> bool:
    """Whether the ops here run their Triton kernels for `tensor`: on CUDA tensors, except those
    autograd tracks (training), since the Triton kernels are forward-only. A caller with a batched
    torch alternative to an op's index-list interface picks by this too."""
    if _backend != "auto":
        return _backend == "triton"
    tracked = torch.is_grad_enabled() and tensor.requires_grad
    return HAS_TRITON and tensor.is_cuda and not tracked


def sparse_attention(
    q: torch.Tensor, kv: torch.Tensor, indices: torch.Tensor, sink: torch.Tensor, scale: float
) -> torch.Tensor:
    """q `[N, H, D]` attends to `kv[indices[n]]` (`kv` `[M, D]`, indices `[N, K]`, -1 = skip)
    with per-head sink logits `[H]` in the denominator -> `[N, H, D]`."""
    impl = sparse_attention_triton if uses_triton(q) else sparse_attention_reference
    return impl(q, kv, indices, sink, scale)


def indexer_topk(
    q: torch.Tensor,
    weights: torch.Tensor,
    keys: torch.Tensor,
    key_start: torch.Tensor,
    key_end: torch.Tensor,
    k: int,
    reduce_scores: ReduceScores | None = None,
    max_count: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k pool keys in `[key_start[n], key_end[n])` by `sum_h w[n,h] relu(q[n,h] . key)` ->
    (int32 indices `[N, k]`, -1 padded; fp32 scores `[N, k]`, -inf padded). `reduce_scores`
    (in place, on each block of scores before its top-k) adds the other ranks' heads.
    `max_count` (>= every range's length) fixes the work's shapes, so nothing is read back
    from the device: the call can be captured in a CUDA graph."""
    impl = indexer_topk_triton if uses_triton(q) else indexer_topk_reference
    return impl(q, weights, keys, key_start, key_end, k, reduce_scores, max_count)


def fused_moe(
    x: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_weights: torch.Tensor,
    experts: ExpertWeights,
    swiglu_limit: float | None,
) -> torch.Tensor:
    """Routed experts with clamped SwiGLU: x `[T, D]`, topk ids/weights `[T, k]` -> fp32
    `[T, D]` (sum over the token's experts; add the shared expert, then cast)."""
    impl = fused_moe_triton if uses_triton(x) else fused_moe_reference
    return impl(x, topk_ids, topk_weights, experts, swiglu_limit)


def fp8_linear(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x `[..., in]` times the FP8 block-scaled weight `[out, in]` transposed, in x's dtype."""
    impl = fp8_linear_triton if uses_triton(x) else fp8_linear_reference
    return impl(x, weight, scale)


def apply_token_bitmask_(logits: torch.Tensor, bitmask: torch.Tensor) -> torch.Tensor:
    """In place: logits `[B, V]` get -inf where the int32 bitmask `[B, ceil(V/32)]` has a 0 bit."""
    impl = apply_token_bitmask_triton_ if uses_triton(logits) else apply_token_bitmask_reference_
    return impl(logits, bitmask)


set_backend(os.environ.get("FLASHBEAM_KERNELS", "auto") or "auto")

__all__ = [
    "BACKENDS",
    "ExpertWeights",
    "apply_token_bitmask_",
    "dequantize_fp8_blocks",
    "e8m0_to_float",
    "fp8_linear",
    "fused_moe",
    "get_backend",
    "indexer_topk",
    "set_backend",
    "sparse_attention",
    "unpack_fp4",
    "use_backend",
]
