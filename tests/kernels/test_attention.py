"""Sparse attention with sinks: reference vs naive loops, Triton vs reference."""

from __future__ import annotations

import math

import pytest
import torch

from flashbeam.kernels.attention import sparse_attention_reference, sparse_attention_triton

TOL = {
    torch.float32: dict(rtol=1e-4, atol=1e-5),
    torch.float16: dict(rtol=5e-3, atol=2e-3),
    torch.bfloat16: dict(rtol=2e-2, atol=1e-2),
}


def naive_attention(q, kv, indices, sink, scale):
    n, h, d = q.shape
    out = torch.zeros(n, h, d)
    for t in range(n):
        rows = [i for i in indices[t].tolist() if i >= 0]
        for head in range(h):
            logits = [scale * float(q[t, head].double() @ kv[r].double()) for r in rows]
            denom = sum(math.exp(v) for v in logits) + math.exp(float(sink[head]))
            for r, v in zip(rows, logits):
                out[t, head] += math.exp(v) / denom * kv[r].float()
    return out


def make_inputs(n, h, d, m, k, device, dtype=torch.float32, p_skip=0.3):
    q = torch.randn(n, h, d, device=device).to(dtype)
    kv = torch.randn(m, d, device=device).to(dtype)
    indices = torch.randint(0, m, (n, k), dtype=torch.int32, device=device)
    indices[torch.rand(n, k, device=device) < p_skip] = -1
    sink = torch.randn(h, device=device)
    return q, kv, indices, sink


def test_reference_matches_naive_loops():
    q, kv, indices, sink = make_inputs(4, 3, 8, 10, 6, "cpu")
    indices[1] = -1  # no valid key
    indices[2, 1:] = -1  # exactly one
    indices[3, :2] = torch.tensor([5, 5])  # duplicates count twice
    got = sparse_attention_reference(q, kv, indices, sink, 0.3)
    torch.testing.assert_close(got, naive_attention(q, kv, indices, sink, 0.3))
    assert torch.equal(got[1], torch.zeros(3, 8))


def test_sink_only_in_denominator():
    # One key: p = e^l / (e^l + e^sink); with sink = l the output is exactly kv / 2.
    q = torch.ones(1, 1, 4)
    kv = torch.full((1, 4), 0.5)
    logit = 0.5 * 4 * 0.25
    out = sparse_attention_reference(
        q, kv, torch.zeros(1, 1, dtype=torch.int32), torch.tensor([logit]), 0.25
    )
    torch.testing.assert_close(out, torch.full((1, 1, 4), 0.25))


def test_reference_blocks_queries_without_changing_results():
    q, kv, indices, sink = make_inputs(9, 2, 16, 30, 12, "cpu")
    whole = sparse_attention_reference(q, kv, indices, sink, 0.25)
    blocked = sparse_attention_reference(q, kv, indices, sink, 0.25, block_bytes=1)
    torch.testing.assert_close(blocked, whole, rtol=0, atol=0)


@pytest.mark.parametrize(
    "n,h,d,m,k",
    [
        (3, 4, 64, 50, 40),  # decode: a few sequences, K not a multiple of the tile
        (11, 3, 32, 20, 130),  # prefill-like: many tokens, H not a power of two
        (2, 20, 512, 70, 33),  # real head dim, heads spanning two head blocks
    ],
)
def test_triton_matches_reference(device, dtype, n, h, d, m, k):
    q, kv, indices, sink = make_inputs(n, h, d, m, k, device, dtype)
    indices[0] = -1
    indices[-1, 1:] = -1
    scale = d**-0.5
    want = sparse_attention_reference(q, kv, indices, sink, scale)
    for splits in (1, 3):  # 3: K split flash-decoding style, partials merged with the sink
        got = sparse_attention_triton(q, kv, indices, sink, scale, num_splits=splits)
        assert got.dtype == dtype
        torch.testing.assert_close(got.float(), want.float(), **TOL[dtype])
        assert torch.equal(got[0].float().cpu(), torch.zeros(h, d))


def test_triton_window_not_full_and_no_keys(device):
    # Early decode: only the first positions of the window exist (rest -1), and K = 0.
    q, kv, _, sink = make_inputs(2, 4, 32, 8, 1, device)
    indices = torch.full((2, 128), -1, dtype=torch.int32, device=device)
    indices[0, :3] = torch.tensor([0, 1, 2])
    indices[1, 0] = 7
    want = sparse_attention_reference(q, kv, indices, sink, 0.2)
    for splits in (1, 2):  # split 2 of query 0 and 1 sees no valid key at all
        got = sparse_attention_triton(q, kv, indices, sink, 0.2, num_splits=splits)
        torch.testing.assert_close(got, want)
    empty = torch.empty(2, 0, dtype=torch.int32, device=device)
    assert torch.equal(sparse_attention_triton(q, kv, empty, sink, 0.2), torch.zeros_like(q))
    assert torch.equal(sparse_attention_reference(q, kv, empty, sink, 0.2), torch.zeros_like(q))


def test_triton_without_sink_and_int64_indices(device):
    q, kv, indices, _ = make_inputs(3, 2, 16, 12, 9, device)
    indices[1] = -1
    sink = torch.full((2,), float("-inf"), device=device)  # no sink: plain softmax
    want = sparse_attention_reference(q, kv, indices, sink, 0.3)
    for splits in (1, 2):
        got = sparse_attention_triton(q, kv, indices.long(), sink, 0.3, num_splits=splits)
        assert not got.isnan().any()
        torch.testing.assert_close(got, want)
    keys = kv[indices[0][indices[0] >= 0].long()].float()
    plain = torch.softmax(0.3 * q[0].float() @ keys.T, -1) @ keys
    torch.testing.assert_close(got[0], plain)


def test_rejects_mismatched_shapes():
    q, kv, indices, sink = make_inputs(2, 3, 8, 5, 4, "cpu")
    with pytest.raises(ValueError):
        sparse_attention_reference(q, kv[:, :4], indices, sink, 1.0)
    with pytest.raises(ValueError):
        sparse_attention_reference(q, kv, indices, sink[:2], 1.0)
