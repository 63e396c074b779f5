"""Building blocks of the V4 network: RMS norms and partial interleaved RoPE (plain / YaRN)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from flashbeam.model.network.config import ModelConfig


def fp32(t: torch.Tensor) -> torch.Tensor:
    """t in fp32; an fp32 tensor is returned as is, without a dispatched no-op cast (decode steps
    of small models are bound by the number of tensor operations)."""
    return t if t.dtype == torch.float32 else t.float()


def cast(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """t in `dtype`, without a dispatched no-op cast when it already is."""
    return t if t.dtype == dtype else t.to(dtype)


class RMSNorm(nn.Module):
    """Weighted RMSNorm: fp32 math and weight, one cast back at the end (a bf16 weight multiply
    drifts from the official model)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.rms_norm(fp32(x), (x.shape[-1],), fp32(self.weight), self.eps)
        return cast(h, x.dtype)


def rms_normalize(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Unweighted RMS normalisation over the last dim (per-head q, mHC stream vectors), in fp32
    with one cast back."""
    return cast(F.rms_norm(fp32(x), (x.shape[-1],), None, eps), x.dtype)


def inverse_rms(x: torch.Tensor, eps: float) -> torch.Tensor:
    """1 / sqrt(mean(x^2) + eps) over the last dim, [..., 1], fp32: the factor by which
    `rms_normalize` scales each row. A linear map of normalised rows is the map of the raw rows
    times this factor; applied after a narrow projection it saves passes over a wide x (one
    fused norm reduction instead of square, mean and the scaling of every element)."""
    x = fp32(x)
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    return torch.rsqrt(norm * norm / x.shape[-1] + eps)


def rope_inv_freq(config: ModelConfig, compressed: bool) -> torch.Tensor:
    """Per-pair angular frequencies: plain theta for sliding layers; for CSA/HCA layers theta'
    with YaRN, or plain when the config says so (`compress_rope_type` "default").

    YaRN blends each pair's frequency between the original and the one divided by the factor,
    with no magnitude (mscale) correction: V4 applies none, unlike other YaRN models.
    """
    dim = config.qk_rope_head_dim
    theta = config.compress_rope_theta if compressed else config.rope_theta
    freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    yarn = compressed and config.compress_rope_type == "yarn"
    if not yarn or config.rope_factor == 1:  # factor 1: the blend leaves every frequency as is
        return freq.float()

    def correction(rotations: float) -> float:
        orig = config.original_max_position_embeddings
        return dim * math.log(orig / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low = max(math.floor(correction(config.beta_fast)), 0)
    high = min(math.ceil(correction(config.beta_slow)), dim - 1)
    span = (high - low) if high > low else 0.001
    ramp = ((torch.arange(dim // 2, dtype=torch.float64) - low) / span).clamp(0, 1)
    return (freq * (1 - ramp) + freq / config.rope_factor * ramp).float()


def rope_angles(
    positions: torch.Tensor, inv_freq: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [..., rope_dim/2] in fp32 for integer positions of any shape."""
    angles = positions.to(torch.float32).unsqueeze(-1) * inv_freq.to(positions.device)
    return angles.cos(), angles.sin()


def apply_rope(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, inverse: bool = False
) -> torch.Tensor:
    """Rotate the trailing 2*cos.shape[-1] dims of x as interleaved (even, odd) pairs, in fp32.

    cos/sin broadcast against x without its last dim (e.g. [B,S,1,r/2] for x [B,S,H,d]).
    `inverse` rotates by the negated angle (the attention output's values carry the keys' rotation,
    which the query position undoes). Each pair is one
    complex number times exp(i*angle): the same products and sums as the 2x2 rotation, in a
    handful of tensor operations (this runs several times per layer on every decode step).
    """
    rd = 2 * cos.shape[-1]
    pairs = _as_complex(fp32(x[..., -rd:]).unflatten(-1, (-1, 2)))
    turn = torch.complex(cos, -sin if inverse else sin)
    if x.dtype == torch.float32 and not (torch.is_grad_enabled() and x.requires_grad):
        # inference: a copy of x with the rotated pairs written over its rope dims (a plain
        # copy and a product, no concatenation of strided halves)
        out = x.clone(memory_format=torch.contiguous_format)
        target = out[..., -rd:].unflatten(-1, (-1, 2))
        if _complex_viewable(target):
            torch.mul(pairs, turn, out=torch.view_as_complex(target))
            return out
    rotated = cast(torch.view_as_real(pairs * turn).flatten(-2), x.dtype)
    return torch.cat((x[..., :-rd], rotated), dim=-1)


def _as_complex(pairs: torch.Tensor) -> torch.Tensor:
    """A complex view of [..., 2] pairs, copying only when the strides do not allow a view."""
    return torch.view_as_complex(pairs if _complex_viewable(pairs) else pairs.contiguous())


def _complex_viewable(pairs: torch.Tensor) -> bool:
    """Whether [..., 2] pairs (unit last stride) can be viewed as complex numbers in place."""
    return pairs.storage_offset() % 2 == 0 and all(s % 2 == 0 for s in pairs.stride()[:-1])


class RopeTable(nn.Module):
    """Holds a module's rope frequencies as an fp32 buffer that survives dtype casts.

    `model.to(torch.bfloat16)` would round the frequencies and put long-context angles off;
    after any cast the table is recomputed in fp32 on the module's device.
    """

    def __init__(self, config: ModelConfig, compressed: bool) -> None:
        super().__init__()
        self.config, self.compressed = config, compressed
        self.register_buffer("inv_freq", rope_inv_freq(config, compressed), persistent=False)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        if self.inv_freq.dtype != torch.float32 and not self.inv_freq.is_meta:
            fresh = rope_inv_freq(self.config, self.compressed)
            self.inv_freq = fresh.to(self.inv_freq.device)
        return self

    def angles(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return rope_angles(positions, self.inv_freq)
