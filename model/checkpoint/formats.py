"""Quantized weights as the official V4 checkpoints store them: FP8 e4m3 blocks, FP4 e2m1 experts.

The encodings themselves (block sizes, value tables, e8m0 scales) are defined once, in
`kernels.quant`, which decodes them on GPUs; this module quantizes and dequantizes whole
weights with the shape checks a checkpoint needs.

- e8m0 scale byte b means the multiplier 2^(b-127) (255 is NaN). Scales multiply, never divide.
- FP8: `weight` float8_e4m3fn [out, in], `scale` e8m0 [ceil(out/128), ceil(in/128)]; edge blocks
  may be ragged. W[i, j] = e4m3(weight[i, j]) * scale[i // 128, j // 128].
- FP4: `weight` int8 [out, in/2] holding two e2m1 codes per byte along the input dim, the LOW
  nibble being the even column; code bits 0-2 index [0, .5, 1, 1.5, 2, 3, 4, 6], bit 3 is the
  sign. `scale` e8m0 [out, in/32]: W[i, j] = e2m1(code[i, j]) * scale[i, j // 32]. (A ragged last
  group, ceil(in/32) scale columns, is accepted as an extension for tiny test configs.)

Quantizers pick per block the smallest power-of-two scale that brings the block's largest
magnitude within the format's range (±448 for e4m3, ±6 for e2m1), as the official converter does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from flashbeam.kernels import quant as kernel_quant
from flashbeam.kernels.quant import (
    E2M1_MAX,
    E4M3_MAX,
    FP4_BLOCK,
    FP8_BLOCK,
    nearest_e2m1,
    pow2_exponent,
)

FP8_BLOCKS = (FP8_BLOCK, FP8_BLOCK)  # rows x columns of one scale block


class QuantFormatError(ValueError):
    """A quantized tensor whose shape, dtype or scale grid does not fit its format."""


# ---- e8m0 scales ---------------------------------------------------------------------------
def e8m0_to_float(scale: torch.Tensor) -> torch.Tensor:
    """e8m0 scales (or already-float multipliers) -> float32 multipliers 2^(b-127)."""
    try:
        return kernel_quant.e8m0_to_float(scale)
    except TypeError as e:
        raise QuantFormatError(str(e)) from None


def e8m0_from_exponent(exponent: torch.Tensor) -> torch.Tensor:
    """Integer exponents k (clamped to [-127, 127]) -> e8m0 scale tensor holding 2^k."""
    b = (exponent.to(torch.int32).clamp(-127, 127) + 127).to(torch.uint8)
    return b.view(torch.float8_e8m0fnu)


# ---- block helpers -------------------------------------------------------------------------
def _expand_blocks(scale: torch.Tensor, shape: tuple[int, int], block: tuple[int, int]):
    """Per-block multipliers [ceil(o/bo), ceil(i/bi)] -> per-element [o, i] (ragged edges cut)."""
    out, inp = shape
    rows = scale.repeat_interleave(block[0], dim=0)[:out]
    return rows.repeat_interleave(block[1], dim=1)[:, :inp]


def _block_amax(w: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    out, inp = w.shape
    bo, bi = block
    po, pi = -out % bo, -inp % bi
    a = torch.nn.functional.pad(w.abs().to(torch.float32), (0, pi, 0, po))
    return a.reshape((out + po) // bo, bo, (inp + pi) // bi, bi).amax(dim=(1, 3))


def fp8_scale_shape(shape: tuple[int, int], block: tuple[int, int] = FP8_BLOCKS) -> tuple[int, int]:
    return (-(-shape[0] // block[0]), -(-shape[1] // block[1]))


def fp4_packed_shape(shape: tuple[int, int]) -> tuple[int, int]:
    return (shape[0], shape[1] // 2)


def fp4_scale_shape(shape: tuple[int, int]) -> tuple[int, int]:
    return (shape[0], -(-shape[1] // FP4_BLOCK))


def _check_2d(t: torch.Tensor, what: str) -> None:
    if t.dim() != 2:
        raise QuantFormatError(f"{what} must be 2-D [out, in], got shape {list(t.shape)}")


# ---- FP8 e4m3 with 128x128 e8m0 block scales -----------------------------------------------
def dequantize_fp8(
    weight: torch.Tensor,
    scale: torch.Tensor,
    block: tuple[int, int] = FP8_BLOCKS,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """float8_e4m3fn [out, in] and block scales [ceil(out/bo), ceil(in/bi)] -> dense `dtype`."""
    _check_2d(weight, "FP8 weight")
    if weight.dtype != torch.float8_e4m3fn:
        raise QuantFormatError(f"FP8 weight has dtype {weight.dtype}; expected float8_e4m3fn")
    want = fp8_scale_shape(tuple(weight.shape), block)
    if tuple(scale.shape) != want:
        raise QuantFormatError(
            f"FP8 scale has shape {list(scale.shape)}; weight {list(weight.shape)} with "
            f"{block[0]}x{block[1]} blocks needs {list(want)}"
        )
    if block == FP8_BLOCKS:  # the checkpoint format: one implementation, shared with kernels
        return kernel_quant.dequantize_fp8_blocks(weight, scale, dtype)
    mult = _expand_blocks(e8m0_to_float(scale), tuple(weight.shape), block)
    return (weight.to(torch.float32) * mult).to(dtype)


def quantize_fp8(
    w: torch.Tensor, block: tuple[int, int] = FP8_BLOCKS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense [out, in] -> (float8_e4m3fn weight, e8m0 scale [ceil(out/bo), ceil(in/bi)])."""
    _check_2d(w, "weight to quantize")
    k = pow2_exponent(_block_amax(w, block), E4M3_MAX)
    mult = _expand_blocks(torch.exp2(k.to(torch.float32)), tuple(w.shape), block)
    q = (w.to(torch.float32) / mult).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return q, e8m0_from_exponent(k)


