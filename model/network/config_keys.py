"""The config.json keys `ModelConfig` reads, in every form it accepts, and what each one means.

Forms: the official HF-format `config.json`; DeepSeek's runtime `inference/config.json` (its
`ModelArgs` names); transformers' `DeepseekV4Config`, with its older keys (`layer_types`,
`mlp_layer_types`, `partial_rotary_factor`, `rope_scaling`) and its current ones (`rope_parameters`
per RoPE branch, `compress_rates`). `KEYS` is the one table: a key is a model field, fixed at the
one value this network implements, read by one of the structured readers below (layer schedule,
hash routing, RoPE, quantization), or informational. Every other key is refused by name, and so
is any value the network cannot honour: a config we cannot follow must never load as a silently
different model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

# Layer kinds as the official compress_ratios writes them, and transformers' names for them.
LAYER_KIND_BY_CODE = {0: "sliding", 4: "csa", 128: "hca"}
CODE_BY_KIND = {v: k for k, v in LAYER_KIND_BY_CODE.items()}
HF_LAYER_TYPE_BY_KIND = {
    "sliding": "sliding_attention",
    "csa": "compressed_sparse_attention",
    "hca": "heavily_compressed_attention",
}
KIND_BY_HF_LAYER_TYPE = {v: k for k, v in HF_LAYER_TYPE_BY_KIND.items()}
DEFAULT_COMPRESS_RATES = {"csa": 4, "hca": 128}
# transformers' default share of head_dim that carries RoPE (64 of 512)
DEFAULT_PARTIAL_ROTARY_FACTOR = 64 / 512
DEFAULT_HASH_LAYERS = 3

Handling = Literal["field", "fixed", "read", "ignored"]


class ConfigError(ValueError):
    """A config file or dict that cannot describe a V4 model."""


@dataclass(frozen=True)
class Key:
    """How one config key is read.

    handling: "field" copies the value to `ModelConfig.<target>`; "fixed" accepts only `value`
    (`note` says why); "read" leaves the key to the structured reader named by `target`;
    "ignored" keys do not change the network (`note` says why). `runtime_only` keys exist only in
    DeepSeek's runtime config (their presence identifies that form); `runtime_required` keys must
    be present there, because that runtime's own defaults for them describe another model.
    `official`: a fixed key the official config.json writes (and `to_official_dict` with it).
    """

    handling: Handling
    target: str = ""
    value: Any = None
    note: str = ""
    runtime_only: bool = False
    runtime_required: bool = False
    official: bool = False


def _field(name: str, runtime_only: bool = False, required: bool = False) -> Key:
    return Key("field", name, runtime_only=runtime_only, runtime_required=required)


def _fixed(value: Any, note: str, official: bool = True, runtime_only: bool = False) -> Key:
    return Key("fixed", value=value, note=note, official=official, runtime_only=runtime_only)


def _read(reader: str, runtime_only: bool = False, required: bool = False) -> Key:
    return Key("read", reader, runtime_only=runtime_only, runtime_required=required)


def _ignored(note: str, runtime_only: bool = False) -> Key:
    return Key("ignored", note=note, runtime_only=runtime_only)


_TRAINING = "training-only (router losses and noise)"
_METADATA = "metadata of transformers' config class, not of the network"
_STORAGE = "the stored dtype; each tensor's own dtype is read from the checkpoint"

KEYS: dict[str, Key] = {
    # ---- model fields (official / transformers name, then the runtime's) ----
    "vocab_size": _field("vocab_size", required=True),
    "hidden_size": _field("hidden_size"),
    "dim": _field("hidden_size", runtime_only=True, required=True),
    "num_hidden_layers": _field("num_hidden_layers"),
    "n_layers": _field("num_hidden_layers", runtime_only=True, required=True),
    "num_attention_heads": _field("num_attention_heads"),
    "n_heads": _field("num_attention_heads", runtime_only=True, required=True),
    "head_dim": _field("head_dim", required=True),
    "q_lora_rank": _field("q_lora_rank", required=True),
    "o_groups": _field("o_groups", required=True),
    "o_lora_rank": _field("o_lora_rank", required=True),
    "sliding_window": _field("sliding_window"),
    "window_size": _field("sliding_window", runtime_only=True, required=True),
    "max_position_embeddings": _field("max_position_embeddings"),
    "rms_norm_eps": _field("rms_norm_eps"),
    "norm_eps": _field("rms_norm_eps", runtime_only=True),
    "hc_mult": _field("hc_mult", required=True),
    "hc_sinkhorn_iters": _field("hc_sinkhorn_iters", required=True),
    "hc_eps": _field("hc_eps"),
    "moe_intermediate_size": _field("moe_intermediate_size"),
    "moe_inter_dim": _field("moe_intermediate_size", runtime_only=True, required=True),
    "n_routed_experts": _field("n_routed_experts", required=True),
    "num_experts_per_tok": _field("num_experts_per_tok"),
    "n_activated_experts": _field("num_experts_per_tok", runtime_only=True, required=True),
    "routed_scaling_factor": _field("routed_scaling_factor"),
    "route_scale": _field("routed_scaling_factor", runtime_only=True, required=True),
    "swiglu_limit": _field("swiglu_limit", required=True),
    "index_n_heads": _field("index_n_heads", required=True),
    "index_head_dim": _field("index_head_dim", required=True),
    "index_topk": _field("index_topk", required=True),
    "num_nextn_predict_layers": _field("num_nextn_predict_layers"),
    "n_mtp_layers": _field("num_nextn_predict_layers", runtime_only=True),
    "bos_token_id": _field("bos_token_id"),
    "eos_token_id": _field("eos_token_id"),
    "kv_quant_sim": _field("kv_quant_sim"),
    # ---- honoured at one value only ----
    "model_type": _fixed("deepseek_v4", "this network is DeepSeek-V4"),
    "attention_bias": _fixed(False, "V4's attention projections have no biases"),
    "attention_dropout": _fixed(0.0, "the network has no dropout"),
    "hidden_act": _fixed("silu", "the experts gate with SiLU (SwiGLU)"),
    "num_key_value_heads": _fixed(1, "V4 attends over one shared K=V head"),
    "topk_method": _fixed("noaux_tc", "experts are picked by bias-corrected top-k, no groups"),
    "n_shared_experts": _fixed(1, "each MoE has exactly one shared expert"),
    "scoring_func": _fixed("sqrtsoftplus", "the router scores with sqrt(softplus)"),
    "score_func": _fixed(
        "sqrtsoftplus", "the router scores with sqrt(softplus)", False, runtime_only=True
    ),
    "norm_topk_prob": _fixed(True, "routing weights are always normalised over the top-k"),
    "tie_word_embeddings": _fixed(False, "V4 has its own head.weight"),
    "mlp_bias": _fixed(False, "the experts have no biases", official=False),
    # ---- read by the structured readers below ----
    "compress_ratios": _read("schedule", required=True),
    "layer_types": _read("schedule"),
    "compress_rates": _read("schedule"),
    "compress_rate_csa": _read("schedule"),
    "compress_rate_hca": _read("schedule"),
    "num_hash_layers": _read("hash"),
    "n_hash_layers": _read("hash", runtime_only=True, required=True),
    "mlp_layer_types": _read("hash"),
    "qk_rope_head_dim": _read("rope"),
    "rope_head_dim": _read("rope", runtime_only=True, required=True),
    "partial_rotary_factor": _read("rope"),
    "rope_theta": _read("rope", required=True),
    "compress_rope_theta": _read("rope", required=True),
    "rope_scaling": _read("rope"),
    "rope_parameters": _read("rope"),
    "original_seq_len": _read("rope", runtime_only=True, required=True),
    "rope_factor": _read("rope", runtime_only=True),
    "beta_fast": _read("rope", runtime_only=True),
    "beta_slow": _read("rope", runtime_only=True),
    "quantization_config": _read("quantization"),
    "expert_dtype": _read("quantization"),
    "dtype": _read("quantization"),
    "scale_fmt": _read("quantization", runtime_only=True),
    # ---- informational: do not change the network ----
    "architectures": _ignored("names the class that reads the file"),
    "transformers_version": _ignored("the transformers version that wrote the file"),
    "torch_dtype": _ignored(_STORAGE),
    "initializer_range": _ignored("initialisation of fresh weights, not of loaded ones"),
    "use_cache": _ignored("a generation setting; the engine always caches"),
    "pad_token_id": _ignored("the network never looks up a padding token"),
    "router_aux_loss_coef": _ignored(_TRAINING),
    "router_jitter_noise": _ignored(_TRAINING),
    "output_router_logits": _ignored(_TRAINING),
    "id2label": _ignored(_METADATA),
    "label2id": _ignored(_METADATA),
    "problem_type": _ignored(_METADATA),
    "_name_or_path": _ignored(_METADATA),
    "chunk_size_feed_forward": _ignored(_METADATA),
    "is_encoder_decoder": _ignored(_METADATA),
    "output_attentions": _ignored(_METADATA),
    "output_hidden_states": _ignored(_METADATA),
    "return_dict": _ignored(_METADATA),
    "max_batch_size": _ignored("a buffer size of DeepSeek's runtime", runtime_only=True),
    "max_seq_len": _ignored("a buffer size of DeepSeek's runtime", runtime_only=True),
    "scale_dtype": _ignored("how DeepSeek's runtime stores activation scales", runtime_only=True),
}

# Keys of a RoPE branch dict; a branch without rope_type means plain RoPE (transformers' rule).
_ROPE_COMMON = {"rope_type", "type", "rope_theta", "partial_rotary_factor"}
_YARN_KEYS = _ROPE_COMMON | {
    "factor",
    "original_max_position_embeddings",
    "beta_fast",
    "beta_slow",
    "attention_factor",
    "truncate",
}
_QUANTIZATION_KEYS = {
    "quant_method",
    "fmt",
    "scale_fmt",
    "weight_block_size",
    "activation_scheme",
    "expert_dtype",
}
_EXPERT_DTYPES = (None, "fp8", "fp4")
# quantization_config of the official checkpoint (and what the runtime's dtype "fp8" means)
FP8_QUANTIZATION_CONFIG = {
    "quant_method": "fp8",
    "fmt": "e4m3",
    "scale_fmt": "ue8m0",
    "weight_block_size": [128, 128],
    "activation_scheme": "dynamic",
}


def read_config(raw: Any, source: str, defaults: dict[str, Any]) -> dict[str, Any]:
    """`ModelConfig` keyword arguments from a config dict in any accepted form.

    `defaults`: ModelConfig's field defaults (for what a key's absence means). Raises
    `ConfigError` naming `source`, the key and what would work.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a config must be a JSON object, got {type(raw).__name__}")
    unknown = sorted(k for k in raw if k not in KEYS)
    if unknown:
        raise ConfigError(
            f"{source}: unknown config keys {unknown}: not keys of the official, runtime or "
            "transformers DeepSeek-V4 config; remove them (docs/model.md lists every key read)"
        )
    runtime = any(KEYS[k].runtime_only for k in raw)
    if runtime:
        missing = [k for k, key in KEYS.items() if key.runtime_required and k not in raw]
        if missing:
            raise ConfigError(
                f"{source}: a DeepSeek runtime config (it has {_runtime_keys(raw)}) without "
                f"{missing}: that runtime fills in defaults of another model for them; write "
                "them out"
            )
    reader = _Reader(raw, source, defaults)
    for name, value in raw.items():
        key = KEYS[name]
        if key.handling == "field":
            reader.set(key.target, value, name)
        elif key.handling == "fixed" and not _same(value, key.value):
            raise ConfigError(
                f"{source}: {name} = {json_value(value)} cannot be honoured ({key.note}); "
                f"use {json_value(key.value)} or leave it out"
            )
    reader.schedule()
    reader.hash_layers()
    reader.rope(runtime)
    reader.quantization()
    return reader.kw


