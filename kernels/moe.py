"""Routed-expert MoE with clamped SwiGLU over dense, FP8 or FP4 expert weights.

Per (token t, chosen expert e, routing weight r):
`g = min(x W1ᵀ, limit)`, `u = clamp(x W3ᵀ, -limit, limit)`, `h = silu(g) * u * r` (fp32), `h` is
cast to x's dtype (as the official runtime does), `y = h W2ᵀ`; the token's expert outputs are
summed in fp32. The result is fp32 `[T, D]` so the caller can add the shared expert before the
final cast.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._triton import tl, triton
from .quant import (
    FP4_BLOCK,
    FP8_BLOCK,
    dequantize_fp8_blocks,
    dot_precision,
    e8m0_to_f32,
    fp4_code_to_f32,
    fp8_to_float,
    scale_bytes,
    supports_native_fp8,
    unpack_fp4,
)

_FMT_CODE = {"dense": 0, "fp8": 1, "fp4": 2}


@dataclass(frozen=True, eq=False)
class ExpertWeights:
    """Stacked routed experts: w1 (gate) and w3 (up) are logically `[E, I, D]`, w2 (down)
    `[E, D, I]`. Dense: float tensors, no scales. FP8: float8_e4m3fn with e8m0 scales
    `[E, ceil(out/128), ceil(in/128)]`. FP4: int8 `[E, out, in/2]` (two e2m1 codes per byte,
    low nibble = even column) with e8m0 scales `[E, out, in/32]`."""

    w1: torch.Tensor
    w2: torch.Tensor
    w3: torch.Tensor
    w1_scale: torch.Tensor | None = None
    w2_scale: torch.Tensor | None = None
    w3_scale: torch.Tensor | None = None

    def __post_init__(self) -> None:
        fmt = self.fmt
        if not self.w1.dim() == self.w2.dim() == self.w3.dim() == 3:
            raise ValueError("expert weights must be stacked 3-D tensors [E, out, in]")
        if {self.w2.dtype, self.w3.dtype} != {self.w1.dtype}:
            raise TypeError(
                f"w1/w2/w3 must share a dtype, got {self.w1.dtype}, {self.w2.dtype}, "
                f"{self.w3.dtype}"
            )
        scales = (self.w1_scale, self.w2_scale, self.w3_scale)
        have = [sc is not None for sc in scales]
        if (fmt == "dense" and any(have)) or (fmt != "dense" and not all(have)):
            raise ValueError(
                f"{fmt} expert weights need scales for w1, w2, w3 exactly when quantized"
            )
        e, i, d = self.num_experts, self.intermediate, self.hidden
        if self.w3.shape != self.w1.shape or self.logical_shape(self.w2) != (e, d, i):
            raise ValueError(
                f"expert weights disagree: w1 {tuple(self.w1.shape)}, w3 {tuple(self.w3.shape)}, "
                f"w2 {tuple(self.w2.shape)} (fmt {fmt}: want w1/w3 [E, I, D], w2 [E, D, I])"
            )
        for name, w, sc in zip(("w1", "w2", "w3"), (self.w1, self.w2, self.w3), scales):
            if sc is not None and tuple(sc.shape) != self._scale_shape(w):
                raise ValueError(
                    f"{name}_scale is {tuple(sc.shape)}, {fmt} {name} {tuple(w.shape)} needs "
                    f"{self._scale_shape(w)}"
                )

    def _scale_shape(self, w: torch.Tensor) -> tuple[int, int, int]:
        e, out_dim, in_dim = self.logical_shape(w)
        if self.fmt == "fp8":
            return (e, -(-out_dim // FP8_BLOCK), -(-in_dim // FP8_BLOCK))
        return (e, out_dim, -(-in_dim // FP4_BLOCK))

    @property
    def fmt(self) -> str:
        if self.w1.dtype == torch.float8_e4m3fn:
            return "fp8"
        if self.w1.dtype in (torch.int8, torch.uint8):
            return "fp4"
        if self.w1.is_floating_point():
            return "dense"
        raise TypeError(f"unsupported expert weight dtype {self.w1.dtype}")

    def logical_shape(self, w: torch.Tensor) -> tuple[int, int, int]:
        e, out_dim, in_dim = w.shape
        return (e, out_dim, in_dim * 2 if self.fmt == "fp4" else in_dim)

    @property
    def num_experts(self) -> int:
        return self.w1.shape[0]

    @property
    def intermediate(self) -> int:
        return self.logical_shape(self.w1)[1]

    @property
    def hidden(self) -> int:
        return self.logical_shape(self.w1)[2]

    def dequantized(self, expert: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Expert `expert`'s (w1, w2, w3) as fp32."""

        def one(w: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
            if self.fmt == "fp8":
                return dequantize_fp8_blocks(w[expert], scale[expert])
            if self.fmt == "fp4":
                return unpack_fp4(w[expert], scale[expert])
            return w[expert].float()

        return one(self.w1, self.w1_scale), one(self.w2, self.w2_scale), one(self.w3, self.w3_scale)


def _check(x, topk_ids, topk_weights, experts: ExpertWeights) -> None:
    if x.dim() != 2 or x.shape[1] != experts.hidden:
        raise ValueError(f"x must be [T, {experts.hidden}], got {tuple(x.shape)}")
    if topk_ids.shape != topk_weights.shape or topk_ids.shape[:1] != x.shape[:1]:
        raise ValueError(
            f"topk_ids {tuple(topk_ids.shape)} and topk_weights {tuple(topk_weights.shape)} "
            f"must both be [T={x.shape[0]}, k]"
        )


def _swiglu(g: torch.Tensor, u: torch.Tensor, limit: float | None) -> torch.Tensor:
    if limit is not None and limit > 0:
        g = g.clamp(max=limit)
        u = u.clamp(-limit, limit)
    return torch.nn.functional.silu(g) * u


def fused_moe_reference(
    x: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_weights: torch.Tensor,
    experts: ExpertWeights,
    swiglu_limit: float | None,
) -> torch.Tensor:
    """Loop over the chosen experts, dequantizing each one's weights to fp32."""
    _check(x, topk_ids, topk_weights, experts)
    k = topk_ids.shape[1]
    out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    flat_ids = topk_ids.flatten()
    flat_w = topk_weights.flatten().float()
    for e in torch.unique(flat_ids).tolist():
        pairs = (flat_ids == e).nonzero().squeeze(1)
        tokens = pairs // k
        w1, w2, w3 = experts.dequantized(e)
        xe = x[tokens].float()
        h = _swiglu(xe @ w1.T, xe @ w3.T, swiglu_limit) * flat_w[pairs, None]
        out.index_add_(0, tokens, h.to(x.dtype).float() @ w2.T)
    return out


def align_by_expert(
    topk_ids: torch.Tensor, num_experts: int, block_m: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Group the flat (token, slot) pairs by expert, each group padded to a multiple of block_m.

    Returns `pair_of_slot` `[max_blocks * block_m]` (flat pair index, or P = T*k for padding) and
    `block_expert` `[max_blocks]` (expert of each block, >= num_experts for unused blocks).
    `max_blocks` = ceil(P / block_m) + min(E, P) bounds the real block count, so nothing here
    waits on the GPU.
    """
    flat = topk_ids.flatten().long()
    p = flat.numel()
    order = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=num_experts)
    blocks = (counts + block_m - 1) // block_m
    block_end = torch.cumsum(blocks, 0)
    group_start = torch.cumsum(counts, 0) - counts
    sorted_ids = flat[order]
    rank = torch.arange(p, device=flat.device) - group_start[sorted_ids]
    dest = (block_end - blocks)[sorted_ids] * block_m + rank
    max_blocks = -(-p // block_m) + min(num_experts, p)
    pair_of_slot = torch.full((max_blocks * block_m,), p, dtype=torch.int32, device=flat.device)
    pair_of_slot[dest] = order.to(torch.int32)
    block_ids = torch.arange(max_blocks, device=flat.device)
    block_expert = torch.searchsorted(block_end, block_ids, right=True).to(torch.int32)
    return pair_of_slot, block_expert


def fused_moe_triton(
    x: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_weights: torch.Tensor,
    experts: ExpertWeights,
    swiglu_limit: float | None,
    native_fp8: bool | None = None,
) -> torch.Tensor:
    """Two grouped GEMMs over expert-sorted pairs: gate+up with the clamped SwiGLU and routing
    weight fused into the epilogue (h stored in x's dtype), then down into per-pair fp32 rows
    that are summed per token (deterministic, no atomics). Weight tiles are dequantized in
    registers straight from the checkpoint formats."""
    _check(x, topk_ids, topk_weights, experts)
    t, k = topk_ids.shape
    p = t * k
    d, i = experts.hidden, experts.intermediate
    if p == 0:
        return torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    if native_fp8 is None:
        native_fp8 = supports_native_fp8(x.device)
    block_m = 16 if p <= 16 * experts.num_experts else 64
    pair_of_slot, block_expert = align_by_expert(topk_ids, experts.num_experts, block_m)
    route_w = topk_weights.flatten().float().contiguous()
    fmt = experts.fmt
    if experts.w1.stride() != experts.w3.stride() or (
        fmt != "dense" and experts.w1_scale.stride() != experts.w3_scale.stride()
    ):
        raise ValueError("w1 and w3 (and their scales) must have the same memory layout")
    ws = [_kernel_view(w, fmt, native_fp8) for w in (experts.w1, experts.w2, experts.w3)]
    ss = [_scale_view(s, ws[0]) for s in (experts.w1_scale, experts.w2_scale, experts.w3_scale)]
    limit = float(swiglu_limit) if swiglu_limit is not None and swiglu_limit > 0 else 0.0
    common = dict(
        BLOCK_M=block_m, FMT=_FMT_CODE[fmt], NATIVE_FP8=native_fp8,
        DOT_PRECISION=dot_precision(x.dtype), num_warps=4,
    )  # fmt: skip
    h = torch.empty(p, i, dtype=x.dtype, device=x.device)
    block_n = 64
    grid = (block_expert.numel(), triton.cdiv(i, block_n))
    _moe_gate_up_kernel[grid](
        x, ws[0], ws[2], ss[0], ss[2], h, pair_of_slot, block_expert, route_w,
        p, k, experts.num_experts, i, d, limit,
        x.stride(0), x.stride(1), h.stride(0), h.stride(1),
        *ws[0].stride(), *ss[0].stride(),
        BLOCK_N=block_n, BLOCK_K=64, HAS_LIMIT=limit > 0, **common,
    )  # fmt: skip
    y = torch.empty(p, d, dtype=torch.float32, device=x.device)
    grid = (block_expert.numel(), triton.cdiv(d, block_n))
    _moe_down_kernel[grid](
        h, ws[1], ss[1], y, pair_of_slot, block_expert, p, experts.num_experts, d, i,
        h.stride(0), h.stride(1), y.stride(0), y.stride(1), *ws[1].stride(), *ss[1].stride(),
        BLOCK_N=block_n, BLOCK_K=64, **common,
    )  # fmt: skip
    return y.view(t, k, d).sum(1)


def _kernel_view(w: torch.Tensor, fmt: str, native_fp8: bool) -> torch.Tensor:
    if fmt == "fp4" or (fmt == "fp8" and not native_fp8):
        return w.view(torch.uint8)
    return w


def _scale_view(scale: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """Kernels always get a 3-D scale tensor (a dummy one for dense weights)."""
    if scale is None:
        return torch.zeros(1, 1, 1, dtype=torch.uint8, device=like.device)
    return scale_bytes(scale)


@triton.jit
def _expert_matmul_step(
    acc, a_ptr, a_rows, a_valid, stride_ak, w_ptr, s_ptr, n0, k0, N, K,
    stride_wn, stride_wk, stride_sn, stride_sk,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, FMT: tl.constexpr, NATIVE_FP8: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):  # fmt: skip
    """acc += A[rows, k0:k0+BLOCK_K] @ W[n0:n0+BLOCK_N, k0:k0+BLOCK_K]ᵀ for one expert's W in
    format FMT (0 dense, 1 FP8 with 128x128 block scales, 2 packed FP4 with per-32 scales).
    `a_rows` are row offsets into A (`a_ptr`), `w_ptr`/`s_ptr` already point at the expert."""
    rn = n0 + tl.arange(0, BLOCK_N)
    rn64 = rn.to(tl.int64)[None, :]
    if FMT == 2:
        # Byte j holds columns 2j (low nibble) and 2j+1 (high): multiply the even and odd columns
        # of A by the two nibble tiles, so the packed weight bytes load contiguously.
        rj = k0 // 2 + tl.arange(0, BLOCK_K // 2)
        mask_w = (rj < K // 2)[:, None] & (rn < N)[None, :]
        byte = tl.load(w_ptr + rn64 * stride_wn + rj[:, None] * stride_wk, mask=mask_w, other=0)
        byte = byte.to(tl.int32)
        sbyte = tl.load(
            s_ptr + rn64 * stride_sn + (rj // 16)[:, None] * stride_sk, mask=mask_w, other=127
        )
        scale = e8m0_to_f32(sbyte)
        a_even = tl.load(
            a_ptr + a_rows[:, None] + (2 * rj)[None, :] * stride_ak,
            mask=a_valid[:, None] & (2 * rj < K)[None, :],
            other=0.0,
        )
        a_odd = tl.load(
            a_ptr + a_rows[:, None] + (2 * rj + 1)[None, :] * stride_ak,
            mask=a_valid[:, None] & (2 * rj + 1 < K)[None, :],
            other=0.0,
        )
        w_even = (fp4_code_to_f32(byte & 0xF) * scale).to(a_even.dtype)
        w_odd = (fp4_code_to_f32(byte >> 4) * scale).to(a_odd.dtype)
        acc = tl.dot(a_even, w_even, acc, input_precision=DOT_PRECISION)
        acc = tl.dot(a_odd, w_odd, acc, input_precision=DOT_PRECISION)
    else:
        rk = k0 + tl.arange(0, BLOCK_K)
        mask_w = (rk < K)[:, None] & (rn < N)[None, :]
        a = tl.load(
            a_ptr + a_rows[:, None] + rk[None, :] * stride_ak,
            mask=a_valid[:, None] & (rk < K)[None, :],
            other=0.0,
        )
        raw = tl.load(w_ptr + rn64 * stride_wn + rk[:, None] * stride_wk, mask=mask_w)
        if FMT == 1:
            # BLOCK_N and BLOCK_K divide 128: one scale for the whole tile.
            scale = e8m0_to_f32(tl.load(s_ptr + (n0 // 128) * stride_sn + (k0 // 128) * stride_sk))
            w = tl.where(mask_w, fp8_to_float(raw, NATIVE_FP8), 0.0).to(a.dtype)
            acc += tl.dot(a, w, input_precision=DOT_PRECISION) * scale
        else:
            w = tl.where(mask_w, raw, 0.0).to(a.dtype)
            acc = tl.dot(a, w, acc, input_precision=DOT_PRECISION)
    return acc


@triton.jit
def _moe_gate_up_kernel(
    x_ptr, w1_ptr, w3_ptr, s1_ptr, s3_ptr, h_ptr, slot_ptr, block_expert_ptr, route_w_ptr,
    P, TOPK, E, N, K, limit,
    stride_xt, stride_xk, stride_hp, stride_hn,
    stride_we, stride_wn, stride_wk, stride_se, stride_sn, stride_sk,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, HAS_LIMIT: tl.constexpr,
    FMT: tl.constexpr, NATIVE_FP8: tl.constexpr, DOT_PRECISION: tl.constexpr,
):  # fmt: skip
    expert = tl.load(block_expert_ptr + tl.program_id(0))
    if expert < E:
        pair = tl.load(slot_ptr + tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M))
        valid = pair < P
        x_rows = (pair // TOPK).to(tl.int64) * stride_xt
        n0 = tl.program_id(1) * BLOCK_N
        e64 = expert.to(tl.int64)
        acc_g = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        acc_u = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            acc_g = _expert_matmul_step(
                acc_g, x_ptr, x_rows, valid, stride_xk, w1_ptr + e64 * stride_we,
                s1_ptr + e64 * stride_se, n0, k0, N, K, stride_wn, stride_wk, stride_sn, stride_sk,
                BLOCK_N, BLOCK_K, FMT, NATIVE_FP8, DOT_PRECISION,
            )  # fmt: skip
            acc_u = _expert_matmul_step(
                acc_u, x_ptr, x_rows, valid, stride_xk, w3_ptr + e64 * stride_we,
                s3_ptr + e64 * stride_se, n0, k0, N, K, stride_wn, stride_wk, stride_sn, stride_sk,
                BLOCK_N, BLOCK_K, FMT, NATIVE_FP8, DOT_PRECISION,
            )  # fmt: skip
        if HAS_LIMIT:
            acc_g = tl.minimum(acc_g, limit)
            acc_u = tl.minimum(tl.maximum(acc_u, -limit), limit)
        route_w = tl.load(route_w_ptr + pair, mask=valid, other=0.0)
        h = acc_g / (1.0 + tl.exp(-acc_g)) * acc_u * route_w[:, None]
        rn = n0 + tl.arange(0, BLOCK_N)
        tl.store(
            h_ptr + pair.to(tl.int64)[:, None] * stride_hp + rn[None, :] * stride_hn,
            h.to(h_ptr.dtype.element_ty),
            mask=valid[:, None] & (rn < N)[None, :],
        )


@triton.jit
def _moe_down_kernel(
    h_ptr, w_ptr, s_ptr, y_ptr, slot_ptr, block_expert_ptr, P, E, N, K,
    stride_hp, stride_hk, stride_yp, stride_yn,
    stride_we, stride_wn, stride_wk, stride_se, stride_sn, stride_sk,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    FMT: tl.constexpr, NATIVE_FP8: tl.constexpr, DOT_PRECISION: tl.constexpr,
):  # fmt: skip
    expert = tl.load(block_expert_ptr + tl.program_id(0))
    if expert < E:
        pair = tl.load(slot_ptr + tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M))
        valid = pair < P
        pair64 = pair.to(tl.int64)
        n0 = tl.program_id(1) * BLOCK_N
        e64 = expert.to(tl.int64)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            acc = _expert_matmul_step(
                acc, h_ptr, pair64 * stride_hp, valid, stride_hk, w_ptr + e64 * stride_we,
                s_ptr + e64 * stride_se, n0, k0, N, K, stride_wn, stride_wk, stride_sn, stride_sk,
                BLOCK_N, BLOCK_K, FMT, NATIVE_FP8, DOT_PRECISION,
            )  # fmt: skip
        rn = n0 + tl.arange(0, BLOCK_N)
        tl.store(
            y_ptr + pair64[:, None] * stride_yp + rn[None, :] * stride_yn,
            acc,
            mask=valid[:, None] & (rn < N)[None, :],
        )
