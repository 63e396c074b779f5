"""The fit planner: its byte counts are the bytes the network and the engine really hold."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flashbeam.model import tiny_config
from flashbeam.model.checkpoint.fit import (
    GiB,
    StoredFormats,
    kv_bytes_per_token,
    plan_fit,
    sequence_bytes,
    weight_bytes,
)
from flashbeam.model.checkpoint.random_init import random_model
from flashbeam.model.network.config import ModelConfig
from flashbeam.model.network.decode import DecodeBatch

OFFICIAL = Path(__file__).parents[1] / "data" / "official" / "config.json"
FLASH_FP4 = StoredFormats("fp8", "fp4").of


def _tensor_bytes(obj) -> int:
    total = 0
    for value in vars(obj).values():
        if isinstance(value, torch.Tensor):
            total += value.numel() * value.element_size()
        elif value is not None and hasattr(value, "__dict__"):
            total += _tensor_bytes(value)
    return total


@pytest.mark.parametrize("preset", ["tiny", "tiny-csa", "tiny-hca", "tiny-rates"])
def test_sequence_bytes_are_the_decode_state_the_engine_holds(preset):
    config = tiny_config(preset)
    model = random_model(config, seed=0)
    tokens = 3 * config.sliding_window + 5
    ids = torch.randint(16, config.vocab_size, (1, tokens))
    with torch.inference_mode():
        _, (state,) = model.forward_step(ids, [model.empty_state()])
        batch = DecodeBatch.build(model, [state], extra_tokens=0)
    held = sum(_tensor_bytes(layer) for layer in batch.layers)
    assert sequence_bytes(config, tokens, torch.float32) == held


def test_weight_bytes_of_one_rank_are_the_dense_model():
    config = tiny_config("tiny")
    model = random_model(config, seed=0)
    dense = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert weight_bytes(config, lambda name: "dense", torch.float32, 0, 1)["total"] == dense


@pytest.mark.parametrize("world", [2, 4])
def test_ranks_split_the_split_tensors_and_each_hold_the_rest(world):
    config = ModelConfig.from_file(OFFICIAL)
    one = weight_bytes(config, FLASH_FP4, torch.bfloat16, 0, 1)["total"]
    ranks = [weight_bytes(config, FLASH_FP4, torch.bfloat16, r, world) for r in range(world)]
    assert len({r["total"] for r in ranks}) == 1  # an even split
    assert sum(r["split"] for r in ranks) + ranks[0]["replicated"] == one


def test_official_flash_on_the_usual_gpus():
    config = ModelConfig.from_file(OFFICIAL)
    one_h200 = plan_fit(config, 1, 141 * 10**9, format_of=FLASH_FP4)
    assert not one_h200.fits and "needs at least 2 x" in one_h200.verdict
    four_h100 = plan_fit(config, 4, 80 * GiB, concurrency=16, format_of=FLASH_FP4)
    assert four_h100.fits and four_h100.max_concurrency >= 16
    # ~149 GB of weights, a quarter each plus the replicated ~2 GiB
    assert 36 * GiB < four_h100.weight_bytes_per_gpu < 40 * GiB
    eight = plan_fit(config, 8, 80 * GiB, format_of=FLASH_FP4)
    assert eight.weight_bytes_per_gpu < four_h100.weight_bytes_per_gpu * 0.6
    assert (
        kv_bytes_per_token(config, torch.bfloat16) == 21 * (512 + 128) * 2 / 4 + 20 * 512 * 2 / 128
    )


def test_too_many_sequences_is_a_clear_no():
    plan = plan_fit(ModelConfig.from_file(OFFICIAL), 4, 80 * GiB, concurrency=10_000)
    assert not plan.fits and "not 10000" in plan.verdict


def _plan(*args: str) -> subprocess.CompletedProcess:
    flashbeam = Path(sys.executable).parent / "flashbeam"
    return subprocess.run(
        [str(flashbeam), "plan", *args], capture_output=True, text=True, check=False, cwd="/"
    )


def test_plan_command_exit_codes():
    fits = _plan(
        str(OFFICIAL), "--gpus", "4", "--gpu-memory", "80GiB", "--experts", "fp4", "--json"
    )
    assert fits.returncode == 0, fits.stderr
    assert json.loads(fits.stdout)["fits"] is True
    too_small = _plan(str(OFFICIAL), "--gpus", "1", "--gpu-memory", "80GiB")
    assert too_small.returncode == 1 and "needs at least" in too_small.stdout
    bad_world = _plan("tiny", "--gpus", "3", "--gpu-memory", "1GiB")
    assert bad_world.returncode == 1 and "sizes that work: 1, 2" in bad_world.stdout
    missing = _plan("/no/such/model", "--gpu-memory", "1GiB")
    assert missing.returncode == 2 and "/no/such/model" in missing.stderr
