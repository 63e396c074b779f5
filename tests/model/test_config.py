"""ModelConfig reads every config form we claim, refuses what it cannot honour, writes faithfully.

The same tiny models are written in each form (official config.json, DeepSeek's runtime config,
transformers' older keys, transformers' current keys as its own `save_pretrained` writes them)
and must read as equal ModelConfigs.
"""

import json
from pathlib import Path

import pytest

from flashbeam.model import ModelConfig, tiny_config
from flashbeam.model.network.config import ConfigError
from flashbeam.model.network.config_keys import FP8_QUANTIZATION_CONFIG, KEYS

OFFICIAL = Path(__file__).parents[1] / "data" / "official"
SOURCE = "some/dir/config.json"

SHAPES = {
    "vocab_size": 384,
    "hidden_size": 48,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "head_dim": 32,
    "q_lora_rank": 24,
    "o_groups": 2,
    "o_lora_rank": 12,
    "sliding_window": 12,
    "moe_intermediate_size": 24,
    "n_routed_experts": 6,
    "num_experts_per_tok": 2,
    "routed_scaling_factor": 1.5,
    "swiglu_limit": 10.0,
    "index_n_heads": 4,
    "index_head_dim": 16,
    "index_topk": 4,
    "hc_mult": 2,
    "hc_sinkhorn_iters": 8,
    "rope_theta": 10000.0,
    "compress_rope_theta": 160000.0,
}
KINDS = ["sliding_attention", "compressed_sparse_attention", "heavily_compressed_attention"]
LAYER_TYPES = [KINDS[i] for i in (0, 1, 2, 1)]
MLP_TYPES = ["hash_moe", "moe", "moe", "moe"]
YARN = {"factor": 16, "original_max_position_embeddings": 2048, "beta_fast": 32, "beta_slow": 1}


def official_form(**extra):
    return {
        "architectures": ["DeepseekV4ForCausalLM"],
        "model_type": "deepseek_v4",
        "attention_bias": False,
        "hidden_act": "silu",
        "num_key_value_heads": 1,
        "torch_dtype": "bfloat16",
        **SHAPES,
        "compress_ratios": [0, 4, 128, 4, 0],
        "num_hash_layers": 1,
        "qk_rope_head_dim": 8,
        **extra,
    }


def runtime_form(**extra):
    names = {
        "hidden_size": "dim",
        "num_hidden_layers": "n_layers",
        "num_attention_heads": "n_heads",
        "moe_intermediate_size": "moe_inter_dim",
        "num_experts_per_tok": "n_activated_experts",
        "routed_scaling_factor": "route_scale",
        "sliding_window": "window_size",
    }
    return {
        **{names.get(k, k): v for k, v in SHAPES.items()},
        "n_hash_layers": 1,
        "rope_head_dim": 8,
        "score_func": "sqrtsoftplus",
        "compress_ratios": [0, 4, 128, 4, 0],
        "max_batch_size": 4,
        "max_seq_len": 4096,
        **extra,
    }


def older_transformers_form(**extra):
    return {
        **SHAPES,
        "model_type": "deepseek_v4",
        "layer_types": LAYER_TYPES,
        "mlp_layer_types": MLP_TYPES,
        "partial_rotary_factor": 0.25,
        "use_cache": True,
        "initializer_range": 0.02,
        **extra,
    }


def saved_by_transformers(raw: dict, tmp_path: Path) -> dict:
    """What transformers' DeepseekV4Config writes for `raw` (its current form)."""
    transformers = pytest.importorskip("transformers")
    transformers.DeepseekV4Config(**raw).save_pretrained(tmp_path)
    return json.loads((tmp_path / "config.json").read_text())


FP8 = dict(FP8_QUANTIZATION_CONFIG)
YARN_MODEL = dict(
    SHAPES,
    compress_ratios=[0, 4, 128, 4],
    num_hash_layers=1,
    qk_rope_head_dim=8,
    compress_rope_type="yarn",
    rope_factor=16,
    original_max_position_embeddings=2048,
    quantization=FP8,
    expert_dtype="fp4",
)
PLAIN_MODEL = dict(YARN_MODEL, compress_rope_type="default", quantization=None, expert_dtype=None)
for _yarn_field in ("rope_factor", "original_max_position_embeddings"):
    PLAIN_MODEL.pop(_yarn_field)
