"""Sparse attention over gathered key=value vectors with per-head sinks.

Every query token n attends, with all H heads, to the pool rows `kv[indices[n, i]]` (one shared
K=V head; -1 = skip). Per head h: `l_i = scale * q_h . kv_i`,
`p_i = exp(l_i) / (sum_j exp(l_j) + exp(sink_h))`, `out_h = sum_i p_i kv_i`. The sink only enters
the denominator; a query with no valid index outputs zeros. Decode (N = one token per sequence)
and prefill (N = many tokens) are the same call.
"""

from __future__ import annotations

import torch

from ._triton import tl, triton
from .quant import dot_precision, num_sms

_LOG2E = 1.4426950408889634


def _check(q: torch.Tensor, kv: torch.Tensor, indices: torch.Tensor, sink: torch.Tensor) -> None:
    if q.dim() != 3 or kv.dim() != 2 or indices.dim() != 2:
        raise ValueError(
            f"expected q [N, H, D], kv [M, D], indices [N, K]; got {tuple(q.shape)}, "
            f"{tuple(kv.shape)}, {tuple(indices.shape)}"
        )
    n, h, d = q.shape
    if kv.shape[1] != d or indices.shape[0] != n or tuple(sink.shape) != (h,):
        raise ValueError(
            f"shape mismatch: q {tuple(q.shape)}, kv {tuple(kv.shape)}, "
            f"indices {tuple(indices.shape)}, sink {tuple(sink.shape)}"
        )
    if indices.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"indices must be int32 or int64, got {indices.dtype}")


