"""Cached KV rounded as the official runtime stores it (`ModelConfig.kv_quant_sim`).

The official runtime keeps the no-rope dims of window and compressed KV in e4m3 under one
power-of-two scale per 64 dims, and the indexer's queries and keys Hadamard-rotated in e2m1
under one scale per 32 dims. With `kv_quant_sim` the network rounds those values the same way
where it makes them, so its outputs match that runtime's rather than the unrounded reference's.
"""

from __future__ import annotations

import torch

from flashbeam.kernels.quant import (
    E2M1_MAX,
    E4M3_MAX,
    FP4_MAGNITUDES,
    device_table,
    nearest_e2m1,
    pow2_exponent,
)
from flashbeam.model.network.layers import cast

KV_FP8_BLOCK = 64  # window and compressed KV: one power-of-two scale per 64 dims
KV_FP4_BLOCK = 32  # indexer queries and keys: one per 32 dims
_ACT_AMAX_FLOOR = 1e-4  # the official activation quantiser's floor on a block's largest magnitude


def _block_multipliers(x: torch.Tensor, block: int, limit: float) -> torch.Tensor:
    """Per-element power-of-two scales of x [..., n]: blocks of `block` along the last dim (a
    ragged last block allowed), each 2^ceil(log2(max(amax, 1e-4) / limit))."""
    n = x.shape[-1]
    pad = -n % block
    a = torch.nn.functional.pad(x.abs().to(torch.float32), (0, pad))
    amax = a.unflatten(-1, (-1, block)).amax(dim=-1).clamp(min=_ACT_AMAX_FLOOR)
    scale = torch.exp2(pow2_exponent(amax, limit).to(torch.float32))
    return scale.repeat_interleave(block, dim=-1)[..., :n]


def fp8_simulate(x: torch.Tensor, dims: int, block: int = KV_FP8_BLOCK) -> torch.Tensor:
    """x with its first `dims` channels rounded to e4m3 under per-block power-of-two scales and
    scaled back (the rest unchanged), in x's dtype: the official FP8 simulation of the no-rope
    part of window and compressed KV."""
    head = x[..., :dims]
    scale = _block_multipliers(head, block, E4M3_MAX)
    q = (head.to(torch.float32) / scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return torch.cat((cast(q.to(torch.float32) * scale, x.dtype), x[..., dims:]), dim=-1)


def fp4_simulate(x: torch.Tensor, block: int = KV_FP4_BLOCK) -> torch.Tensor:
    """x rounded to e2m1 under per-block power-of-two scales along the last dim and scaled back
    (nearest value, ties to the even code as `quantize_fp4`), in x's dtype: the official FP4
    simulation of the indexer's queries and keys."""
    scale = _block_multipliers(x, block, E2M1_MAX)
    v = (x.to(torch.float32) / scale).clamp(-E2M1_MAX, E2M1_MAX)
    values = device_table(FP4_MAGNITUDES, v.device)[nearest_e2m1(v)]
    return cast(torch.where(v < 0, -values, values) * scale, x.dtype)


def hadamard_rotate(x: torch.Tensor) -> torch.Tensor:
    """The orthonormal Walsh-Hadamard transform of x's last dim (a power of two): Sylvester's
    H_n = [[H, H], [H, -H]] scaled by n^-1/2, so it is its own inverse and keeps dot products."""
    n = x.shape[-1]
    if n & (n - 1):
        raise ValueError(f"the Hadamard rotation needs a power-of-two width, got {n}")
    y = x.to(torch.float32)
    h = 1
    while h < n:  # butterflies over pairs (i, i + h) inside blocks of 2h
        pairs = y.unflatten(-1, (n // (2 * h), 2, h))
        y = torch.stack((pairs[..., 0, :] + pairs[..., 1, :], pairs[..., 0, :] - pairs[..., 1, :]),
                        dim=-2).flatten(-3)  # fmt: skip
        h *= 2
    return cast(y * n**-0.5, x.dtype)
