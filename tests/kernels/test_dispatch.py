"""The dispatcher: Triton on CUDA, references elsewhere, and the forced backends."""

from __future__ import annotations

import pytest
import torch

from flashbeam import kernels
from flashbeam.kernels import attention


def attention_args(device="cpu"):
    q, kv = torch.randn(2, 3, 16, device=device), torch.randn(5, 16, device=device)
    indices = torch.tensor([[0, 1, -1], [4, -1, -1]], dtype=torch.int32, device=device)
    return q, kv, indices, torch.zeros(3, device=device), 0.25


def test_auto_uses_the_reference_on_cpu(monkeypatch):
    def boom(*args):
        raise AssertionError("Triton path taken for CPU tensors")

    monkeypatch.setattr(kernels, "sparse_attention_triton", boom)
    args = attention_args()
    with kernels.use_backend("auto"):
        out = kernels.sparse_attention(*args)
    torch.testing.assert_close(out, attention.sparse_attention_reference(*args))


def test_forced_backends(device, monkeypatch):
    calls = []
    monkeypatch.setattr(kernels, "sparse_attention_triton", lambda *a: calls.append("triton"))
    monkeypatch.setattr(kernels, "sparse_attention_reference", lambda *a: calls.append("ref"))
    with kernels.use_backend("triton"):
        kernels.sparse_attention(*attention_args())
    with kernels.use_backend("reference"):
        kernels.sparse_attention(*attention_args(device))
    assert calls == ["triton", "ref"]


def test_every_dispatcher_runs_forced_triton(device):
    """Forcing Triton runs the kernels (interpreted on CPU) through the public functions."""
    with kernels.use_backend("triton"):
        out = kernels.sparse_attention(*attention_args(device))
        assert out.shape == (2, 3, 16)
        keys = torch.randn(6, 16, device=device)
        idx, _ = kernels.indexer_topk(
            torch.randn(1, 2, 16, device=device),
            torch.ones(1, 2, device=device),
            keys,
            torch.tensor([1], device=device),
            torch.tensor([4], device=device),
            5,
        )
        assert sorted(idx[0, :3].tolist()) == [1, 2, 3] and idx[0, 3:].eq(-1).all()
        logits = torch.zeros(1, 33, device=device)
        kernels.apply_token_bitmask_(
            logits, torch.tensor([[1, 0]], dtype=torch.int32, device=device)
        )
        assert logits[0, 0] == 0 and logits[0, 1:].eq(float("-inf")).all()


def test_backend_names_are_checked():
    with pytest.raises(ValueError, match="backend"):
        kernels.set_backend("cuda")
    assert kernels.get_backend() in kernels.BACKENDS