RATES_MODEL = dict(PLAIN_MODEL, csa_compress_ratio=8, hca_compress_ratio=16)


def yarn_forms(tmp_path):
    quant = {"quantization_config": dict(FP8), "expert_dtype": "fp4"}
    official = official_form(rope_scaling={"type": "yarn", **YARN}, **quant)
    runtime = runtime_form(original_seq_len=2048, rope_factor=16, beta_fast=32, beta_slow=1)
    runtime.update(dtype="fp8", scale_fmt="ue8m0", expert_dtype="fp4")
    older = older_transformers_form(
        rope_scaling={"rope_type": "yarn", **YARN},
        quantization_config={**FP8, "expert_dtype": "fp4"},
    )
    return [official, runtime, older, saved_by_transformers(official, tmp_path)]


def plain_forms(tmp_path):
    official = official_form()  # no rope_scaling: plain RoPE everywhere
    runtime = runtime_form(original_seq_len=0, rope_factor=40)  # YaRN off: factor unused
    current = older_transformers_form(
        rope_parameters={
            "main": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25},
            "compress": {"rope_type": "default", "rope_theta": 160000.0},
        }
    )
    return [
        official,
        runtime,
        older_transformers_form(),
        current,
        saved_by_transformers(official, tmp_path),
    ]


def rates_forms(tmp_path):
    rates = {"compressed_sparse_attention": 8, "heavily_compressed_attention": 16}
    official = official_form(compress_rates=rates)  # what to_official_dict writes for it
    legacy = older_transformers_form(compress_rate_csa=8, compress_rate_hca=16)
    return [official, legacy, saved_by_transformers(legacy, tmp_path)]


@pytest.mark.parametrize(
    "model, forms",
    [(YARN_MODEL, yarn_forms), (PLAIN_MODEL, plain_forms), (RATES_MODEL, rates_forms)],
    ids=["yarn", "plain-rope", "compress-rates"],
)
def test_every_form_of_one_model_reads_the_same(model, forms, tmp_path):
    want = ModelConfig(**model)
    for i, raw in enumerate(forms(tmp_path)):
        assert ModelConfig.from_dict(raw, SOURCE) == want, i


def test_transformers_current_form_has_rope_parameters_and_compress_rates(tmp_path):
    """The current transformers form really is the one the other tests read."""
    saved = rates_forms(tmp_path)[-1]
    assert saved["compress_rates"] == {
        "compressed_sparse_attention": 8,
        "heavily_compressed_attention": 16,
    }
    assert saved["rope_parameters"]["compress"]["rope_type"] == "default"
    assert set(saved["rope_parameters"]) == {"main", "compress"}
    assert "compress_ratios" not in saved and saved["layer_types"] == LAYER_TYPES


def test_plain_rope_loads_as_plain_rope_not_yarn():
    config = ModelConfig.from_dict(official_form())
    assert config.compress_rope_type == "default"
    raw = older_transformers_form(
        rope_parameters={
            "main": {"rope_type": "default", "rope_theta": 10000.0},
            "compress": {"rope_type": "yarn", "rope_theta": 4e4, "attention_factor": 1.0, **YARN},
        }
    )
    del raw["compress_rope_theta"]  # the branch's theta alone
    config = ModelConfig.from_dict(raw)
    assert config.compress_rope_type == "yarn" and config.compress_rope_theta == 40000.0


def test_official_config_describes_flash():
    config = ModelConfig.from_file(OFFICIAL / "config.json")
    assert config.num_hidden_layers == 43
    kinds = config.layer_kinds
    assert kinds[:3] == ["sliding", "sliding", "csa"]
    assert kinds.count("csa") == 21 and kinds.count("hca") == 20 and kinds.count("sliding") == 2
    assert all(kinds[i] == "hca" for i in range(3, 43, 2))
    assert [config.layer_ratio(i) for i in range(4)] == [0, 0, 4, 128]
    assert config.mtp_compress_ratios == [0]
    assert config.num_hash_layers == 3 and config.qk_rope_head_dim == 64
    assert config.compress_rope_type == "yarn"
    assert config.rope_factor == 16 and config.original_max_position_embeddings == 65536
    assert config.quantization["weight_block_size"] == [128, 128]


def test_compression_rates_set_each_layer_and_the_clean_state_block():
    config = tiny_config("tiny-rates")  # CSA 8, HCA 16
    assert config.layer_kinds == ["csa", "hca", "sliding", "csa"]
    assert [config.layer_ratio(i) for i in range(4)] == [8, 16, 0, 8]
    assert config.compress_block == 16
    assert tiny_config("tiny").compress_block == 128