def sparse_attention_reference(
    q: torch.Tensor,
    kv: torch.Tensor,
    indices: torch.Tensor,
    sink: torch.Tensor,
    scale: float,
    block_bytes: int = 1 << 28,
) -> torch.Tensor:
    """Plain torch, fp32 softmax; queries run in blocks so the gathered keys stay under
    `block_bytes`."""
    _check(q, kv, indices, sink)
    n, h, d = q.shape
    k = indices.shape[1]
    out = torch.zeros_like(q)
    if k == 0 or n == 0:
        return out
    sink = sink.float()
    step = max(1, block_bytes // (k * (d + h) * 4))
    for s in range(0, n, step):
        idx = indices[s : s + step].long()
        valid = idx >= 0
        keys = kv[idx.clamp(min=0)].float()  # [b, K, D]
        logits = torch.bmm(q[s : s + step].float(), keys.transpose(1, 2)) * scale  # [b, H, K]
        logits = logits.masked_fill(~valid[:, None, :], float("-inf"))
        m = torch.maximum(logits.amax(-1), sink)  # [b, H]
        m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        p = torch.exp(logits - m[..., None])
        denom = p.sum(-1) + torch.exp(sink - m)
        o = torch.bmm(p, keys)
        o = o / torch.where(denom > 0, denom, torch.ones_like(denom))[..., None]
        out[s : s + step] = o.to(q.dtype)
    return out


def sparse_attention_triton(
    q: torch.Tensor,
    kv: torch.Tensor,
    indices: torch.Tensor,
    sink: torch.Tensor,
    scale: float,
    num_splits: int | None = None,
) -> torch.Tensor:
    """One program per (query token, block of heads, split of K): it walks its share of the
    token's indices in tiles, gathers the kv rows once for all its heads, and keeps an online
    softmax. Unsplit, the running max starts at the sink, so the sink lands in the denominator
    only. When there are too few (token, head block) programs to fill the GPU (decode at small
    batch), K is split flash-decoding style: the programs write unnormalized partials and a
    torch epilogue merges them with the sink. `num_splits` overrides the choice."""
    _check(q, kv, indices, sink)
    if kv.dtype != q.dtype:
        raise TypeError(f"q and kv must share a dtype, got {q.dtype} and {kv.dtype}")
    n, h, d = q.shape
    k = indices.shape[1]
    out = torch.empty_like(q)
    if n == 0:
        return out
    sink = sink.float().contiguous()
    block_h = min(32, max(16, triton.next_power_of_2(h)))
    block_d = max(16, triton.next_power_of_2(d))
    block_k = 32 if block_d >= 256 else 64
    head_blocks = triton.cdiv(h, block_h)
    k_tiles = max(1, triton.cdiv(k, block_k))
    if num_splits is None:
        num_splits = triton.cdiv(2 * num_sms(q.device), n * head_blocks)
    tiles_per_split = triton.cdiv(k_tiles, max(1, min(num_splits, k_tiles)))
    splits = max(1, triton.cdiv(k_tiles, tiles_per_split))
    if splits > 1:
        part_acc = torch.empty(n, splits, h, d, dtype=torch.float32, device=q.device)
        part_ml = torch.empty(2, n, splits, h, dtype=torch.float32, device=q.device)
    else:
        part_acc = part_ml = out  # unused
    _sparse_attention_kernel[(n, head_blocks, splits)](
        q, kv, indices, sink, out, part_acc, part_ml, h, d, k, float(scale) * _LOG2E,
        tiles_per_split * block_k, part_ml.stride(0) if splits > 1 else 0,
        q.stride(0), q.stride(1), q.stride(2), kv.stride(0), kv.stride(1),
        indices.stride(0), indices.stride(1), out.stride(0), out.stride(1), out.stride(2),
        BLOCK_H=block_h, BLOCK_D=block_d, BLOCK_K=block_k, SPLIT=splits > 1,
        DOT_PRECISION=dot_precision(q.dtype), num_warps=8 if block_d >= 256 else 4,
    )  # fmt: skip
    if splits > 1:
        out.copy_(_merge_splits(part_acc, part_ml[0], part_ml[1], sink * _LOG2E))
    return out


def _merge_splits(acc, m, lse, sink_log2):
    """Partials per split (acc unnormalized, running max m and sum l in base 2) -> output."""
    m_all = torch.maximum(m.amax(1), sink_log2)  # [N, H]
    w = torch.exp2(m - m_all[:, None])  # [N, S, H]
    denom = (w * lse).sum(1) + torch.exp2(sink_log2 - m_all)
    merged = (w[..., None] * acc).sum(1)
    return merged / torch.where(denom > 0, denom, torch.ones_like(denom))[..., None]


@triton.jit
def _sparse_attention_kernel(
    q_ptr, kv_ptr, idx_ptr, sink_ptr, out_ptr, part_acc_ptr, part_ml_ptr, H, D, K,
    qk_scale_log2, SPLIT_LEN, stride_ml,
    stride_qn, stride_qh, stride_qd, stride_kvm, stride_kvd, stride_in, stride_ik,
    stride_on, stride_oh, stride_od,
    BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):  # fmt: skip
    # Softmax in base 2: logits and the sink are pre-multiplied by log2(e).
    n = tl.program_id(0).to(tl.int64)
    rh = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    split = tl.program_id(2)
    rd = tl.arange(0, BLOCK_D)
    mask_h = rh < H
    mask_d = rd < D
    q = tl.load(
        q_ptr + n * stride_qn + rh[:, None] * stride_qh + rd[None, :] * stride_qd,
        mask=mask_h[:, None] & mask_d[None, :],
        other=0.0,
    )
    if SPLIT:  # the merge adds the sink
        m_i = tl.full((BLOCK_H,), -1.0e30, dtype=tl.float32)
        l_i = tl.zeros((BLOCK_H,), dtype=tl.float32)
    else:
        sink = tl.load(sink_ptr + rh, mask=mask_h, other=float("-inf")) * 1.4426950408889634
        m_i = tl.maximum(sink, -1.0e30)  # finite start: no inf - inf when every index is -1
        l_i = tl.exp2(sink - m_i)
    acc = tl.zeros((BLOCK_H, BLOCK_D), dtype=tl.float32)
    for k0 in range(split * SPLIT_LEN, tl.minimum(K, (split + 1) * SPLIT_LEN), BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        idx = tl.load(idx_ptr + n * stride_in + rk * stride_ik, mask=rk < K, other=-1)
        valid = idx >= 0
        kv = tl.load(
            kv_ptr + idx.to(tl.int64)[:, None] * stride_kvm + rd[None, :] * stride_kvd,
            mask=valid[:, None] & mask_d[None, :],
            other=0.0,
        )
        s = tl.dot(q, tl.trans(kv), input_precision=DOT_PRECISION) * qk_scale_log2
        s = tl.where(valid[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(kv.dtype), kv, input_precision=DOT_PRECISION)
        m_i = m_new
    if SPLIT:
        row = (n * tl.num_programs(2) + split) * H + rh  # [N, S, H] position
        tl.store(part_ml_ptr + row, m_i, mask=mask_h)
        tl.store(part_ml_ptr + stride_ml + row, l_i, mask=mask_h)
        tl.store(
            part_acc_ptr + row.to(tl.int64)[:, None] * D + rd[None, :],
            acc,
            mask=mask_h[:, None] & mask_d[None, :],
        )
    else:
        out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
        tl.store(
            out_ptr + n * stride_on + rh[:, None] * stride_oh + rd[None, :] * stride_od,
            out.to(out_ptr.dtype.element_ty),
            mask=mask_h[:, None] & mask_d[None, :],
        )
