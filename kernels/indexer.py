"""Lightning-indexer scoring fused with top-k selection.

Query n sees the pool keys `[key_start[n], key_end[n])`; its score for key s is
`sum_h weights[n, h] * relu(q[n, h] . keys[s])`. It keeps the top `min(k, visible)` keys as
absolute pool indices (sorted by descending score, -1 padded to width k) with their scores (-inf
padded). Ties are broken in any order. With `reduce_scores`, each block of scores is handed to it
before selection (the sum over the heads of all tensor-parallel ranks).

Design (Triton path): one kernel scores query x key-tile blocks into an fp32 buffer `[N, W]`
(W = widest visible range; column j = key `key_start[n] + j`, -inf past the range), then
`torch.topk` selects. Trade-off against a running top-k inside the kernel: the buffer costs
4 bytes per (query, key) against the 2*Di = 256 bytes of key each score reads, i.e. < 2% extra
traffic, and torch's radix-select top-k is fast for k = 512; an in-kernel top-512 would need a
sort network over k + tile elements per tile, far more code for that 2%. The buffer is bounded
by running the queries in chunks. Cost: reading `W` (one host sync per call), unless the caller
bounds it (`max_count`, e.g. the capacity of a decode batch), which CUDA graphs need.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._triton import tl, triton
from .quant import dot_precision

_SCORE_BUDGET_BYTES = 1 << 28
# Applied in place to every block of scores [n, W] before its top-k: a tensor-parallel engine
# sums the scores of the heads each rank holds here, so every rank selects the same keys.
ReduceScores = Callable[[torch.Tensor], object]


def _check(
    q: torch.Tensor,
    weights: torch.Tensor,
    keys: torch.Tensor,
    key_start: torch.Tensor,
    key_end: torch.Tensor,
    k: int,
) -> None:
    if q.dim() != 3 or weights.dim() != 2 or keys.dim() != 2:
        raise ValueError(
            f"expected q [N, Hi, Di], weights [N, Hi], keys [M, Di]; got {tuple(q.shape)}, "
            f"{tuple(weights.shape)}, {tuple(keys.shape)}"
        )
    n = q.shape[0]
    if weights.shape != q.shape[:2] or keys.shape[1] != q.shape[2]:
        raise ValueError(
            f"shape mismatch: q {tuple(q.shape)}, weights {tuple(weights.shape)}, "
            f"keys {tuple(keys.shape)}"
        )
    if tuple(key_start.shape) != (n,) or tuple(key_end.shape) != (n,):
        raise ValueError(
            f"key_start/key_end must be [N={n}], got {tuple(key_start.shape)}, "
            f"{tuple(key_end.shape)}"
        )
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")


def select_topk(
    scores: torch.Tensor,
    key_start: torch.Tensor,
    count: torch.Tensor,
    k: int,
    sync_free: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of score rows `[N, W]` whose first `count[n]` columns are visible (the rest -inf):
    absolute indices `key_start + column` (-1 padded) and scores (-inf padded), width k.
    Equal scores rank the lower index first. `sync_free` picks the same columns without
    reading anything back from the device (for CUDA graphs)."""
    n, w = scores.shape
    kk = min(k, w)
    best = _best_columns_sync_free if sync_free else _best_columns
    vals, cols = best(scores, kk)
    valid = torch.arange(kk, device=scores.device)[None, :] < count[:, None]
    idx = torch.where(valid, cols + key_start.long()[:, None], -1)
    vals = torch.where(valid, vals, float("-inf"))
    if kk < k:
        idx = torch.cat([idx, idx.new_full((n, k - kk), -1)], dim=1)
        vals = torch.cat([vals, vals.new_full((n, k - kk), float("-inf"))], dim=1)
    return idx.to(torch.int32), vals


