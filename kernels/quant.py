"""Checkpoint weight formats (FP8 block-scaled, packed FP4) and the FP8 block-scaled linear.

Formats:
* FP8: `weight` float8_e4m3fn `[out, in]`, `scale` float8_e8m0fnu `[ceil(out/128), ceil(in/128)]`,
  `W[i, j] = weight[i, j] * scale[i // 128, j // 128]`.
* FP4: `weight` int8 `[out, in/2]`, two e2m1 codes per byte along the input dim, low nibble = even
  column; code -> value `[0, .5, 1, 1.5, 2, 3, 4, 6]`, bit 3 = sign; `scale` e8m0 `[out, in/32]`.
* e8m0 byte b is the multiplier `2^(b - 127)`.

Leading dimensions (e.g. stacked experts `[E, out, in]`) are allowed everywhere. The `@triton.jit`
helpers at the bottom decode these formats inside kernels (this module's and `moe.py`'s).
"""

from __future__ import annotations

import functools

import torch

from ._triton import tl, triton

FP8_BLOCK = 128
FP4_BLOCK = 32
FP4_MAGNITUDES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
FP4_VALUES = FP4_MAGNITUDES + tuple(-v for v in FP4_MAGNITUDES)  # code 8..15 = sign bit set


E4M3_MAX = 448.0  # the largest e4m3 magnitude
E2M1_MAX = 6.0  # the largest e2m1 magnitude
# Midpoints between neighbouring e2m1 magnitudes, for round-to-nearest.
_FP4_MIDPOINTS = tuple((a + b) / 2 for a, b in zip(FP4_MAGNITUDES[:-1], FP4_MAGNITUDES[1:]))


@functools.lru_cache(maxsize=64)
def device_table(values: tuple[float, ...], device: torch.device) -> torch.Tensor:
    """`values` as an fp32 tensor on `device`, made once per device: a copy from the host on
    every call would be a synchronising transfer, which a CUDA graph cannot record."""
    return torch.tensor(values, dtype=torch.float32, device=device)


def pow2_exponent(amax: torch.Tensor, limit: float) -> torch.Tensor:
    """Smallest k with amax / 2^k <= limit (0 where amax is 0), exact via frexp."""
    ratio = amax.to(torch.float32) / limit
    mantissa, exp = torch.frexp(ratio)  # ratio = mantissa * 2^exp, mantissa in [0.5, 1)
    k = torch.where(mantissa == 0.5, exp - 1, exp)  # exact powers of two need no rounding up
    return torch.where(amax > 0, k, torch.zeros_like(k)).clamp(-127, 127)


def nearest_e2m1(v: torch.Tensor) -> torch.Tensor:
    """Index into FP4_MAGNITUDES of the magnitude nearest |v| (v within ±6); ties go to the even
    code."""
    mids = device_table(_FP4_MIDPOINTS, v.device)
    a = v.abs()
    idx = torch.bucketize(a, mids)  # a == mids[i] lands on i (the lower neighbour)
    tie = (idx < len(mids)) & (a == mids[idx.clamp(max=len(mids) - 1)])
    return torch.where(tie & (idx % 2 == 1), idx + 1, idx)


def e8m0_to_float(scale: torch.Tensor) -> torch.Tensor:
    """e8m0 scales (float8_e8m0fnu, or their raw uint8 bytes) as fp32 multipliers 2^(b-127)
    (byte 255 is NaN); scales already given as float multipliers pass through as fp32."""
    if scale.dtype == torch.uint8:
        scale = scale.view(torch.float8_e8m0fnu)
    if scale.dtype == torch.float8_e8m0fnu or scale.dtype in (
        torch.float32,
        torch.bfloat16,
        torch.float16,
    ):
        return scale.float()
    raise TypeError(f"e8m0 scale must be float8_e8m0fnu, uint8 or a float, got {scale.dtype}")


def scale_bytes(scale: torch.Tensor) -> torch.Tensor:
    """The raw e8m0 bytes of a scale tensor, as kernels read them."""
    if scale.dtype == torch.uint8:
        return scale
    if scale.dtype != torch.float8_e8m0fnu:
        raise TypeError(f"Triton kernels read e8m0 scales (float8_e8m0fnu), got {scale.dtype}")
    return scale.view(torch.uint8)


