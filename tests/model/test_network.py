"""The network: incremental decoding, chunked prefill and state snapshots."""

import subprocess
import sys

import pytest
import torch

from flashbeam.model import tiny_config
from flashbeam.model.checkpoint.random_init import random_model

# "tiny-rates" (other compression rates, plain RoPE) joins the tests of chunked and last-only
# prefill, ragged decode and the training path, where the compressors' bookkeeping follows rates
PRESETS = ["tiny", "tiny-csa", "tiny-hca"]
RATE_PRESETS = [*PRESETS, "tiny-rates"]


def _ids(config, batch, seq, seed=1):
    return torch.randint(
        16, config.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(seed)
    )


def _run_chunks(model, ids, splits):
    states = [model.empty_state() for _ in range(ids.shape[0])]
    out, pos = [], 0
    for size in splits:
        logits, states = model.forward_step(ids[:, pos : pos + size], states)
        out.append(logits)
        pos += size
    return torch.cat(out, dim=1), states


@pytest.mark.parametrize("preset", RATE_PRESETS)
def test_chunked_prefill_and_decode_match_full_forward(preset):
    config = tiny_config(preset)
    model = random_model(config, seed=0)
    ids = _ids(config, 2, 300)
    with torch.no_grad():
        full = model(ids)
        for splits in ([300], [1] * 20 + [280], [5, 7, 13, 1, 1, 16, 18, 239], [128, 128, 44]):
            got, states = _run_chunks(model, ids, splits)
            assert (got - full).abs().max().item() <= 1e-5, splits
            assert [s.length for s in states] == [300, 300]


@pytest.mark.parametrize("preset", RATE_PRESETS)
def test_last_only_prefill_gives_the_last_logits_and_full_states(preset):
    # last_only skips the last block's queries, attention and MoE for all but the last position;
    # its logits and the states it leaves must be those of the full computation.
    config = tiny_config(preset)
    model = random_model(config, seed=0)
    ids = _ids(config, 2, 300)
    with torch.no_grad():
        full = model(ids)
        states = [model.empty_state() for _ in range(2)]
        pos = 0
        for size in (1, 140, 3, 1, 155):
            logits, states = model.forward_step(ids[:, pos : pos + size], states, last_only=True)
            pos += size
            assert logits.shape == (2, 1, config.vocab_size)
            assert (logits[:, 0] - full[:, pos - 1]).abs().max().item() <= 1e-5, pos
        assert [s.length for s in states] == [300, 300]
        # the states equal those of a prefill that computes every position
        _, cut = model.forward_step(ids[:, :250], [model.empty_state() for _ in range(2)], True)
        _, whole = model.forward_step(ids[:, :250], [model.empty_state() for _ in range(2)])
    assert _state_tensors(cut) and len(_state_tensors(cut)) == len(_state_tensors(whole))
    for a, b in zip(_state_tensors(cut), _state_tensors(whole)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("lead", [(0, 0), (5, 130)])  # fresh rows; rows of other lengths
def test_states_kept_inside_a_chunk_are_those_a_cut_chunk_leaves(preset, lead):
    # keep_at snapshots inside one chunk; each kept state must be the state a chunk cut there
    # would have left, and continuing from it must reproduce the full forward.
    config = tiny_config(preset)
    model = random_model(config, seed=0)
    ids = _ids(config, 2, 420)
    keep_at = [[1, 3, 128, 131], [4, 200, 259]]
    with torch.no_grad():
        full = model(ids)
        states = [model.empty_state() for _ in range(2)]
        if any(lead):
            states = [
                model.forward_step(ids[b : b + 1, :n], [model.empty_state()])[1][0] if n else st
                for b, (n, st) in enumerate(zip(lead, states))
            ]
        chunk = torch.stack([ids[b, n : n + 260] for b, n in enumerate(lead)])
        _, ends, kept = model.forward_step(chunk, states, last_only=True, keep_at=keep_at)
        for b, (n, marks) in enumerate(zip(lead, keep_at)):
            assert [k.length for k in kept[b]] == [n + m for m in marks]
            for m, state in zip(marks, kept[b]):
                _, (cut,) = model.forward_step(chunk[b : b + 1, :m], [states[b]])
                assert len(_state_tensors([state])) == len(_state_tensors([cut]))
                for a, c in zip(_state_tensors([state]), _state_tensors([cut])):
                    torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-5)
                nxt, _ = model.forward_step(ids[b : b + 1, n + m : n + m + 1], [state])
                assert (nxt[0, 0] - full[b, n + m]).abs().max().item() <= 1e-5
        assert [e.length for e in ends] == [n + 260 for n in lead]
        with pytest.raises(ValueError, match="keep_at"):
            model.forward_step(chunk, states, keep_at=[[260], []])


def _state_tensors(states):
    return [
        t
        for state in states
        for layer in state.layers
        for part in (layer, layer.compressor, layer.indexer)
        if part is not None
        for t in vars(part).values()
        if isinstance(t, torch.Tensor)
    ]


