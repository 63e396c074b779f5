"""The official-dimension throughput benchmark, shrunk to a tiny config on the CPU, and the random
checkpoints it writes in the official FP8/FP4 layout."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from flashbeam.cli import main
from flashbeam.model.checkpoint.inventory import expected_tensors, quantized_format
from flashbeam.model.checkpoint.random_packed import write_random_packed_checkpoint
from flashbeam.model.checkpoint.reader import CheckpointReader
from flashbeam.model.engine.bench_throughput import (
    BenchRefused,
    ThroughputSetup,
    bench_throughput,
    check_fits,
    sliced_config,
)
from flashbeam.model.network.config import ModelConfig, tiny_config

OFFICIAL_CONFIG = Path(__file__).parents[1] / "data" / "official" / "config.json"
SMALL = dict(config="tiny", layers=2, concurrency=(1, 2), input_tokens=24, output_tokens=4)
# Splits that keep the FP8 checkpoint's 128-row blocks whole at 2 ranks.
ALIGNED = dict(head_dim=128, o_groups=4, o_lora_rank=128, index_n_heads=4, index_head_dim=128)


def _layout_counts(config: ModelConfig) -> dict[str, int]:
    """How many weights the official layout stores FP8 and FP4 for `config`."""
    counts = {"fp8": 0, "fp4": 0}
    for name in expected_tensors(config):
        fmt = quantized_format(name, "fp8+fp4")
        if fmt:
            counts[fmt] += 1
    return counts


def _check_result(out: dict, tp: int) -> None:
    assert out["benchmark"] == "engine-throughput"
    assert out["device"].startswith("CPU")
    assert (out["layers"], out["model_layers"], out["slice"]) == (2, 4, True)
    assert out["tp"] == tp and out["concurrency"] == [1, 2]
    assert not out["comparable_to_published"]
    assert [r["concurrency"] for r in out["results"]] == [1, 2]
    for run in out["results"]:
        for key in ("prefill_tok_s_per_gpu", "decode_tok_s_per_gpu", "total_tok_s_per_gpu"):
            assert run[key] > 0, key
        assert run["generated_tokens"] == run["concurrency"] * 4
        assert run["decode_steps"] >= 3  # the tokens after the first, at least one step each
        assert run["decode_step_ms_per_layer"] == pytest.approx(run["decode_step_ms"] / 2, 1e-2)
    peer = out["published_peer"]
    assert "not measured" in peer["source"]
    assert peer["H200 FP4 TP4"] == {"1": 607, "16": 3264, "256": 4207}
    assert peer["H100 FP4 TP8"] == {"1": 320, "16": 2009, "256": 2429}


def test_slice_runs_packed_in_the_official_layout():
    out = bench_throughput(ThroughputSetup(**SMALL, device="cpu", keep_quantized=True))
    _check_result(out, tp=1)
    layout = _layout_counts(sliced_config("tiny", 2))
    weights = out["weights"]
    assert weights["stored"]["fp8"] == layout["fp8"] and weights["stored"]["fp4"] == layout["fp4"]
    assert weights["packed"]
    # Every FP8 linear of the layout is held as one, and each layer's experts are packed FP4.
    held = weights["held_by_rank0"]
    assert held["fp8_linears"] == layout["fp8"]
    assert held["fp4_expert_layers"] == 2 and held["fp8_expert_layers"] == 0


def test_two_ranks_report_per_gpu_rates(tmp_path):
    config_file = tmp_path / "aligned.json"
    config_file.write_text(json.dumps(tiny_config("tiny", **ALIGNED).to_official_dict()))
    checkpoint = tmp_path / "checkpoint"
    setup = ThroughputSetup(
        **{**SMALL, "config": str(config_file)}, device="cpu", keep_quantized=True,
        tensor_parallel=2, checkpoint_dir=str(checkpoint),
    )  # fmt: skip
    out = bench_throughput(setup)
    _check_result(out, tp=2)
    assert out["checkpoint"]["dir"] == str(checkpoint) and not out["checkpoint"]["reused"]
    held = out["weights"]["held_by_rank0"]
    assert held["fp8_linears"] > 0 and held["fp4_expert_layers"] == 2


def test_checkpoint_dir_is_reused_only_for_the_same_model(tmp_path):
    setup = ThroughputSetup(**{**SMALL, "concurrency": (1,)}, checkpoint_dir=str(tmp_path))
    first = bench_throughput(dataclasses.replace(setup, device="cpu"))
    again = bench_throughput(dataclasses.replace(setup, device="cpu"))
    assert not first["checkpoint"]["reused"] and again["checkpoint"]["reused"]
    other = dataclasses.replace(setup, device="cpu", layers=3)
    with pytest.raises(BenchRefused, match="holds another model"):
        bench_throughput(other)


def test_official_preset_is_the_official_config_and_slices_keep_its_layers():
    official = ModelConfig.from_file(OFFICIAL_CONFIG)
    assert sliced_config("official") == official.replace(quantization=None)
    assert sliced_config(str(OFFICIAL_CONFIG)) == official
    four = sliced_config("official", 4)
    assert four.layer_kinds == ["sliding", "sliding", "csa", "hca"]
    assert four.num_hash_layers == 3 and four.hidden_size == 4096
    assert sliced_config("official", 2).num_hash_layers == 2


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(layers=0), "give 1 to 4"),
        (dict(layers=5), "give 1 to 4"),
        (dict(concurrency=()), "positive request counts"),
        (dict(output_tokens=1), "at least 2 new tokens"),
        (dict(config="nope"), "unknown tiny preset"),
        (dict(tensor_parallel=2), "would cut the FP8 checkpoint's 128-row scale blocks"),
    ],
)
def test_bad_requests_are_refused_before_anything_runs(changes, message):
    with pytest.raises(BenchRefused, match=message):
        bench_throughput(ThroughputSetup(**{**SMALL, "device": "cpu", **changes}))


def test_the_whole_model_is_refused_where_it_cannot_fit():
    setup = ThroughputSetup(device="cpu", keep_quantized=False)
    config = sliced_config("official")
    with pytest.raises(BenchRefused, match=r"official \(43 layers\) does not fit"):
        check_fits(config, setup, torch.bfloat16)


def test_cli_refusal_exits_2_with_the_reason(capsys):
    assert main(["bench", "engine", "--config", "tiny", "--tensor-parallel", "3"]) == 2
    assert "tensor_parallel sizes that work: 1" in capsys.readouterr().err


def test_random_packed_weights_have_the_official_formats_and_spread(tmp_path):
    config = tiny_config("tiny", hidden_size=128, moe_intermediate_size=64)
    write_random_packed_checkpoint(tmp_path, config, max_shard_bytes=50_000)
    assert len(list(tmp_path.glob("model-*-of-*.safetensors"))) > 1
    saved = ModelConfig.from_file(tmp_path / "config.json")
    assert saved.expert_dtype == "fp4" and saved.quantization["quant_method"] == "fp8"
    with CheckpointReader(tmp_path, saved) as reader:
        entries = reader.entries
        assert entries["layers.1.attn.wq_a.weight"].fmt == "fp8"
        assert entries["layers.1.ffn.experts.0.w1.weight"].fmt == "fp4"
        assert entries["embed.weight"].fmt == "dense"
        for name in ("layers.1.attn.wq_a.weight", "layers.1.ffn.experts.0.w1.weight"):
            weight = reader.read_dense(name, torch.float32)
            # Power-of-two scales put the spread within a factor of sqrt(2) of 1/sqrt(fan_in).
            ratio = weight.std().item() * math.sqrt(weight.shape[1])
            assert 0.7 < ratio < 1.42, (name, ratio)
        picks = reader.read_dense("layers.0.ffn.gate.tid2eid", torch.float32)
    assert all(len(set(row.tolist())) == row.numel() for row in picks)
    assert int(picks.max()) < config.n_routed_experts