def json_value(value: Any) -> str:
    """A value as a config.json would spell it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value).replace("'", '"')


def _runtime_keys(raw: dict[str, Any]) -> list[str]:
    return [k for k in raw if KEYS[k].runtime_only][:3]


def _same(a: Any, b: Any) -> bool:
    """Equal config values, telling booleans from numbers (true is not 1)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


class _Reader:
    """Collects keyword arguments; every setter checks that two keys meaning the same thing
    agree, so no key of a file is silently overruled by another."""

    def __init__(self, raw: dict[str, Any], source: str, defaults: dict[str, Any]) -> None:
        self.raw, self.source, self.defaults = raw, source, defaults
        self.kw: dict[str, Any] = {}
        self._from: dict[str, str] = {}

    def fail(self, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {message}")

    def set(self, field: str, value: Any, key: str) -> None:
        if field in self.kw and not _same(self.kw[field], value):
            raise self.fail(
                f"{self._from[field]} = {self.kw[field]!r} and {key} = {value!r} disagree "
                f"(both set {field}); keep one"
            )
        self.kw[field] = value
        self._from.setdefault(field, key)

    def get(self, field: str) -> Any:
        return self.kw.get(field, self.defaults[field])

    # ---- attention schedule and compression rates ------------------------------------------
    def schedule(self) -> None:
        raw, n = self.raw, self.get("num_hidden_layers")
        codes = None
        if "compress_ratios" in raw:
            ratios = raw["compress_ratios"]
            bad = [
                r for r in _as_list(ratios, "compress_ratios", self) if r not in LAYER_KIND_BY_CODE
            ]
            if bad:
                raise self.fail(
                    f"compress_ratios contains {bad}: its entries are layer kinds as in the "
                    "official config (0 sliding, 4 CSA, 128 HCA); give other compression rates "
                    'with compress_rates {"compressed_sparse_attention": r, '
                    '"heavily_compressed_attention": r}'
                )
            if len(ratios) < n:
                raise self.fail(
                    f"compress_ratios has {len(ratios)} entries but num_hidden_layers is {n}; "
                    "give one per layer (plus optionally one for MTP)"
                )
            codes = list(ratios[:n])
            if len(ratios) > n:
                self.kw["mtp_compress_ratios"] = list(ratios[n:])
        if "layer_types" in raw:
            types = _as_list(raw["layer_types"], "layer_types", self)
            bad = [t for t in types if t not in KIND_BY_HF_LAYER_TYPE]
            if bad or len(types) != n:
                raise self.fail(
                    f"layer_types needs {n} entries (num_hidden_layers) from "
                    f"{sorted(KIND_BY_HF_LAYER_TYPE)}; got {len(types)}"
                    + (f" with unknown {bad}" if bad else "")
                )
            from_types = [CODE_BY_KIND[KIND_BY_HF_LAYER_TYPE[t]] for t in types]
            if codes is not None and codes != from_types:
                raise self.fail("compress_ratios and layer_types describe different layers")
            codes = from_types
        if codes is None:
            raise self.fail(
                "no layer schedule: give compress_ratios (official) or layer_types (transformers)"
            )
        self.kw["compress_ratios"] = codes
        rates = dict(DEFAULT_COMPRESS_RATES)
        given: dict[str, tuple[str, Any]] = {}
        if "compress_rates" in raw:
            table = raw["compress_rates"]
            names = {HF_LAYER_TYPE_BY_KIND[k]: k for k in rates}
            if not isinstance(table, dict) or set(table) - set(names):
                raise self.fail(
                    f"compress_rates must map {sorted(names)} to compression rates; got {table!r}"
                )
            for name, rate in table.items():
                given[names[name]] = (f"compress_rates.{name}", rate)
        for kind in rates:
            legacy = f"compress_rate_{kind}"
            if legacy in raw:
                if kind in given and given[kind][1] != raw[legacy]:
                    raise self.fail(
                        f"{given[kind][0]} = {given[kind][1]!r} and {legacy} = "
                        f"{raw[legacy]!r} disagree; keep one"
                    )
                given[kind] = (legacy, raw[legacy])
        for kind, (name, rate) in given.items():
            if not _is_int(rate) or rate < 1:
                raise self.fail(f"{name} must be a positive integer, got {rate!r}")
            rates[kind] = rate
        self.kw["csa_compress_ratio"], self.kw["hca_compress_ratio"] = rates["csa"], rates["hca"]

    # ---- hash-routed layers ---------------------------------------------------------------
    def hash_layers(self) -> None:
        raw, n = self.raw, self.get("num_hidden_layers")
        for key in ("num_hash_layers", "n_hash_layers"):
            if key in raw:
                self.set("num_hash_layers", raw[key], key)
        if "mlp_layer_types" in raw:
            types = _as_list(raw["mlp_layer_types"], "mlp_layer_types", self)
            count = next((i for i, t in enumerate(types) if t != "hash_moe"), len(types))
            if len(types) != n or any(t != "moe" for t in types[count:]):
                raise self.fail(
                    f"mlp_layer_types must be {n} entries (num_hidden_layers): 'hash_moe' for a "
                    "leading run of layers, then 'moe' (hash routing elsewhere is not "
                    f"implemented); got {types}"
                )
            self.set("num_hash_layers", count, "mlp_layer_types")
        if "num_hash_layers" not in self.kw:  # transformers' default, clipped to the layers
            self.kw["num_hash_layers"] = min(n, DEFAULT_HASH_LAYERS)

    # ---- RoPE: plain on sliding layers, plain or YaRN on compressed layers ------------------
    def rope(self, runtime: bool) -> None:
        raw = self.raw
        main, compress, where = self._rope_branches()
        runtime_rope = [
            k for k in ("original_seq_len", "rope_factor", "beta_fast", "beta_slow") if k in raw
        ]
        if runtime_rope and compress is not None:
            raise self.fail(
                f"{runtime_rope} (runtime keys) and {where} both describe the compressed layers' "
                "RoPE; keep one"
            )
        if "rope_theta" in raw:
            self.set("rope_theta", raw["rope_theta"], "rope_theta")
        if "compress_rope_theta" in raw:
            self.set("compress_rope_theta", raw["compress_rope_theta"], "compress_rope_theta")
        dims: list[tuple[str, Any]] = []
        for key in ("qk_rope_head_dim", "rope_head_dim"):
            if key in raw:
                dims.append((key, raw[key]))
        if "partial_rotary_factor" in raw and raw["partial_rotary_factor"] is not None:
            dims.append(("partial_rotary_factor", self._rope_dim(raw["partial_rotary_factor"])))
        if main is not None:
            self._rope_branch(main, "rope_parameters.main", {"default"}, dims)
            if "rope_theta" in main:
                self.set("rope_theta", main["rope_theta"], "rope_parameters.main.rope_theta")
        if compress is not None:
            self._compressed_rope(compress, where, nested=main is not None, dims=dims)
        elif runtime:
            self._runtime_rope()
        else:  # no scaling given: plain RoPE, as transformers reads it
            self.kw["compress_rope_type"] = "default"
        for key, dim in dims:
            self.set("qk_rope_head_dim", dim, key)
        if "qk_rope_head_dim" not in self.kw:
            self.kw["qk_rope_head_dim"] = self._rope_dim(DEFAULT_PARTIAL_ROTARY_FACTOR)

    def _rope_branches(self) -> tuple[dict | None, dict | None, str]:
        params, scaling = self.raw.get("rope_parameters"), self.raw.get("rope_scaling")
        if params is not None and scaling is not None:
            raise self.fail("rope_parameters and rope_scaling are both given; keep one")
        if params is None:
            return None, _as_dict(scaling, "rope_scaling", self), "rope_scaling"
        params = _as_dict(params, "rope_parameters", self)
        if "main" not in params and "compress" not in params:  # one flat dict: compressed layers
            return None, params, "rope_parameters"
        if set(params) != {"main", "compress"}:
            raise self.fail(
                "rope_parameters must hold exactly the branches 'main' and 'compress' (or be one "
                f"flat dict); got keys {sorted(params)}"
            )
        main = _as_dict(params["main"], "rope_parameters.main", self)
        compress = _as_dict(params["compress"], "rope_parameters.compress", self)
        return main, compress, "rope_parameters.compress"

    def _rope_branch(
        self, branch: dict, where: str, kinds: set[str], dims: list[tuple[str, Any]]
    ) -> str:
        """Check a branch's type and its partial_rotary_factor; returns its rope_type."""
        kind, alias = branch.get("rope_type"), branch.get("type")
        if kind is not None and alias is not None and kind != alias:
            raise self.fail(f"{where}.rope_type = {kind!r} and {where}.type = {alias!r} disagree")
        kind = kind or alias or "default"
        if kind not in kinds:
            what = "plain RoPE ('default')" if kinds == {"default"} else "'default' or 'yarn'"
            raise self.fail(f"{where}.rope_type {kind!r} is not supported; use {what}")
        allowed = _YARN_KEYS if kind == "yarn" else _ROPE_COMMON
        extra = sorted(set(branch) - allowed)
        if extra:
            fix = "remove them or use rope_type 'yarn'" if kind == "default" else "remove them"
            raise self.fail(f"{where} has keys {extra} that {kind!r} RoPE does not take; {fix}")
        if branch.get("partial_rotary_factor") is not None:
            factor = branch["partial_rotary_factor"]
            dims.append((f"{where}.partial_rotary_factor", self._rope_dim(factor)))
        return kind

    def _compressed_rope(
        self, branch: dict, where: str, nested: bool, dims: list[tuple[str, Any]]
    ) -> None:
        kind = self._rope_branch(branch, where, {"default", "yarn"}, dims)
        theta = branch.get("rope_theta")
        if theta is not None and nested:
            self.set("compress_rope_theta", theta, f"{where}.rope_theta")
        elif theta is not None and theta not in (
            self.get("rope_theta"),
            self.get("compress_rope_theta"),
        ):
            # a flat dict's theta: transformers fills in rope_theta, then uses compress_rope_theta
            raise self.fail(
                f"{where}.rope_theta = {theta!r} matches neither rope_theta nor "
                "compress_rope_theta; set compress_rope_theta instead"
            )
        self.kw["compress_rope_type"] = kind
        if kind == "default":
            return
        for key in ("factor", "original_max_position_embeddings"):
            if key not in branch:
                raise self.fail(f"{where} is YaRN but has no {key}; give it")
        if nested and "attention_factor" not in branch:
            raise self.fail(
                f"{where} is YaRN without attention_factor, which transformers then derives from "
                "the factor (0.1 ln(factor) + 1) and scales cos/sin by; V4 applies no such "
                "scaling: add attention_factor 1.0"
            )
        if branch.get("attention_factor", 1.0) != 1.0:
            raise self.fail(
                f"{where}.attention_factor = {branch['attention_factor']!r} cannot be honoured "
                "(V4 applies no YaRN magnitude scaling); use 1.0 or leave it out"
            )
        if branch.get("truncate", True) is not True:
            raise self.fail(
                f"{where}.truncate = {branch['truncate']!r} cannot be honoured (the YaRN ramp "
                "bounds are rounded to whole dims); use true or leave it out"
            )
        self._yarn(
            branch["factor"],
            branch["original_max_position_embeddings"],
            branch.get("beta_fast", 32),
            branch.get("beta_slow", 1),
            where + ".",
        )

    def _runtime_rope(self) -> None:
        """DeepSeek's runtime turns YaRN on for compressed layers iff original_seq_len > 0."""
        raw = self.raw
        original = raw["original_seq_len"]
        if not _is_int(original) or original < 0:
            raise self.fail(f"original_seq_len must be an integer >= 0, got {original!r}")
        if original == 0:
            self.kw["compress_rope_type"] = "default"
            return
        if "rope_factor" not in raw:
            raise self.fail("original_seq_len > 0 turns YaRN on, which needs rope_factor; give it")
        self.kw["compress_rope_type"] = "yarn"
        beta_fast, beta_slow = raw.get("beta_fast", 32), raw.get("beta_slow", 1)
        self._yarn(raw["rope_factor"], original, beta_fast, beta_slow, "")

    def _yarn(self, factor, original, beta_fast, beta_slow, prefix: str) -> None:
        names = ("rope_factor", "original_max_position_embeddings", "beta_fast", "beta_slow")
        keys = ("factor", "original_max_position_embeddings", "beta_fast", "beta_slow")
        if not prefix:  # runtime names
            keys = ("rope_factor", "original_seq_len", "beta_fast", "beta_slow")
        for field, key, value in zip(names, keys, (factor, original, beta_fast, beta_slow)):
            self.set(field, value, prefix + key)

    def _rope_dim(self, factor: Any) -> Any:
        """The RoPE width a partial_rotary_factor gives this head_dim (the factor itself if it
        does not give a whole number, so the check that follows names it)."""
        head_dim = self.get("head_dim")
        if not isinstance(factor, (int, float)) or isinstance(factor, bool):
            raise self.fail(f"partial_rotary_factor must be a number, got {factor!r}")
        width = factor * head_dim
        if not math.isclose(width, round(width), abs_tol=1e-9):
            raise self.fail(
                f"partial_rotary_factor {factor!r} x head_dim {head_dim} is not a whole number "
                "of dims; give qk_rope_head_dim instead"
            )
        return int(round(width))

    # ---- quantization ----------------------------------------------------------------------
    def quantization(self) -> None:
        raw = self.raw
        quant = None
        if raw.get("quantization_config") is not None:
            quant = dict(_as_dict(raw["quantization_config"], "quantization_config", self))
            extra = sorted(set(quant) - _QUANTIZATION_KEYS)
            if extra or quant.get("quant_method") != "fp8":
                raise self.fail(
                    "quantization_config: only FP8 block quantization is read (quant_method "
                    f"'fp8' with keys {sorted(_QUANTIZATION_KEYS)}); got {quant!r}"
                )
            for key, want in (("fmt", "e4m3"), ("weight_block_size", [128, 128])):
                if key in quant and quant[key] != want:
                    raise self.fail(
                        f"quantization_config.{key} must be {want!r}, got {quant[key]!r}"
                    )
            if "expert_dtype" in quant:
                self.set(
                    "expert_dtype", quant.pop("expert_dtype"), "quantization_config.expert_dtype"
                )
        if raw.get("dtype") == "fp8":  # the runtime's dtype: linears stored FP8
            runtime = {**FP8_QUANTIZATION_CONFIG, "scale_fmt": raw.get("scale_fmt", "ue8m0")}
            if quant is not None and quant != runtime:
                raise self.fail("quantization_config and dtype 'fp8' disagree; keep one")
            quant = runtime
        if quant is not None:
            self.kw["quantization"] = quant
        if "expert_dtype" in raw:
            self.set("expert_dtype", raw["expert_dtype"], "expert_dtype")
        if self.kw.get("expert_dtype") not in _EXPERT_DTYPES:
            raise self.fail(
                f"expert_dtype {self.kw['expert_dtype']!r} is not supported; use one of "
                f"{list(_EXPERT_DTYPES)}"
            )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _as_list(value: Any, key: str, reader: _Reader) -> list:
    if not isinstance(value, list):
        raise reader.fail(f"{key} must be a list, got {value!r}")
    return value


def _as_dict(value: Any, key: str, reader: _Reader) -> dict | None:
    if value is not None and not isinstance(value, dict):
        raise reader.fail(f"{key} must be an object, got {value!r}")
    return value
