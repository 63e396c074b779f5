"""The runner driven by plain data: snapshots restore exactly, failures change nothing, and two
runners given the same calls agree (what a helper rank replaying rank 0's calls relies on)."""

import pytest
import torch

from flashbeam.model import load_model
from flashbeam.model.engine.runner import ModelRunner

# The same tokens cut into other chunks: equal up to the order of floating-point sums.
CHUNKING = dict(rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def model(checkpoint):
    return load_model(checkpoint)


def prompt(n, seed=0):
    return torch.randint(16, 500, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def test_a_snapshot_taken_inside_a_chunk_restores_exactly(model):
    runner = ModelRunner(model)
    tokens = prompt(100)
    runner.add(0, None, max_length=110)
    whole, nbytes = runner.prefill([0], [tokens], [[(60, 7)]])
    assert set(nbytes) == {7} and runner.snapshot_ids == {7}
    runner.add(1, restore=7, max_length=110)
    rest, _ = runner.prefill([1], [tokens[60:]], [[]])
    torch.testing.assert_close(rest, whole, **CHUNKING)
    # Both join the decode batch; the logits come back in the order asked for.
    both = runner.decode([1, 0], [5, 5])
    torch.testing.assert_close(both[0], both[1], **CHUNKING)
    runner.release([0, 1])
    runner.drop_snapshots([7])
    assert not runner.sequences and not runner.snapshot_ids


def test_a_failed_prefill_leaves_every_state_as_it_was(model, monkeypatch):
    runner, tokens = ModelRunner(model), prompt(40, seed=1)
    runner.add(0, None, max_length=50)
    runner.prefill([0], [tokens[:20]], [[]])
    forward_step = model.forward_step

    def failing_once(*args, **kwargs):
        monkeypatch.setattr(model, "forward_step", forward_step)
        raise RuntimeError("injected failure")

    monkeypatch.setattr(model, "forward_step", failing_once)
    with pytest.raises(RuntimeError, match="injected"):
        runner.prefill([0], [tokens[20:]], [[(10, 1)]])
    assert not runner.snapshot_ids
    after_failure, _ = runner.prefill([0], [tokens[20:]], [[]])
    fresh = ModelRunner(model)
    fresh.add(0, None, max_length=50)
    straight, _ = fresh.prefill([0], [tokens], [[]])
    torch.testing.assert_close(after_failure, straight, **CHUNKING)


def test_two_runners_given_the_same_calls_agree(model):
    calls = [
        ("add", 0, None, 30), ("add", 1, None, 30),
        ("prefill", [0, 1], [prompt(12, 2), prompt(12, 3)], [[(6, 0)], []]),
        ("add", 2, 0, 30), ("prefill", [2], [prompt(5, 4)], [[]]),
        ("decode", [0, 1], [7, 8]), ("release", [1]), ("decode", [2, 0], [9, 7]),
    ]  # fmt: skip
    outputs = []
    for runner in (ModelRunner(model), ModelRunner(model)):
        logits = []
        for name, *args in calls:
            out = getattr(runner, name)(*args)
            if name in ("prefill", "decode"):
                logits.append(out[0] if name == "prefill" else out)
        outputs.append(logits)
    for a, b in zip(*outputs):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_decode_must_name_every_generating_sequence(model):
    runner = ModelRunner(model)
    for i in range(2):
        runner.add(i, None, max_length=20)
        runner.prefill([i], [prompt(8, i)], [[]])
    runner.decode([0, 1], [5, 6])
    with pytest.raises(ValueError, match="every generating sequence"):
        runner.decode([0], [5])
