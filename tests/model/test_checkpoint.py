"""Checkpoint save/load: both layouts, quantized and dense, sharded, and bad checkpoints."""

import json
import re
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from flashbeam.model.checkpoint import inventory, loading
from flashbeam.model.checkpoint.formats import QuantizedWeight
from flashbeam.model.checkpoint.inventory import CheckpointError, expected_tensors, quantized_format
from flashbeam.model.checkpoint.layouts import official_to_hf
from flashbeam.model.checkpoint.loading import load_model, load_state_dict
from flashbeam.model.checkpoint.random_init import random_model as init_random_model
from flashbeam.model.checkpoint.saving import save_checkpoint
from flashbeam.model.network.config import ModelConfig, tiny_config
from flashbeam.model.network.transformer import Transformer

PRESETS = ["tiny", "tiny-csa", "tiny-hca", "tiny-rates"]
OFFICIAL_CONFIG = Path(__file__).parents[1] / "data" / "official" / "config.json"


def random_model(preset: str, seed: int = 0) -> Transformer:
    return init_random_model(tiny_config(preset), seed)


def tokens(config: ModelConfig, length: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    return torch.randint(0, config.vocab_size, (1, length), generator=g)


@pytest.fixture(scope="module")
def tiny() -> Transformer:
    return random_model("tiny")


@pytest.fixture
def saved(tiny, tmp_path) -> Path:
    return save_checkpoint(tiny, tmp_path / "ckpt")


def rewrite(directory: Path, edit) -> Path:
    """Apply `edit(tensors)` to a single-file checkpoint in place."""
    path = directory / "model.safetensors"
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})
    return path


def quant_dequant(t: torch.Tensor, fmt: str) -> torch.Tensor:
    return QuantizedWeight.quantize(t, fmt).dequantize(torch.float32)


# ---- the inventory -------------------------------------------------------------------------
@pytest.mark.parametrize("preset", PRESETS)
def test_inventory_matches_the_network(preset):
    config = tiny_config(preset)
    state = Transformer(config).state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == expected_tensors(config)


def test_inventory_and_quantization_match_the_real_flash_checkpoint():
    """Spec §6.1 dtype counts of the official files, less the MTP block's tensors."""
    config = ModelConfig.from_file(OFFICIAL_CONFIG)
    counts: Counter[str] = Counter()
    for name in expected_tensors(config):
        fmt = quantized_format(name, "fp8+fp4")
        if fmt:
            counts["F8_E4M3" if fmt == "fp8" else "I8"] += 1
            counts["F8_E8M0"] += 1
        elif name.endswith("tid2eid"):
            counts["I64"] += 1
        else:
            counts["F32" if inventory._keeps_fp32(name) else "BF16"] += 1
    # MTP holds 10 FP8 linears (+ scales), 768 FP4 experts (+ scales), 8 BF16 and 11 F32 tensors.
    assert counts == {
        "F8_E4M3": 375 - 10,
        "I8": 33792 - 768,
        "F8_E8M0": 34167 - 778,
        "BF16": 433 - 8,
        "F32": 417 - 11,
        "I64": 3,
    }


def test_transformers_names_follow_the_spec_table():
    assert official_to_hf("embed.weight") == "model.embed_tokens.weight"
    assert official_to_hf("head.weight") == "lm_head.weight"
    assert official_to_hf("hc_head_scale") == "model.hc_head.hc_scale"
    assert official_to_hf("layers.3.hc_ffn_base") == "model.layers.3.ffn_hc.base"
    assert official_to_hf("layers.2.attn.attn_sink") == "model.layers.2.self_attn.sinks"
    assert (
        official_to_hf("layers.2.attn.indexer.compressor.ape")
        == "model.layers.2.self_attn.compressor.indexer.position_bias"
    )
    assert (
        official_to_hf("layers.2.attn.compressor.norm.weight")
        == "model.layers.2.self_attn.compressor.kv_norm.weight"
    )
    assert (
        official_to_hf("layers.5.ffn.gate.bias")
        == "model.layers.5.mlp.gate.e_score_correction_bias"
    )
    assert (
        official_to_hf("layers.0.ffn.shared_experts.w3.weight")
        == "model.layers.0.mlp.shared_experts.up_proj.weight"
    )
    with pytest.raises(KeyError):
        official_to_hf("layers.0.ffn.experts.0.w1.weight")