def _best_columns(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first k of each row in a stable descending sort: exact ties (ReLU zeros are common)
    go to the earlier column, so the choice never depends on the row width, i.e. on what else
    shares the batch. `topk` finds them (a radix select, several times cheaper than sorting the
    row), then the k picks are ordered by (score desc, column asc); the rows where the k-th score
    ties a column that topk left out take the full stable sort."""
    if k == 0:
        return scores[:, :0], scores.new_zeros(scores.shape[0], 0, dtype=torch.long)
    vals, cols = scores.topk(k, dim=1)
    cols, order = cols.sort(dim=1)
    vals, order = vals.gather(1, order).sort(dim=1, descending=True, stable=True)
    cols = cols.gather(1, order)
    kth = vals[:, -1:]
    # -inf at the cut: the row has fewer than k visible keys, and the -inf picks are dropped.
    cut_tie = ((scores == kth).sum(1) > (vals == kth).sum(1)) & (kth[:, 0] > float("-inf"))
    rows = cut_tie.nonzero()[:, 0]
    if rows.numel():
        v, c = torch.sort(scores[rows], dim=1, descending=True, stable=True)
        vals[rows], cols[rows] = v[:, :k], c[:, :k]
    return vals, cols


def _best_columns_sync_free(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`_best_columns` as one top-k over an int64 key per column: the score's bits mapped to an
    order-preserving int32 in the high half, the reversed column in the low half, so a tie goes
    to the earlier column with no second pass (whose rows are only known on the host)."""
    if k == 0:
        return scores[:, :0], scores.new_zeros(scores.shape[0], 0, dtype=torch.long)
    bits = (scores.float() + 0.0).view(torch.int32)  # + 0.0: -0.0 and 0.0 tie, as they compare
    ordered = torch.where(bits >= 0, bits, bits ^ 0x7FFFFFFF).long()
    cols = torch.arange(scores.shape[1], device=scores.device)
    _, best = (ordered * (1 << 32) + ((1 << 32) - 1 - cols)).topk(k, dim=1)
    return scores.gather(1, best), best


def indexer_topk_reference(
    q: torch.Tensor,
    weights: torch.Tensor,
    keys: torch.Tensor,
    key_start: torch.Tensor,
    key_end: torch.Tensor,
    k: int,
    reduce_scores: ReduceScores | None = None,
    max_count: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain torch, fp32 scores; queries run in blocks so the gathered keys stay bounded."""
    _check(q, weights, keys, key_start, key_end, k)
    n = q.shape[0]
    count = (key_end.long() - key_start.long()).clamp(min=0)
    w = _widest(count, max_count)
    scores = torch.full((n, w), float("-inf"), device=q.device)
    starts, runs = torch.unique_consecutive(key_start.long(), return_counts=True)
    if n and len(runs) * 8 <= n:  # long runs of queries over one key range (prefill): GEMMs
        _score_runs(q, weights, keys, starts.tolist(), runs.tolist(), count, scores)
    else:
        _score_gathered(q, weights, keys, key_start, count, scores)
    if reduce_scores is not None:
        reduce_scores(scores)
    return select_topk(scores, key_start, count, k, sync_free=max_count is not None)


def _widest(count: torch.Tensor, max_count: int | None) -> int:
    """The score buffer's width: the caller's bound on the counts, else the widest count."""
    if max_count is not None:
        return max_count
    return int(count.max()) if count.numel() else 0


def _score_runs(q, weights, keys, starts, runs, count, scores) -> None:
    """Queries sharing a key range (one sequence's prefill chunk) score it with one matmul."""
    row = 0
    for start, run in zip(starts, runs):
        width = int(count[row : row + run].max())
        if width:
            block = keys[start : start + width].float()
            step = max(1, _SCORE_BUDGET_BYTES // max(1, width * q.shape[1] * 4))
            for s in range(row, row + run, step):
                e = min(row + run, s + step)
                qs = q[s:e].float()
                logits = (qs.flatten(0, 1) @ block.T).view(*qs.shape[:2], width).relu_()
                score = _weigh_heads(logits, weights[s:e])
                visible = torch.arange(width, device=q.device)[None, :] < count[s:e, None]
                scores[s:e, :width] = score.masked_fill(~visible, float("-inf"))
        row += run


def _weigh_heads(logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_h weights[n, h] * logits[n, h, w] -> [N, W], as one batched [1, H] x [H, W] product
    per query (an einsum picks a far slower batching for these shapes on CPU)."""
    return torch.bmm(weights.float().unsqueeze(1), logits).squeeze(1)


def score_padded(
    q: torch.Tensor, weights: torch.Tensor, keys: torch.Tensor, count: torch.Tensor
) -> torch.Tensor:
    """Scores [N, W] of queries q [N, Hi, Di] (head weights [N, Hi]) against their own padded
    keys [N, W, Di], of which the first count[n] are visible (-inf beyond)."""
    logits = torch.bmm(q.float(), keys.float().transpose(1, 2)).relu_()
    score = _weigh_heads(logits, weights)
    visible = torch.arange(keys.shape[1], device=q.device)[None, :] < count[:, None]
    return score.masked_fill(~visible, float("-inf"))


def _score_gathered(q, weights, keys, key_start, count, scores) -> None:
    """Queries with their own key ranges (batched decode): gather each query's keys."""
    n, hi, di = q.shape
    w = scores.shape[1]
    cols = torch.arange(w, device=q.device)
    step = max(1, _SCORE_BUDGET_BYTES // max(1, w * (di + hi) * 4))
    for s in range(0, n, step):
        e = min(n, s + step)
        visible = cols[None, :] < count[s:e, None]
        rows = (key_start[s:e].long()[:, None] + cols[None, :]).where(visible, 0)
        scores[s:e] = score_padded(q[s:e], weights[s:e], keys[rows], count[s:e])


def indexer_topk_triton(
    q: torch.Tensor,
    weights: torch.Tensor,
    keys: torch.Tensor,
    key_start: torch.Tensor,
    key_end: torch.Tensor,
    k: int,
    reduce_scores: ReduceScores | None = None,
    max_count: int | None = None,
    tiles_per_program: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton scoring (one program per query and run of `tiles_per_program` 64-key tiles,
    heads as the dot's M dimension) then `torch.topk`; see the module docstring for why the
    top-k is not fused."""
    _check(q, weights, keys, key_start, key_end, k)
    if keys.dtype != q.dtype:
        raise TypeError(f"q and keys must share a dtype, got {q.dtype} and {keys.dtype}")
    n, hi, di = q.shape
    count = (key_end.long() - key_start.long()).clamp(min=0)
    w = _widest(count, max_count)
    sync_free = max_count is not None
    if w == 0:
        return select_topk(torch.empty(n, 0, device=q.device), key_start, count, k, sync_free)
    start = key_start.to(torch.int64).contiguous()
    count32 = count.to(torch.int32)
    weights = weights.float()
    block_h = max(16, triton.next_power_of_2(hi))
    block_d = max(16, triton.next_power_of_2(di))
    block_s = 64 if block_h <= 64 else 32
    tiles = triton.cdiv(w, block_s)
    if tiles_per_program is None:  # longer runs reuse the query; keep enough programs
        tiles_per_program = max(1, min(8, n * tiles // 2048))
    chunk = max(1, _SCORE_BUDGET_BYTES // (w * 4))
    idx_parts, val_parts = [], []
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        scores = torch.empty(e - s, w, dtype=torch.float32, device=q.device)
        grid = (e - s, triton.cdiv(tiles, tiles_per_program))
        _indexer_score_kernel[grid](
            q[s:e], weights[s:e], keys, start[s:e], count32[s:e], scores, hi, di, w,
            q.stride(0), q.stride(1), q.stride(2), weights.stride(0), weights.stride(1),
            keys.stride(0), keys.stride(1), scores.stride(0),
            BLOCK_H=block_h, BLOCK_D=block_d, BLOCK_S=block_s,
            TILES=tiles_per_program, DOT_PRECISION=dot_precision(q.dtype), num_warps=4,
        )  # fmt: skip
        if reduce_scores is not None:
            reduce_scores(scores)
        idx, val = select_topk(scores, start[s:e], count[s:e], k, sync_free)
        idx_parts.append(idx)
        val_parts.append(val)
    return torch.cat(idx_parts), torch.cat(val_parts)


@triton.jit
def _indexer_score_kernel(
    q_ptr, w_ptr, keys_ptr, start_ptr, count_ptr, out_ptr, HI, DI, W,
    stride_qn, stride_qh, stride_qd, stride_wn, stride_wh, stride_km, stride_kd, stride_on,
    BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr, TILES: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):  # fmt: skip
    # One query's heads x TILES consecutive key tiles: the query is loaded once per program.
    n = tl.program_id(0).to(tl.int64)
    count = tl.load(count_ptr + n)
    start = tl.load(start_ptr + n)
    rh = tl.arange(0, BLOCK_H)
    rd = tl.arange(0, BLOCK_D)
    mask_h = rh < HI
    mask_d = rd < DI
    q = tl.load(
        q_ptr + n * stride_qn + rh[:, None] * stride_qh + rd[None, :] * stride_qd,
        mask=mask_h[:, None] & mask_d[None, :],
        other=0.0,
    )
    head_w = tl.load(w_ptr + n * stride_wn + rh * stride_wh, mask=mask_h, other=0.0)
    for t in range(TILES):
        s0 = (tl.program_id(1) * TILES + t) * BLOCK_S
        rs = s0 + tl.arange(0, BLOCK_S)
        visible = rs < count
        if s0 < count:
            keys_t = tl.load(
                keys_ptr + (start + rs)[None, :] * stride_km + rd[:, None] * stride_kd,
                mask=visible[None, :] & mask_d[:, None],
                other=0.0,
            )  # [BLOCK_D, BLOCK_S]
            logits = tl.dot(q, keys_t, input_precision=DOT_PRECISION)  # [BLOCK_H, BLOCK_S]
            score = tl.sum(tl.maximum(logits, 0.0) * head_w[:, None], 0)
            score = tl.where(visible, score, float("-inf"))
        else:
            score = tl.full((BLOCK_S,), float("-inf"), dtype=tl.float32)
        tl.store(out_ptr + n * stride_on + rs, score, mask=rs < W)
