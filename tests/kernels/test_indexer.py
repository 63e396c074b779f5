"""Indexer scoring + top-k: reference vs naive loops, Triton vs reference (ties allowed)."""

from __future__ import annotations

import pytest
import torch

from flashbeam.kernels.indexer import indexer_topk_reference, indexer_topk_triton, select_topk


def naive_score(q, weights, keys, n, s):
    return sum(
        float(weights[n, h]) * max(0.0, float(q[n, h].double() @ keys[s].double()))
        for h in range(q.shape[1])
    )


def check_selection(idx, vals, q, weights, keys, start, end, k, rtol=1e-4, atol=1e-4):
    """Top-k up to ties: right count, distinct visible indices, the returned score is each key's
    true score, sorted, and no unselected visible key scores higher than the last selected."""
    q, weights, keys = q.float().cpu(), weights.float().cpu(), keys.float().cpu()
    idx, vals = idx.cpu(), vals.cpu()
    assert idx.shape == vals.shape == (q.shape[0], k) and idx.dtype == torch.int32
    for n in range(q.shape[0]):
        lo, hi = int(start[n]), int(end[n])
        count = min(k, max(0, hi - lo))
        chosen = idx[n, :count].tolist()
        assert len(set(chosen)) == count and all(lo <= s < hi for s in chosen)
        assert idx[n, count:].eq(-1).all() and vals[n, count:].eq(float("-inf")).all()
        true = {s: naive_score(q, weights, keys, n, s) for s in range(lo, hi)}
        for r, s in enumerate(chosen):
            assert vals[n, r].item() == pytest.approx(true[s], rel=rtol, abs=atol)
        assert (vals[n, :count].diff() <= atol).all()
        if count:
            rest = [true[s] for s in true if s not in chosen]
            assert all(v <= vals[n, count - 1].item() + atol for v in rest)


def make_inputs(n, hi, di, m, device, dtype=torch.float32):
    q = torch.randn(n, hi, di, device=device).to(dtype)
    weights = torch.randn(n, hi, device=device)
    keys = torch.randn(m, di, device=device).to(dtype)
    return q, weights, keys


def test_reference_matches_naive_loops():
    q, weights, keys = make_inputs(5, 3, 8, 30, "cpu")
    start = torch.tensor([0, 0, 4, 10, 20])
    end = torch.tensor([0, 1, 9, 30, 20])  # empty, one key, 5 keys, 20 keys, empty
    idx, vals = indexer_topk_reference(q, weights, keys, start, end, 6)
    check_selection(idx, vals, q, weights, keys, start, end, 6)
    assert idx[1].tolist() == [0, -1, -1, -1, -1, -1]


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_triton_matches_reference_ragged(device, dtype, index_dtype):
    # Decode-like: each query sees its own sequence's keys in a shared pool, of ragged length:
    # none, one, fewer than k, exactly k, and more than one 64-key tile.
    q, weights, keys = make_inputs(6, 5, 48, 400, device, dtype)
    start = torch.tensor([0, 3, 10, 40, 100, 250], dtype=index_dtype, device=device)
    end = torch.tensor([0, 4, 17, 56, 250, 400], dtype=index_dtype, device=device)
    k = 16
    want = indexer_topk_reference(q, weights, keys, start, end, k)
    tol = {torch.float32: 1e-4}.get(dtype, 2e-2)
    for tiles in (1, 2):  # 2: one program scores two consecutive key tiles
        got = indexer_topk_triton(q, weights, keys, start, end, k, tiles_per_program=tiles)
        check_selection(*got, q, weights, keys, start, end, k, rtol=tol, atol=tol)
        torch.testing.assert_close(got[1], want[1], rtol=tol, atol=tol)


def test_triton_prefill_causal_ranges(device):
    # Prefill: token t sees entries [0, (t + 1) // 4); early tokens see none.
    n = 40
    q, weights, keys = make_inputs(n, 4, 32, n // 4, device)
    pos = torch.arange(n, device=device)
    start, end = torch.zeros_like(pos), (pos + 1) // 4
    got = indexer_topk_triton(q, weights, keys, start, end, 4)
    check_selection(*got, q, weights, keys, start, end, 4)
    assert got[0][:3].eq(-1).all()


def test_ties_on_relu_zeros_are_still_valid(device):
    # Every logit negative -> every score is 0: any k distinct visible keys are a right answer.
    q = -torch.ones(2, 2, 16, device=device)
    keys = torch.ones(20, 16, device=device)
    weights = torch.ones(2, 2, device=device)
    start, end = torch.tensor([0, 5], device=device), torch.tensor([20, 8], device=device)
    idx, vals = indexer_topk_triton(q, weights, keys, start, end, 4)
    check_selection(idx, vals, q, weights, keys, start, end, 4)
    assert vals[0].eq(0).all() and idx[1, 3].item() == -1


@pytest.mark.parametrize("k", [1, 4, 9, 40])
def test_selection_is_the_stable_sort_prefix_under_heavy_ties(k):
    """Ties go to the earlier key whatever the row width: the picks equal the first k of a stable
    descending sort, also when the k-th score ties keys left out, and with -inf padding."""
    gen = torch.Generator().manual_seed(3)
    scores = torch.randint(0, 4, (200, 30), generator=gen).float()  # four distinct values
    count = torch.randint(0, 31, (200,), generator=gen)
    scores[torch.arange(30)[None, :] >= count[:, None]] = float("-inf")
    start = torch.randint(0, 100, (200,), generator=gen)
    idx, vals = select_topk(scores, start, count, k)
    kk = min(k, 30)
    want_vals, want_cols = torch.sort(scores, dim=1, descending=True, stable=True)
    visible = torch.arange(kk)[None, :] < count[:, None]
    assert torch.equal(
        idx[:, :kk].long(), torch.where(visible, want_cols[:, :kk] + start[:, None], -1)
    )
    assert torch.equal(vals[:, :kk], torch.where(visible, want_vals[:, :kk], float("-inf")))
    assert idx.shape == (200, k) and idx[:, kk:].eq(-1).all()


def test_no_visible_keys_at_all(device):
    q, weights, keys = make_inputs(3, 2, 16, 4, device)
    zero = torch.zeros(3, dtype=torch.int64, device=device)
    for impl in (indexer_topk_triton, indexer_topk_reference):
        idx, vals = impl(q, weights, keys, zero, zero, 5)
        assert idx.eq(-1).all() and vals.eq(float("-inf")).all() and idx.shape == (3, 5)


def test_rejects_mismatched_shapes():
    q, weights, keys = make_inputs(2, 3, 8, 5, "cpu")
    rng = torch.zeros(2, dtype=torch.int64)
    with pytest.raises(ValueError):
        indexer_topk_reference(q, weights[:, :2], keys, rng, rng, 1)
    with pytest.raises(ValueError):
        indexer_topk_reference(q, weights, keys, rng[:1], rng, 1)
