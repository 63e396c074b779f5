"""Each tensor-parallel rank reads from a checkpoint only the slices it keeps, FP8 scale blocks
and packed FP4 experts included, and the ranks together compute what one device computes."""

import pytest
import torch
import tp_entries

from flashbeam.model import save_checkpoint, tiny_config
from flashbeam.model.checkpoint.inventory import CheckpointError
from flashbeam.model.checkpoint.loading import load_model
from flashbeam.model.checkpoint.random_init import random_model
from flashbeam.model.checkpoint.reader import split_reads
from flashbeam.model.engine.ranks import RankGroup
from flashbeam.model.network.parallel import TensorParallel

# Splits that keep the FP8 checkpoint's 128-row blocks whole at 2 and 4 ranks.
ALIGNED = dict(head_dim=128, o_groups=4, o_lora_rank=128, index_n_heads=4, index_head_dim=128)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    config = tiny_config("tiny", **ALIGNED)
    directory = tmp_path_factory.mktemp("fp8fp4")
    save_checkpoint(random_model(config, seed=5), directory, quantize="fp8+fp4")
    return directory


@pytest.mark.parametrize("world", [2, 4])
def test_ranks_read_only_their_share(checkpoint, world):
    config = tiny_config("tiny", **ALIGNED)
    measured = split_reads(checkpoint, config, world)
    assert len(measured.per_rank) == world
    for read in measured.per_rank:
        assert read <= 1.1 * measured.split_bytes / world


@pytest.fixture(scope="module", params=[2, 4])
def ranks(request, checkpoint):
    world = request.param
    group = RankGroup.start(world, tp_entries.serve_checkpoint, checkpoint, timeout_s=60)
    yield group, {keep: tp_entries.load_shard(checkpoint, keep, 0, world) for keep in (False, True)}
    group.close()


@pytest.mark.parametrize("keep_quantized", [False, True])
def test_sharded_checkpoint_logits_match_one_device(checkpoint, ranks, keep_quantized):
    group, shards = ranks
    ids = torch.randint(16, 512, (2, 70), generator=torch.Generator().manual_seed(4))
    decode = torch.randint(16, 512, (2, 4), generator=torch.Generator().manual_seed(5))
    args = (ids, [30, 40], decode)
    group.send((keep_quantized, "steps", args))
    got = tp_entries.run(shards[keep_quantized], "steps", args)
    want = tp_entries.run(load_model(checkpoint, keep_quantized=keep_quantized), "steps", args)
    assert (got - want).abs().max().item() <= 1e-5


def test_a_world_size_that_cuts_fp8_blocks_is_refused(tmp_path):
    config = tiny_config("tiny")  # 32-dim heads: 64 rows of wq_b per rank at 2
    save_checkpoint(random_model(config, seed=0), tmp_path, quantize="fp8")
    with pytest.raises(CheckpointError, match="128-row scale blocks.*sizes that work: 1$"):
        load_model(tmp_path, tp=TensorParallel(0, 2))