@pytest.mark.parametrize("preset", RATE_PRESETS)
def test_ragged_batched_decode_matches_single_sequences(preset):
    config = tiny_config(preset)
    model = random_model(config, seed=0)
    ids = _ids(config, 2, 200)
    with torch.no_grad():
        full = model(ids)
        _, (a,) = model.forward_step(ids[:1, :150], [model.empty_state()])
        _, (b,) = model.forward_step(ids[1:, :37], [model.empty_state()])
        step = torch.stack([ids[0, 150:151], ids[1, 37:38]])
        logits, _ = model.forward_step(step, [a, b])
    assert (logits[0, 0] - full[0, 150]).abs().max().item() <= 1e-5
    assert (logits[1, 0] - full[1, 37]).abs().max().item() <= 1e-5


@pytest.mark.parametrize("cut", [1, 3, 64, 130, 131])
def test_snapshot_restore_continue_reproduces(cut):
    config = tiny_config("tiny")
    model = random_model(config, seed=0)
    ids = _ids(config, 1, 260)
    with torch.no_grad():
        full = model(ids)
        _, (snapshot,) = model.forward_step(ids[:, :cut], [model.empty_state()])
        # Continue twice from the same snapshot: it must not have been changed by the first use.
        for _ in range(2):
            state = snapshot
            outs = []
            for pos in range(cut, 260, 37):
                logits, (state,) = model.forward_step(ids[:, pos : pos + 37], [state])
                outs.append(logits)
            assert (torch.cat(outs, 1) - full[:, cut:]).abs().max().item() <= 1e-5
    assert snapshot.length == cut and snapshot.nbytes > 0


def test_state_holds_the_partial_buffers_and_overlap_rows():
    config = tiny_config("tiny")  # layers: sliding, CSA, HCA, CSA
    model = random_model(config, seed=0)
    with torch.no_grad():
        _, (state,) = model.forward_step(_ids(config, 1, 135), [model.empty_state()])
    sliding, csa, hca, _ = state.layers
    assert sliding.window.shape[0] == config.sliding_window - 1 and sliding.compressor is None
    assert csa.compressor.entries.shape[0] == 135 // 4 and csa.compressor.buf_kv.shape[0] == 3
    assert csa.compressor.prev_kv.shape == (4, config.head_dim)
    assert csa.indexer.entries.shape == (135 // 4, config.index_head_dim)
    assert hca.compressor.entries.shape[0] == 1 and hca.compressor.buf_kv.shape[0] == 7


def test_forward_step_rejects_mismatched_states():
    model = random_model(tiny_config("tiny"), seed=0)
    with pytest.raises(ValueError, match="one state per row"):
        model.forward_step(torch.zeros(2, 3, dtype=torch.long), [model.empty_state()])


@pytest.mark.slow
def test_32k_prompt_prefills_in_chunks_with_bounded_memory():
    script = """
import resource, torch
from flashbeam.model import tiny_config
from flashbeam.model.checkpoint.random_init import random_model
torch.set_num_threads(2)
model = random_model(tiny_config("tiny"), seed=0)
ids = torch.randint(16, 512, (1, 32768), generator=torch.Generator().manual_seed(0))
state = model.empty_state()
with torch.inference_mode():
    for pos in range(0, 32768, 2048):
        logits, (state,) = model.forward_step(ids[:, pos:pos + 2048], [state], last_only=True)
assert state.length == 32768 and torch.isfinite(logits).all()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    peak_mib = int(out.stdout.strip().splitlines()[-1])
    assert peak_mib < 3 * 1024, f"peak RSS {peak_mib} MiB"


@pytest.mark.parametrize("preset", RATE_PRESETS)
def test_training_path_matches_inference_path(preset):
    """With autograd on, fresh sequences use the dense masked attention; same math."""
    config = tiny_config(preset)
    model = random_model(config, seed=0)
    ids = _ids(config, 2, 260)
    with torch.no_grad():
        sparse = model(ids)
    dense = model(ids)
    assert dense.requires_grad
    assert (dense.detach() - sparse).abs().max().item() <= 1e-4


def test_dense_expert_path_matches_grouped_and_follows_weight_updates():
    """Decode-sized batches run every expert at once over a cached side-by-side copy of the
    expert weights; it must agree with the per-expert path and never serve stale weights."""
    model = random_model(tiny_config("tiny"), seed=0)
    moe = model.layers[2].ffn  # learned (not hashed) routing
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(1, 40, model.config.hidden_size, generator=gen)
    ids = torch.randint(16, model.config.vocab_size, (1, 40), generator=gen)
    flat = x.view(40, -1)
    with torch.inference_mode():
        chosen, weights = moe.gate(flat, ids.view(-1))
        dense = moe._all_experts(flat, chosen, weights)
        grouped = moe._grouped_experts(flat, chosen, weights)
        assert (dense - grouped).abs().max() <= 1e-5
        before = moe(x, ids)
    with torch.no_grad():  # e.g. an optimiser step or a weight reload
        moe.experts[int(chosen[0, 0])].w2.weight.mul_(2.0)
    with torch.inference_mode():
        after = moe(x, ids)
        grouped = moe._grouped_experts(flat, chosen, weights)
        assert not torch.allclose(before, after)
        assert (moe._all_experts(flat, chosen, weights) - grouped).abs().max() <= 1e-5
