"""Which slice of each tensor every rank keeps, and which world sizes are refused."""

from pathlib import Path

import pytest

from flashbeam.model import tiny_config
from flashbeam.model.checkpoint.inventory import expected_tensors
from flashbeam.model.network.config import ModelConfig
from flashbeam.model.network.parallel import (
    ParallelError,
    check_world_size,
    placement,
    working_world_sizes,
)

OFFICIAL = Path(__file__).parents[1] / "data" / "official" / "config.json"


def test_flash_splits_over_the_usual_world_sizes():
    config = ModelConfig.from_file(OFFICIAL)
    assert working_world_sizes(config, quantized=True) == [1, 2, 4, 8]
    with pytest.raises(ParallelError) as e:
        check_world_size(config, 3, quantized=True)
    assert "3 does not divide the 64 attention heads" in str(e.value)
    assert "sizes that work: 1, 2, 4, 8" in str(e.value)
    with pytest.raises(ParallelError, match="o_groups"):
        check_world_size(config, 16)


def test_fp8_block_cuts_are_refused_only_for_quantized_checkpoints():
    config = tiny_config("tiny")  # 4 heads of 32 dims: 64 rows of wq_b per rank at 2
    check_world_size(config, 2)
    with pytest.raises(ParallelError, match="128-row scale blocks"):
        check_world_size(config, 2, quantized=True)


@pytest.mark.parametrize("world", [2, 4])
def test_every_element_is_kept_by_exactly_the_ranks_it_should(world):
    config = tiny_config("tiny", o_groups=4, n_routed_experts=8)
    for name, shape in expected_tensors(config).items():
        places = [placement(name, config, r, world) for r in range(world)]
        kinds = {p.kind for p in places}
        if ".ffn.experts." in name:
            assert sorted(p.kind for p in places) == ["absent"] * (world - 1) + ["replicated"]
        elif kinds == {"slice"}:
            dim = places[0].dim
            ranges = [(p.start, p.stop) for p in places]
            assert ranges[0][0] == 0 and ranges[-1][1] == shape[dim]
            assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
        else:
            assert kinds == {"replicated"}, name


def test_one_rank_keeps_everything():
    config = tiny_config("tiny")
    assert all(placement(n, config, 0, 1).kind == "replicated" for n in expected_tensors(config))