# ---- round trips ---------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["official", "hf"])
@pytest.mark.parametrize("preset", PRESETS)
def test_dense_round_trip_is_exact(preset, layout, tmp_path):
    model = random_model(preset)
    directory = save_checkpoint(model, tmp_path, layout=layout)
    assert sorted(p.name for p in directory.iterdir()) == ["config.json", "model.safetensors"]
    with safe_open(str(directory / "model.safetensors"), "pt") as f:
        names = list(f.keys())
    assert ("lm_head.weight" in names) == (layout == "hf")
    state = load_state_dict(directory, model.config)
    assert state.keys() == model.state_dict().keys()
    for name, t in model.state_dict().items():
        assert torch.equal(state[name], t), name
    loaded = load_model(directory)
    assert not loaded.training
    assert loaded.config == model.config
    if layout == "official":  # same tensors either way; one forward pass per preset is enough
        ids = tokens(model.config)
        with torch.no_grad():
            assert torch.equal(loaded(ids), model(ids))


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("quantize", ["fp8", "fp8+fp4"])
def test_quantized_round_trip(preset, quantize, tmp_path):
    model = random_model(preset)
    directory = save_checkpoint(model, tmp_path, quantize=quantize)
    raw = load_file(directory / "model.safetensors")
    expert_dtype = torch.int8 if quantize == "fp8+fp4" else torch.float8_e4m3fn
    assert raw["layers.0.attn.wq_a.weight"].dtype == torch.float8_e4m3fn
    assert raw["layers.0.attn.wq_a.scale"].dtype == torch.float8_e8m0fnu
    assert raw["layers.0.ffn.shared_experts.w2.weight"].dtype == torch.float8_e4m3fn
    assert raw["layers.0.ffn.experts.1.w2.weight"].dtype == expert_dtype
    assert raw["layers.0.ffn.experts.1.w2.scale"].dtype == torch.float8_e8m0fnu
    assert raw["layers.0.attn.q_norm.weight"].dtype == torch.float32
    config_json = json.loads((directory / "config.json").read_text())
    assert config_json["quantization_config"]["weight_block_size"] == [128, 128]
    assert config_json["expert_dtype"] == ("fp4" if quantize == "fp8+fp4" else "fp8")
    assert ModelConfig.from_file(directory).expert_dtype == config_json["expert_dtype"]

    state = load_state_dict(directory, model.config)
    for name, t in model.state_dict().items():
        fmt = quantized_format(name, quantize)
        want = quant_dequant(t, fmt) if fmt else t
        assert torch.equal(state[name], want), name
    loaded = load_model(directory)
    assert all(torch.equal(t, state[k]) for k, t in loaded.state_dict().items())
    ids = tokens(model.config)
    with torch.no_grad():
        ref, got = model(ids), loaded(ids)
    # Gross-error guard only: random tiny weights are chaotic (1% weight noise already moves
    # logits ~15% through router and indexer top-k flips); an inverted scale gives > 100%.
    assert (got - ref).norm() < 0.6 * ref.norm()