# ---- FP4 e2m1, two codes per byte, per-32 e8m0 scales ----------------------------------------
def unpack_fp4_codes(packed: torch.Tensor) -> torch.Tensor:
    """int8 [out, in/2] -> uint8 codes [out, in]; low nibble = even column."""
    _check_2d(packed, "FP4 packed weight")
    if packed.dtype not in (torch.int8, torch.uint8):
        raise QuantFormatError(f"FP4 packed weight has dtype {packed.dtype}; expected int8")
    u8 = packed.contiguous().view(torch.uint8)
    return torch.stack([u8 & 0x0F, u8 >> 4], dim=-1).reshape(u8.shape[0], 2 * u8.shape[1])


def pack_fp4_codes(codes: torch.Tensor) -> torch.Tensor:
    """uint8 codes [out, in] (in even) -> int8 [out, in/2]; low nibble = even column."""
    if codes.shape[-1] % 2:
        raise QuantFormatError(f"FP4 packing needs an even input dim, got {codes.shape[-1]}")
    c = codes.to(torch.uint8)
    return (c[:, 0::2] | (c[:, 1::2] << 4)).view(torch.int8)


def unpack_fp4(
    packed: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """int8 [out, in/2] codes and e8m0 scales [out, in/32] -> dense `dtype` [out, in]."""
    codes = unpack_fp4_codes(packed)
    want = fp4_scale_shape(tuple(codes.shape))
    if tuple(scale.shape) != want:
        raise QuantFormatError(
            f"FP4 scale has shape {list(scale.shape)}; packed weight {list(packed.shape)} "
            f"({codes.shape[1]} inputs, groups of {FP4_BLOCK}) needs {list(want)}"
        )
    return kernel_quant.unpack_fp4(packed, scale, dtype)


def quantize_fp4(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense [out, in] (in even) -> (int8 packed [out, in/2], e8m0 scale [out, ceil(in/32)]).

    Each value is rounded to the nearest e2m1 magnitude, ties to the even code (IEEE style).
    """
    _check_2d(w, "weight to quantize")
    if w.shape[1] % 2:
        raise QuantFormatError(f"FP4 needs an even input dim, got weight {list(w.shape)}")
    k = pow2_exponent(_block_amax(w, (1, FP4_BLOCK)), E2M1_MAX)
    mult = _expand_blocks(torch.exp2(k.to(torch.float32)), tuple(w.shape), (1, FP4_BLOCK))
    v = (w.to(torch.float32) / mult).clamp(-E2M1_MAX, E2M1_MAX)
    idx = nearest_e2m1(v)
    codes = idx.to(torch.uint8) | torch.where((v < 0) & (idx > 0), 8, 0).to(torch.uint8)
    return pack_fp4_codes(codes), e8m0_from_exponent(k)


# ---- a stored quantized weight, kept packed until someone asks for dense -----------------------
@dataclass
class QuantizedWeight:
    """A weight as stored: `fmt` "fp8" (e4m3 + block scales) or "fp4" (packed e2m1 + scales)."""

    fmt: Literal["fp8", "fp4"]
    weight: torch.Tensor
    scale: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        """The dense [out, in] shape this weight stands for."""
        out, cols = self.weight.shape
        return (out, 2 * cols) if self.fmt == "fp4" else (out, cols)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        if self.fmt == "fp8":
            return dequantize_fp8(self.weight, self.scale, FP8_BLOCKS, dtype)
        return unpack_fp4(self.weight, self.scale, dtype)

    @classmethod
    def quantize(cls, w: torch.Tensor, fmt: Literal["fp8", "fp4"]) -> QuantizedWeight:
        q, s = quantize_fp8(w) if fmt == "fp8" else quantize_fp4(w)
        return cls(fmt, q, s)