def dequantize_fp8_blocks(
    weight: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """FP8 e4m3 `[..., out, in]` with e8m0 128x128 block scales -> dense `dtype`."""
    _check_fp8_scale(weight, scale)
    out_dim, in_dim = weight.shape[-2:]
    s = e8m0_to_float(scale)
    s = s.repeat_interleave(FP8_BLOCK, dim=-2)[..., :out_dim, :]
    s = s.repeat_interleave(FP8_BLOCK, dim=-1)[..., :in_dim]
    return (weight.float() * s).to(dtype)


def _check_fp8_scale(weight: torch.Tensor, scale: torch.Tensor) -> None:
    out_dim, in_dim = weight.shape[-2:]
    expected = (*weight.shape[:-2], -(-out_dim // FP8_BLOCK), -(-in_dim // FP8_BLOCK))
    if tuple(scale.shape) != expected:
        raise ValueError(
            f"FP8 weight {tuple(weight.shape)} needs block scales {expected}, "
            f"got {tuple(scale.shape)}"
        )


def unpack_fp4(
    packed: torch.Tensor, scale: torch.Tensor | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Packed e2m1 `[..., out, in/2]` (int8/uint8) -> values `[..., out, in]`, times the
    per-32-input e8m0 `scale` `[..., out, in/32]` when given."""
    if packed.dtype not in (torch.int8, torch.uint8):
        raise TypeError(f"packed FP4 weight must be int8 or uint8, got {packed.dtype}")
    table = device_table(FP4_VALUES, packed.device)
    b = packed.view(torch.uint8).long()
    codes = torch.stack((b & 0xF, b >> 4), dim=-1).flatten(-2)  # low nibble = even column
    values = table[codes]
    if scale is not None:
        in_dim = values.shape[-1]
        if tuple(scale.shape) != (*values.shape[:-1], -(-in_dim // FP4_BLOCK)):
            raise ValueError(
                f"FP4 weight of logical shape {tuple(values.shape)} needs scales "
                f"[..., {in_dim // FP4_BLOCK}], got {tuple(scale.shape)}"
            )
        values = values * e8m0_to_float(scale).repeat_interleave(FP4_BLOCK, dim=-1)[..., :in_dim]
    return values.to(dtype)


# ----------------------------------------------------------------------------- FP8 linear


def fp8_linear_reference(
    x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """x `[..., in]` times the dequantized FP8 weight `[out, in]` transposed, fp32 accumulate."""
    w = dequantize_fp8_blocks(weight, scale)
    return (x.float() @ w.T).to(x.dtype)


def fp8_linear_triton(
    x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, native_fp8: bool | None = None
) -> torch.Tensor:
    """Tiled GEMM reading FP8 weight tiles and their block scales; each tile is converted to
    x's dtype in registers (exact: e4m3 fits bf16/fp16/fp32) and the power-of-two block scale is
    applied to the tile's fp32 partial product. `native_fp8` picks the hardware e4m3 conversion
    (sm_89+); otherwise the bytes are decoded with integer ops (any GPU, and the interpreter)."""
    _check_fp8_scale(weight, scale)
    out_dim, in_dim = weight.shape
    if x.shape[-1] != in_dim:
        raise ValueError(f"x has {x.shape[-1]} input features, weight {tuple(weight.shape)}")
    if native_fp8 is None:
        native_fp8 = supports_native_fp8(x.device)
    x2 = x.reshape(-1, in_dim)
    m = x2.shape[0]
    y = torch.empty(m, out_dim, dtype=x.dtype, device=x.device)
    if m == 0:
        return y.reshape(*x.shape[:-1], out_dim)
    s = scale_bytes(scale)
    w = weight if native_fp8 else weight.view(torch.uint8)
    block_m = min(64, max(16, triton.next_power_of_2(m)))
    block_n = 64 if m > 64 else 32
    if triton.cdiv(out_dim, block_n) * triton.cdiv(m, block_m) < 2 * num_sms(x.device):
        block_n = 16  # small decode GEMMs: more, thinner programs to keep every SM reading
    block_k = 128
    grid = (triton.cdiv(m, block_m), triton.cdiv(out_dim, block_n))
    _fp8_linear_kernel[grid](
        x2, w, s, y, m, out_dim, in_dim,
        x2.stride(0), x2.stride(1), w.stride(0), w.stride(1), s.stride(0), s.stride(1),
        y.stride(0), y.stride(1),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, NATIVE_FP8=native_fp8,
        DOT_PRECISION=dot_precision(x.dtype), num_warps=4,
    )  # fmt: skip
    return y.reshape(*x.shape[:-1], out_dim)


def supports_native_fp8(device: torch.device) -> bool:
    """Triton converts e4m3 in hardware from sm_89 (Ada, Hopper) on."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)


@functools.cache
def num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (1 elsewhere), for sizing grids."""
    if device.type != "cuda":
        return 1
    return torch.cuda.get_device_properties(device).multi_processor_count


def dot_precision(dtype: torch.dtype) -> str:
    """fp32 operands are multiplied exactly (no TF32) so fp32 inputs match the references."""
    return "ieee" if dtype == torch.float32 else "tf32"


@triton.jit
def _fp8_linear_kernel(
    x_ptr, w_ptr, s_ptr, y_ptr, M, N, K,
    stride_xm, stride_xk, stride_wn, stride_wk, stride_sn, stride_sk, stride_ym, stride_yn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    NATIVE_FP8: tl.constexpr, DOT_PRECISION: tl.constexpr,
):  # fmt: skip
    # BLOCK_N and BLOCK_K divide 128, so one e8m0 scale covers a whole weight tile.
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)  # M * N may pass 2^31
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    mask_m = rm < M
    mask_n = rn < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + rk
        mask_k = kk < K
        x = tl.load(
            x_ptr + rm[:, None] * stride_xm + kk[None, :] * stride_xk,
            mask=mask_m[:, None] & mask_k[None, :],
            other=0.0,
        )
        mask_w = mask_k[:, None] & mask_n[None, :]
        w_raw = tl.load(
            w_ptr + kk[:, None] * stride_wk + rn[None, :].to(tl.int64) * stride_wn, mask=mask_w
        )
        w = tl.where(mask_w, fp8_to_float(w_raw, NATIVE_FP8), 0.0).to(x.dtype)
        s = e8m0_to_f32(
            tl.load(s_ptr + (pid_n * BLOCK_N // 128) * stride_sn + (k0 // 128) * stride_sk)
        )
        acc += tl.dot(x, w, input_precision=DOT_PRECISION) * s
    tl.store(
        y_ptr + rm[:, None] * stride_ym + rn[None, :] * stride_yn,
        acc.to(y_ptr.dtype.element_ty),
        mask=mask_m[:, None] & mask_n[None, :],
    )


# ----------------------------------------------------------------------------- in-kernel decoding


@triton.jit
def e8m0_to_f32(byte):
    """e8m0 byte -> 2^(b-127): b goes into the fp32 exponent field (b = 0 gives 0, not 2^-127)."""
    return (byte.to(tl.int32) << 23).to(tl.float32, bitcast=True)


@triton.jit
def fp8_to_float(raw, NATIVE_FP8: tl.constexpr):
    """e4m3fn -> fp32. Native: `raw` is float8e4nv. Otherwise `raw` is the uint8 bytes: the 7
    magnitude bits shifted into an fp16's exponent/mantissa give value * 2^-8 exactly (subnormals
    included), the sign bit moves to bit 15."""
    if NATIVE_FP8:
        out = raw.to(tl.float32)
    else:
        b = raw.to(tl.int32)
        half = (((b & 0x80) << 8) | ((b & 0x7F) << 7)).to(tl.int16).to(tl.float16, bitcast=True)
        out = half.to(tl.float32) * 256.0
    return out


@triton.jit
def fp4_code_to_f32(code):
    """e2m1 code (int32, 0..15) -> fp32: the 3 magnitude bits shifted into an fp16's exponent and
    mantissa give value * 2^-14 exactly (code 1 = 0.5 lands as the fp16 subnormal), bit 3 = sign."""
    bits = ((code & 8) << 12) | ((code & 7) << 9)
    return bits.to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32) * 16384.0
