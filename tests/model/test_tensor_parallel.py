"""The network split over 2 and 4 ranks (gloo, CPU) computes what one device computes.

The config has sliding, CSA and HCA layers, hash and routed MoE, two mHC streams, sequences
longer than the window and more CSA entries than `index_topk`; the split covers the query
heads, output groups, indexer heads, routed experts and the vocabulary.
"""

import pytest
import torch
import tp_entries

from flashbeam.model.engine.ranks import RankGroup

PRESET, OVERRIDES, SEED = "tiny", {"o_groups": 4}, 3


@pytest.fixture(scope="module", params=[2, 4])
def ranks(request):
    world = request.param
    group = RankGroup.start(world, tp_entries.serve, (PRESET, OVERRIDES, SEED), timeout_s=60)
    shard = tp_entries.build_shard(PRESET, OVERRIDES, SEED, 0, world)
    yield group, shard
    group.close()


@pytest.fixture(scope="module")
def single():
    return tp_entries.build_shard(PRESET, OVERRIDES, SEED, 0, 1)


def _both(ranks, single, op, args):
    group, shard = ranks
    group.send((op, args))
    return tp_entries.run(shard, op, args), tp_entries.run(single, op, args)


def _ids(config_vocab, batch, seq, seed):
    return torch.randint(
        16, config_vocab, (batch, seq), generator=torch.Generator().manual_seed(seed)
    )


def test_whole_sequence_logits_match_one_device(ranks, single):
    ids = _ids(single.config.vocab_size, 2, 80, 1)  # 80 tokens: 20 CSA entries, top-8 of them
    got, want = _both(ranks, single, "forward", ids)
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= 1e-5


def test_chunked_prefill_and_decode_match_one_device(ranks, single):
    ids = _ids(single.config.vocab_size, 2, 70, 2)
    decode = _ids(single.config.vocab_size, 2, 6, 3)
    got, want = _both(ranks, single, "steps", (ids, [13, 40, 17], decode))
    assert (got - want).abs().max().item() <= 1e-5