def test_quantized_load_into_bfloat16_keeps_fp32_tensors(tiny, tmp_path):
    directory = save_checkpoint(tiny, tmp_path, quantize="fp8+fp4")
    state = load_state_dict(directory, tiny.config, dtype=torch.bfloat16)
    assert state["layers.1.attn.wq_b.weight"].dtype == torch.bfloat16
    assert state["layers.1.ffn.experts.0.w1.weight"].dtype == torch.bfloat16
    assert state["layers.1.hc_attn_fn"].dtype == torch.float32
    assert state["layers.1.attn.compressor.ape"].dtype == torch.float32
    assert state["layers.0.ffn.gate.tid2eid"].dtype == torch.int64
    want = quant_dequant(tiny.state_dict()["layers.1.attn.wq_b.weight"], "fp8")
    assert torch.equal(state["layers.1.attn.wq_b.weight"].float(), want)  # lossless into bf16


def test_save_dtype_casts_dense_tensors_but_not_fp32_ones(tiny, tmp_path):
    directory = save_checkpoint(tiny, tmp_path, dtype=torch.bfloat16)
    raw = load_file(directory / "model.safetensors")
    assert raw["embed.weight"].dtype == torch.bfloat16
    assert raw["layers.0.hc_attn_fn"].dtype == torch.float32
    assert raw["layers.3.ffn.gate.bias"].dtype == torch.float32


@pytest.mark.parametrize("quantize", [None, "fp8+fp4"])
def test_sharded_equals_single_file(tiny, quantize, tmp_path):
    single = load_state_dict(
        save_checkpoint(tiny, tmp_path / "one", quantize=quantize), tiny.config
    )
    directory = save_checkpoint(tiny, tmp_path / "many", quantize=quantize, max_shard_bytes=20_000)
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 3 and not (directory / "model.safetensors").exists()
    assert files[0] == f"model-00001-of-{len(files):05d}.safetensors"
    for name, file in index["weight_map"].items():
        if name.endswith(".scale"):  # a scale sits in the same shard as its weight
            assert index["weight_map"][name[: -len(".scale")] + ".weight"] == file
    sharded = load_state_dict(directory, tiny.config)
    assert sharded.keys() == single.keys()
    assert all(torch.equal(sharded[k], single[k]) for k in single)


def test_resaving_replaces_old_shards(tiny, tmp_path):
    save_checkpoint(tiny, tmp_path, max_shard_bytes=20_000)
    save_checkpoint(tiny, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]


def test_mtp_tensors_are_ignored(tiny, saved):
    def add_mtp(t):
        t["mtp.0.e_proj.weight"] = torch.zeros(64, 64).to(torch.float8_e4m3fn)
        t["mtp.0.e_proj.scale"] = torch.ones(1, 1).to(torch.float8_e8m0fnu)
        t["mtp.0.ffn.experts.0.w1.weight"] = torch.zeros(32, 32, dtype=torch.int8)
        t["mtp.0.enorm.weight"] = torch.ones(64)

    rewrite(saved, add_mtp)
    state = load_state_dict(saved, tiny.config)
    assert not any(k.startswith("mtp") for k in state)
    assert state.keys() == tiny.state_dict().keys()


def test_official_names_with_model_prefix_load(tiny, saved):
    rewrite(saved, lambda t: t.update({"model." + k: t.pop(k) for k in list(t)}))
    assert torch.equal(load_state_dict(saved, tiny.config)["embed.weight"], tiny.embed.weight)


def test_transformers_reads_our_checkpoints(tiny, tmp_path):
    """transformers maps official names itself; every layout gives it the same weights."""
    transformers = pytest.importorskip("transformers")
    ref = None
    for layout in ("official", "hf", "hf-saved"):
        directory = save_checkpoint(tiny, tmp_path / layout, layout=layout)
        hf = transformers.DeepseekV4ForCausalLM.from_pretrained(directory, dtype=torch.float32)
        state = hf.state_dict()
        ref = ref or state
        assert state.keys() == ref.keys()
        assert all(torch.equal(state[k], ref[k]) for k in ref)
    for name, t in tiny.state_dict().items():
        if ".experts." not in name:
            assert torch.equal(ref[official_to_hf(name)], t), name
    I = tiny.config.moe_intermediate_size
    gate_up = ref["model.layers.2.mlp.experts.gate_up_proj"]
    assert torch.equal(gate_up[5, :I], tiny.layers[2].ffn.experts[5].w1.weight)
    assert torch.equal(gate_up[5, I:], tiny.layers[2].ffn.experts[5].w3.weight)
    down = ref["model.layers.2.mlp.experts.down_proj"]
    assert torch.equal(down[5], tiny.layers[2].ffn.experts[5].w2.weight)


