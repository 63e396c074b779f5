"""Batched decode (DecodeBatch) computes what per-sequence forward_step computes."""

import os

import pytest
import torch

from flashbeam import kernels
from flashbeam.kernels._triton import HAS_TRITON
from flashbeam.model import tiny_config
from flashbeam.model.checkpoint.random_init import random_model
from flashbeam.model.network.decode import DecodeBatch


def _prefilled(model, ids, lengths):
    """Each row's state after prefilling its first lengths[i] tokens on its own."""
    return [
        model.forward_step(ids[i : i + 1, :n], [model.empty_state()])[1][0]
        for i, n in enumerate(lengths)
    ]


@pytest.mark.parametrize("preset", ["tiny", "tiny-csa", "tiny-hca", "tiny-rates"])
def test_batched_decode_matches_full_forward_through_regrouping(preset):
    config = tiny_config(preset)
    model = random_model(config, seed=0)
    lengths = [1, 3, 37, 130, 200]  # ragged: window not full, mid compression window, > 128
    gen = torch.Generator().manual_seed(2)
    ids = torch.randint(16, config.vocab_size, (len(lengths), 230), generator=gen)
    worst = 0.0
    with torch.inference_mode():
        full = model(ids)
        states = _prefilled(model, ids, lengths)
        rows = list(range(len(lengths)))
        batch = DecodeBatch.build(model, states, extra_tokens=4)  # forces capacity regrowth
        for t in range(25):
            step = torch.stack([ids[i, lengths[i] + t : lengths[i] + t + 1] for i in rows])
            logits = model.decode_step(step, batch)
            for row, i in enumerate(rows):
                worst = max(worst, (logits[row, 0] - full[i, lengths[i] + t]).abs().max().item())
            if t == 10:  # a row leaves and joins again at another place
                rest = batch.select(torch.tensor([0, 2, 3, 4]))
                moved = batch.select(torch.tensor([1]))
                head, tail = rest.select(torch.tensor([0])), rest.select(torch.tensor([1, 2, 3]))
                batch = DecodeBatch.concat([moved, head, tail])
                rows = [1, 0, 2, 3, 4]
    # Decode sums in other orders than the whole-sequence path (attention over the ring and the
    # entries as two parts, all experts in one matmul): fp32 rounding, logits of magnitude ~5.
    assert worst <= 2e-5
    assert batch.positions.tolist() == [lengths[i] + 25 for i in rows]


@pytest.mark.skipif(
    not HAS_TRITON or not (torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"),
    reason="needs triton on a GPU or in its interpreter",
)
@pytest.mark.parametrize("preset", ["tiny", "tiny-hca", "tiny-rates"])
def test_the_kernel_and_batched_torch_decode_paths_agree(preset):
    """Decode attends through the Triton kernels' key pool on GPU and directly on the batched
    tensors otherwise; both must compute the same logits (here the kernels run interpreted)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = random_model(tiny_config(preset), seed=1).to(device)
    lengths = [2, 37, 140]
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(16, model.config.vocab_size, (3, 150), generator=gen).to(device)
    with torch.inference_mode():
        states = _prefilled(model, ids, lengths)
        runs = []
        for backend in ("auto", "triton"):
            batch = DecodeBatch.build(model, states, extra_tokens=8)
            with kernels.use_backend(backend):
                runs.append(
                    [
                        model.decode_step(
                            torch.stack([ids[i, n + t : n + t + 1] for i, n in enumerate(lengths)]),
                            batch,
                        )
                        for t in range(6)
                    ]
                )
    for torch_step, kernel_step in zip(*runs):
        torch.testing.assert_close(torch_step, kernel_step, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(
    not HAS_TRITON or not (torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"),
    reason="needs triton on a GPU or in its interpreter",
)
def test_the_kernel_and_banded_torch_prefill_paths_agree():
    """Prefill chunks attend through per-query index lists into one key pool with the Triton
    kernels, and in blocks of queries over a band of window keys on the torch path; both must
    give the same logits and states, for fresh and continued sequences and last-only chunks
    (`tiny` has sliding, CSA and HCA layers; 160 tokens complete an HCA entry)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = random_model(tiny_config("tiny"), seed=1).to(device)
    gen = torch.Generator().manual_seed(4)
    ids = torch.randint(16, model.config.vocab_size, (2, 160), generator=gen).to(device)
    runs = []
    with torch.inference_mode():
        for backend in ("auto", "triton"):
            with kernels.use_backend(backend):
                states = [model.empty_state() for _ in range(2)]
                logits, pos = [], 0
                for size, last_only in ((3, False), (9, True), (1, False), (140, False), (7, True)):
                    out, states = model.forward_step(ids[:, pos : pos + size], states, last_only)
                    logits.append(out)
                    pos += size
                after, _ = model.forward_step(ids[:, :1], states)  # continue from the states
            runs.append(logits + [after])
    for banded, kernel in zip(*runs):
        torch.testing.assert_close(banded, kernel, rtol=1e-4, atol=1e-4)


def test_decode_while_every_row_is_shorter_than_the_window_and_past_it():
    """Until a row passes the window, only the ring's first slots hold keys, and decode attends
    over those alone; the rows here start well inside a 64-token window and grow past it."""
    config = tiny_config("tiny", sliding_window=64)
    model = random_model(config, seed=0)
    lengths = [1, 9, 40]
    ids = torch.randint(16, config.vocab_size, (3, 80), generator=torch.Generator().manual_seed(5))
    worst = 0.0
    with torch.inference_mode():
        full = model(ids)
        states = _prefilled(model, ids, lengths)
        batch = DecodeBatch.build(model, states)
        for t in range(36):  # the last row passes 64 at t = 24
            step = torch.stack([ids[i, n + t : n + t + 1] for i, n in enumerate(lengths)])
            logits = model.decode_step(step, batch)
            for i, n in enumerate(lengths):
                worst = max(worst, (logits[i, 0] - full[i, n + t]).abs().max().item())
    assert worst <= 2e-5