def test_official_runtime_and_transformers_read_the_flash_files_alike(tmp_path):
    official = ModelConfig.from_file(OFFICIAL / "config.json")
    runtime = ModelConfig.from_file(OFFICIAL / "inference_config.json")
    # the initial official config.json predates its expert_dtype key; the runtime's has it
    assert runtime == official.replace(expert_dtype="fp4")
    raw = json.loads((OFFICIAL / "config.json").read_text())
    assert ModelConfig.from_dict(saved_by_transformers(raw, tmp_path)) == official


@pytest.mark.parametrize("preset", ["tiny", "tiny-csa", "tiny-hca", "tiny-rates"])
def test_written_config_reads_back_equal(preset):
    config = tiny_config(preset, kv_quant_sim=preset == "tiny-csa")
    assert ModelConfig.from_dict(config.to_official_dict()) == config
    quantized = config.replace(quantization=FP8, expert_dtype="fp4")
    assert ModelConfig.from_dict(quantized.to_official_dict()) == quantized


@pytest.mark.parametrize("preset", ["tiny", "tiny-rates"])
def test_transformers_reads_what_we_write_as_the_same_model(preset, tmp_path):
    transformers = pytest.importorskip("transformers")
    config = tiny_config(preset)
    hf = transformers.DeepseekV4Config(**config.to_official_dict())
    kinds = {"sliding": KINDS[0], "csa": KINDS[1], "hca": KINDS[2]}
    assert hf.layer_types == [kinds[k] for k in config.layer_kinds]
    assert hf.compress_rates == {
        KINDS[1]: config.csa_compress_ratio,
        KINDS[2]: config.hca_compress_ratio,
    }
    assert hf.mlp_layer_types[: config.num_hash_layers + 1] == ["hash_moe"] * (
        config.num_hash_layers
    ) + ["moe"]
    assert hf.rope_parameters["compress"]["rope_type"] == config.compress_rope_type
    assert hf.qk_rope_head_dim == config.qk_rope_head_dim
    hf.save_pretrained(tmp_path)
    assert ModelConfig.from_file(tmp_path) == config


def test_every_key_is_honoured_refused_or_informational():
    handlings = {key.handling for key in KEYS.values()}
    assert handlings == {"field", "fixed", "read", "ignored"}
    fields = set(ModelConfig.__dataclass_fields__)
    assert {k.target for k in KEYS.values() if k.handling == "field"} <= fields
    assert all(k.note for k in KEYS.values() if k.handling in ("fixed", "ignored"))


# ---- refusals ----------------------------------------------------------------------------
def with_rope(compress, main=None):
    main = main or {"rope_type": "default", "rope_theta": 10000.0}
    return official_form(rope_parameters={"main": main, "compress": compress})