# ---- bad checkpoints -----------------------------------------------------------------------
def shard_files(directory: Path) -> list[str]:
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    return sorted(set(index["weight_map"].values()))


def expect_error(directory: Path, config: ModelConfig, *needles: str) -> str:
    with pytest.raises(CheckpointError) as info:
        load_state_dict(directory, config)
    message = str(info.value)
    for needle in needles:
        assert needle in message, message
    return message


def test_unknown_tensor(tiny, saved):
    path = rewrite(saved, lambda t: t.update({"layers.0.attn.bogus.weight": torch.zeros(2)}))
    expect_error(saved, tiny.config, "unknown", "'layers.0.attn.bogus.weight'", str(path))


def test_tensor_of_a_layer_the_config_does_not_have(tiny, saved):
    path = rewrite(saved, lambda t: t.update({"layers.9.attn_norm.weight": torch.zeros(64)}))
    expect_error(saved, tiny.config, "'layers.9.attn_norm.weight'", str(path), "4 layers")


def test_missing_tensor(tiny, saved):
    rewrite(saved, lambda t: t.pop("layers.1.attn.wkv.weight"))
    expect_error(saved, tiny.config, "missing", "'layers.1.attn.wkv.weight'", str(saved))


def test_missing_stacked_experts_in_transformers_layout(tiny, tmp_path):
    directory = save_checkpoint(tiny, tmp_path, layout="hf")
    rewrite(directory, lambda t: t.pop("model.layers.3.mlp.experts.down_proj"))
    expect_error(directory, tiny.config, "missing", "'model.layers.3.mlp.experts.down_proj")


def test_wrong_shape(tiny, saved):
    path = rewrite(saved, lambda t: t.update({"norm.weight": torch.ones(63)}))
    expect_error(saved, tiny.config, "'norm.weight'", str(path), "[63]", "[64]")


def test_wrong_shape_in_transformers_layout(tiny, tmp_path):
    directory = save_checkpoint(tiny, tmp_path, layout="hf")
    name = "model.layers.1.mlp.experts.gate_up_proj"
    path = rewrite(directory, lambda t: t.update({name: t[name][:, :-1].contiguous()}))
    expect_error(directory, tiny.config, repr(name), str(path), "[8, 63, 64]", "[8, 64, 64]")


def test_wrong_scale_shape(tiny, tmp_path):
    directory = save_checkpoint(tiny, tmp_path, quantize="fp8+fp4")
    name = "layers.2.ffn.experts.3.w1.scale"
    path = rewrite(directory, lambda t: t.update({name: t[name][:, :1].contiguous()}))
    expect_error(directory, tiny.config, repr(name), str(path), "[32, 1]", "[32, 2]")


def test_unsupported_dtype(tiny, saved):
    name = "layers.0.attn.wq_a.weight"
    path = rewrite(saved, lambda t: t.update({name: t[name].to(torch.float8_e5m2)}))
    expect_error(saved, tiny.config, repr(name), str(path), "unsupported dtype F8_E5M2")


def test_float_hash_table_is_unsupported(tiny, saved):
    name = "layers.0.ffn.gate.tid2eid"
    path = rewrite(saved, lambda t: t.update({name: t[name].float()}))
    expect_error(saved, tiny.config, repr(name), str(path), "unsupported dtype F32")


def test_fp8_weight_without_scale(tiny, tmp_path):
    directory = save_checkpoint(tiny, tmp_path, quantize="fp8")
    path = rewrite(directory, lambda t: t.pop("layers.0.attn.wo_b.scale"))
    expect_error(directory, tiny.config, "'layers.0.attn.wo_b.weight'", str(path), "no scale")


def test_scale_beside_a_dense_weight(tiny, saved):
    name = "layers.0.attn.wo_b.scale"
    path = rewrite(saved, lambda t: t.update({name: torch.ones(1, 1).to(torch.float8_e8m0fnu)}))
    expect_error(saved, tiny.config, repr(name), str(path), "stored dense")


def test_shard_missing(tiny, tmp_path):
    directory = save_checkpoint(tiny, tmp_path, max_shard_bytes=20_000)
    shard = directory / shard_files(directory)[1]
    shard.unlink()
    expect_error(directory, tiny.config, str(shard), "model.safetensors.index.json", "missing")


def test_index_places_a_tensor_in_the_wrong_shard(tiny, tmp_path):
    directory = save_checkpoint(tiny, tmp_path, max_shard_bytes=20_000)
    index_path = directory / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    first = shard_files(directory)[0]
    assert index["weight_map"]["norm.weight"] != first
    index["weight_map"]["norm.weight"] = first
    index_path.write_text(json.dumps(index))
    expect_error(directory, tiny.config, "'norm.weight'", str(directory / first))


@pytest.mark.parametrize("keep", [0, 5, 100, -8])
def test_truncated_shard(tiny, saved, keep):
    path = saved / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[:keep])
    expect_error(saved, tiny.config, str(path), "truncated or corrupt")


def test_corrupt_header(tiny, saved):
    path = saved / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[10:14] = b"\xff\xfe\xff\xfe"
    path.write_bytes(bytes(data))
    expect_error(saved, tiny.config, str(path), "truncated or corrupt")


def test_index_without_weight_map(tiny, tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text("[]")
    expect_error(tmp_path, tiny.config, "model.safetensors.index.json", "weight_map")


def test_no_checkpoint_files(tiny, tmp_path):
    expect_error(tmp_path, tiny.config, str(tmp_path), "model.safetensors")
    expect_error(tmp_path / "nope", tiny.config, "does not exist")


def test_config_mismatch_is_named(saved):
    other = tiny_config("tiny", moe_intermediate_size=48)
    message = expect_error(saved, other, "has shape", "for this config")
    assert re.search(r"'layers\.\d+\.ffn\.(shared_experts|experts\.\d+)\.w[123]\.weight'", message)


# ---- saving errors and the embedded checkpoint ---------------------------------------------
def test_save_refuses_quantized_transformers_layout(tiny, tmp_path):
    with pytest.raises(CheckpointError, match="dense only"):
        save_checkpoint(tiny, tmp_path, layout="hf", quantize="fp8")


def test_save_needs_a_network_with_a_config(tmp_path):
    with pytest.raises(CheckpointError, match="ModelConfig"):
        save_checkpoint(torch.nn.Linear(2, 2), tmp_path)


def test_fp4_needs_even_expert_inputs(tmp_path):
    model = Transformer(tiny_config("tiny-hca", moe_intermediate_size=15))
    with pytest.raises(CheckpointError, match=r"w2\.weight.*even"):
        save_checkpoint(model, tmp_path, quantize="fp8+fp4")


def test_embedded_tiny_checkpoint_missing_is_explained(monkeypatch, tmp_path):
    monkeypatch.setattr(loading, "TINY_DIR", tmp_path / "tiny")
    with pytest.raises(CheckpointError, match="embedded tiny checkpoint is missing"):
        load_model("tiny")


def test_embedded_tiny_checkpoint_resolves(monkeypatch, tiny, tmp_path):
    monkeypatch.setattr(loading, "TINY_DIR", save_checkpoint(tiny, tmp_path / "tiny"))
    assert load_model("tiny").config == tiny.config