@pytest.mark.parametrize(
    "raw, needles",
    [
        (
            official_form(foo_bar=1, attn_impl="x"),
            ["unknown config keys", "'attn_impl', 'foo_bar'"],
        ),
        (official_form(attention_bias=True), ["attention_bias = true", "use false"]),
        (official_form(mlp_bias=True), ["mlp_bias"]),
        (official_form(hidden_act="gelu"), ["hidden_act", '"silu"']),
        (official_form(num_key_value_heads=2), ["num_key_value_heads", "use 1"]),
        (official_form(tie_word_embeddings=True), ["tie_word_embeddings"]),
        (official_form(scoring_func="softmax"), ["scoring_func", "sqrtsoftplus"]),
        (official_form(norm_topk_prob=False), ["norm_topk_prob"]),
        (official_form(n_shared_experts=2), ["n_shared_experts"]),
        (official_form(model_type="deepseek_v3"), ["model_type"]),
        (official_form(attention_dropout=0.1), ["attention_dropout"]),
        (official_form(hidden_size="48"), ["hidden_size must be an integer"]),
        (official_form(swiglu_limit=0), ["swiglu_limit"]),
        (runtime_form(original_seq_len=0, hidden_size=64), ["dim = 48 and hidden_size = 64"]),
        (
            official_form(compress_ratios=[0, 4, 8, 4]),
            ["compress_ratios contains [8]", "compress_rates"],
        ),
        (official_form(compress_ratios=[0, 4]), ["2 entries", "num_hidden_layers is 4"]),
        (official_form(layer_types=[KINDS[0]] * 4), ["compress_ratios and layer_types"]),
        (official_form(compress_rates={KINDS[0]: 2}), ["compress_rates must map"]),
        (
            official_form(compress_rates={KINDS[2]: 8}, compress_rate_hca=16),
            ["compress_rates.heavily_compressed_attention = 8", "compress_rate_hca = 16"],
        ),
        (official_form(compress_rate_csa=0), ["compress_rate_csa must be a positive integer"]),
        (official_form(mlp_layer_types=["moe", "hash_moe", "moe", "moe"]), ["mlp_layer_types"]),
        (official_form(mlp_layer_types=MLP_TYPES, num_hash_layers=2), ["disagree"]),
        (
            official_form(rope_scaling={"type": "yarn", **YARN, "attention_factor": 1.277}),
            ["rope_scaling.attention_factor = 1.277", "use 1.0"],
        ),
        (official_form(rope_scaling={"type": "yarn", **YARN, "mscale": 1.0}), ["['mscale']"]),
        (official_form(rope_scaling={"type": "yarn", **YARN, "truncate": False}), ["truncate"]),
        (official_form(rope_scaling={"type": "yarn", "factor": 4}), ["no original_max_position"]),
        (
            official_form(rope_scaling={"type": "linear", "factor": 4}),
            ["'linear' is not supported"],
        ),
        (
            official_form(rope_scaling={"type": "yarn", **YARN}, rope_parameters={"factor": 2}),
            ["rope_parameters and rope_scaling"],
        ),
        (
            with_rope({"rope_type": "yarn", **YARN}),
            ["rope_parameters.compress is YaRN without attention_factor", "add attention_factor"],
        ),
        (
            with_rope({"rope_type": "default", "factor": 16}),
            ["rope_parameters.compress has keys ['factor']", "'yarn'"],
        ),
        (
            with_rope({"rope_type": "default"}, {"rope_type": "yarn", **YARN}),
            ["rope_parameters.main.rope_type 'yarn'", "plain RoPE"],
        ),
        (
            with_rope({"rope_type": "default", "partial_rotary_factor": 0.5}),
            ["rope_parameters.compress.partial_rotary_factor", "disagree"],
        ),
        (
            with_rope({"rope_type": "default", "rope_theta": 5.0}),
            ["compress_rope_theta = 160000.0", "rope_parameters.compress.rope_theta = 5.0"],
        ),
        (
            with_rope({"rope_type": "default"}) | {"partial_rotary_factor": 0.3},
            ["partial_rotary_factor 0.3", "not a whole number"],
        ),
        (
            official_form(quantization_config={"quant_method": "awq", "bits": 4}),
            ["quantization_config", "FP8"],
        ),
        (official_form(expert_dtype="int4"), ["expert_dtype 'int4'"]),
        (runtime_form(), ["runtime config", "original_seq_len"]),
        (runtime_form(original_seq_len=4096), ["needs rope_factor"]),
        ({"vocab_size": 384}, ["no layer schedule"]),
        ([1, 2], ["must be a JSON object"]),
    ],
)
def test_keys_we_cannot_honour_are_refused_by_name(raw, needles):
    with pytest.raises(ConfigError) as info:
        ModelConfig.from_dict(raw, SOURCE)
    message = str(info.value)
    assert message.startswith(SOURCE), message
    for needle in needles:
        assert needle in message, message


def test_yarn_fields_with_plain_rope_are_refused():
    with pytest.raises(ConfigError, match=r"\['rope_factor'\].*YaRN only"):
        tiny_config("tiny-rates", rope_factor=4.0)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"compress_ratios": [0, 4, 64, 4]}, "allowed values are 0, 4 and 128"),
        ({"compress_ratios": [0, 4]}, "one ratio per layer"),
        ({"hca_compress_ratio": 0}, "hca_compress_ratio must be >= 1"),
        ({"compress_rope_type": "linear"}, "compress_rope_type 'linear'"),
    ],
)
def test_bad_configs_are_rejected(change, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config("tiny", **change)


def test_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="no config.json"):
        ModelConfig.from_file(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(official_form(attention_bias=True)))
    with pytest.raises(ConfigError, match=f"^{tmp_path / 'config.json'}: attention_bias"):
        ModelConfig.from_file(tmp_path)
