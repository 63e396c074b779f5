"""ModelConfig: V4-Flash hyper-parameters from official, runtime or transformers configs."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LAYER_KIND_BY_RATIO = {0: "sliding", 4: "csa", 128: "hca"}
HF_LAYER_TYPE_BY_RATIO = {
    0: "sliding_attention",
    4: "compressed_sparse_attention",
    128: "heavily_compressed_attention",
}
RATIO_BY_HF_LAYER_TYPE = {v: k for k, v in HF_LAYER_TYPE_BY_RATIO.items()}

# Official runtime (inference/config.json) key -> our field name.
_RUNTIME_KEYS = {
    "dim": "hidden_size",
    "moe_inter_dim": "moe_intermediate_size",
    "n_layers": "num_hidden_layers",
    "n_hash_layers": "num_hash_layers",
    "n_heads": "num_attention_heads",
    "n_activated_experts": "num_experts_per_tok",
    "score_func": "scoring_func",
    "route_scale": "routed_scaling_factor",
    "rope_head_dim": "qk_rope_head_dim",
    "window_size": "sliding_window",
    "norm_eps": "rms_norm_eps",
}


class ConfigError(ValueError):
    """A config file or dict that cannot describe a V4 model."""


@dataclass
class ModelConfig:
    """Hyper-parameters of a DeepSeek-V4 network (defaults are V4-Flash).

    `compress_ratios` holds one entry per backbone layer (0 sliding, 4 CSA, 128 HCA); the
    official file's extra trailing MTP entry is kept in `mtp_compress_ratios`.
    """

    vocab_size: int = 129280
    hidden_size: int = 4096
    num_hidden_layers: int = 43
    num_attention_heads: int = 64
    head_dim: int = 512
    qk_rope_head_dim: int = 64
    q_lora_rank: int = 1024
    o_groups: int = 8
    o_lora_rank: int = 1024
    sliding_window: int = 128
    compress_ratios: list[int] = field(
        default_factory=lambda: [0, 0] + [4 if i % 2 == 0 else 128 for i in range(2, 43)]
    )
    mtp_compress_ratios: list[int] = field(default_factory=lambda: [0])
    rope_theta: float = 10000.0
    compress_rope_theta: float = 160000.0
    rope_factor: float = 16.0
    original_max_position_embeddings: int = 65536
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    max_position_embeddings: int = 1048576
    rms_norm_eps: float = 1e-6
    hc_mult: int = 4
    hc_sinkhorn_iters: int = 20
    hc_eps: float = 1e-6
    moe_intermediate_size: int = 2048
    n_routed_experts: int = 256
    n_shared_experts: int = 1
    num_experts_per_tok: int = 6
    num_hash_layers: int = 3
    scoring_func: str = "sqrtsoftplus"
    routed_scaling_factor: float = 1.5
    norm_topk_prob: bool = True
    swiglu_limit: float = 10.0
    index_n_heads: int = 64
    index_head_dim: int = 128
    index_topk: int = 512
    num_nextn_predict_layers: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 1
    tie_word_embeddings: bool = False
    quantization: dict[str, Any] | None = None
    expert_dtype: str | None = None
    # Round cached KV as the official runtime does (spec pitfall 13): FP8 for the no-rope dims
    # of window and compressed KV, Hadamard + FP4 for the indexer's queries and keys. Off by
    # default, as in transformers; config.json key `kv_quant_sim`, or `load_model(...)`.
    kv_quant_sim: bool = False

    def __post_init__(self) -> None:
        self.validate()

    # ---- derived -------------------------------------------------------------------------
    @property
    def layer_kinds(self) -> list[str]:
        return [LAYER_KIND_BY_RATIO[r] for r in self.compress_ratios]

    @property
    def compress_block(self) -> int:
        """Token count after which every compressor's partial buffer is empty (lcm of ratios)."""
        block = 1
        for r in self.compress_ratios:
            if r:
                block = block * r // _gcd(block, r)
        return block

    def is_hash_layer(self, layer: int) -> bool:
        return layer < self.num_hash_layers

    # ---- checks --------------------------------------------------------------------------
    def validate(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(msg)

        need(
            len(self.compress_ratios) == self.num_hidden_layers,
            f"compress_ratios has {len(self.compress_ratios)} entries but num_hidden_layers is "
            f"{self.num_hidden_layers}; give one ratio per layer (plus optionally one for MTP)",
        )
        bad = sorted({r for r in self.compress_ratios if r not in LAYER_KIND_BY_RATIO})
        need(not bad, f"compress_ratios contains {bad}; allowed values are 0, 4 and 128")
        need(self.num_attention_heads % self.o_groups == 0, "num_attention_heads % o_groups != 0")
        need(self.qk_rope_head_dim % 2 == 0, "qk_rope_head_dim must be even")
        need(self.qk_rope_head_dim <= self.head_dim, "qk_rope_head_dim must be <= head_dim")
        need(self.qk_rope_head_dim <= self.index_head_dim, "qk_rope_head_dim > index_head_dim")
        need(self.n_shared_experts == 1, "only n_shared_experts = 1 is supported")
        need(
            self.num_experts_per_tok <= self.n_routed_experts,
            "num_experts_per_tok exceeds n_routed_experts",
        )
        need(
            self.scoring_func == "sqrtsoftplus",
            f"scoring_func {self.scoring_func!r} is not supported (V4 uses 'sqrtsoftplus')",
        )
        need(self.sliding_window >= 1, "sliding_window must be >= 1")
        need(0 <= self.num_hash_layers <= self.num_hidden_layers, "bad num_hash_layers")
        need(
            isinstance(self.kv_quant_sim, bool),
            f"kv_quant_sim must be true or false, got {self.kv_quant_sim!r}",
        )
        width = self.index_head_dim
        need(
            not (self.kv_quant_sim and 4 in self.compress_ratios and width & (width - 1)),
            f"kv_quant_sim rotates the indexer's {width} dims with a Hadamard transform, which "
            "needs a power of two; set index_head_dim to one or turn kv_quant_sim off",
        )

    # ---- reading -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "<dict>") -> ModelConfig:
        """Build from an official HF-format, official runtime or transformers-style dict."""
        d = dict(raw)
        for old, new in _RUNTIME_KEYS.items():
            if old in d and new not in d:
                d[new] = d.pop(old)
        kw: dict[str, Any] = {}
        names = {f.name for f in dataclasses.fields(cls)}
        for k, v in d.items():
            if k in names and k not in ("compress_ratios", "mtp_compress_ratios", "quantization"):
                kw[k] = v
        n_layers = int(d.get("num_hidden_layers", cls.num_hidden_layers))
        ratios = d.get("compress_ratios")
        if ratios is None and d.get("layer_types") is not None:
            try:
                ratios = [RATIO_BY_HF_LAYER_TYPE[t] for t in d["layer_types"]]
            except KeyError as e:
                raise ConfigError(
                    f"{source}: unknown layer type {e.args[0]!r} in layer_types"
                ) from None
        if ratios is not None:
            ratios = [int(r) for r in ratios]
            kw["compress_ratios"] = ratios[:n_layers]
            if len(ratios) > n_layers:
                kw["mtp_compress_ratios"] = ratios[n_layers:]
        elif n_layers != cls.num_hidden_layers:
            raise ConfigError(f"{source}: needs compress_ratios (or layer_types) for its layers")
        if "mlp_layer_types" in d and "num_hash_layers" not in d:
            kw["num_hash_layers"] = sum(1 for t in d["mlp_layer_types"] if t == "hash_moe")
        if (
            "partial_rotary_factor" in d
            and "qk_rope_head_dim" not in d
            and d["partial_rotary_factor"]
        ):
            kw["qk_rope_head_dim"] = int(
                round(d["partial_rotary_factor"] * kw.get("head_dim", 512))
            )
        _read_rope(d, kw)
        if "original_seq_len" in d:
            kw["original_max_position_embeddings"] = int(d["original_seq_len"])
        q = d.get("quantization_config")
        if q is None and d.get("dtype") == "fp8":  # official runtime config
            q = {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [128, 128]}
        if q is not None:
            kw["quantization"] = dict(q)
            if "expert_dtype" in q and "expert_dtype" not in kw:
                kw["expert_dtype"] = q["expert_dtype"]
        if isinstance(kw.get("eos_token_id"), list):
            kw["eos_token_id"] = kw["eos_token_id"][0]
        try:
            return cls(**kw)
        except (TypeError, ConfigError) as e:
            raise ConfigError(f"{source}: {e}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> ModelConfig:
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: no config.json; a checkpoint directory needs one") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from None
        return cls.from_dict(raw, source=str(path))

    # ---- writing -------------------------------------------------------------------------
    def to_official_dict(self) -> dict[str, Any]:
        """The official HF-format config.json (which transformers also reads)."""
        d: dict[str, Any] = {
            "architectures": ["DeepseekV4ForCausalLM"],
            "model_type": "deepseek_v4",
            "attention_bias": False,
            "attention_dropout": 0.0,
            "hidden_act": "silu",
            "num_key_value_heads": 1,
            "topk_method": "noaux_tc",
            "torch_dtype": "bfloat16",
        }
        skip = {"compress_ratios", "mtp_compress_ratios", "quantization", "expert_dtype"}
        skip |= set() if self.kv_quant_sim else {"kv_quant_sim"}  # not an official key
        skip |= {"rope_factor", "original_max_position_embeddings", "beta_fast", "beta_slow"}
        for f in dataclasses.fields(self):
            if f.name not in skip:
                d[f.name] = getattr(self, f.name)
        d["compress_ratios"] = list(self.compress_ratios) + list(self.mtp_compress_ratios)
        d["rope_scaling"] = {
            "type": "yarn",
            "factor": self.rope_factor,
            "original_max_position_embeddings": self.original_max_position_embeddings,
            "beta_fast": self.beta_fast,
            "beta_slow": self.beta_slow,
        }
        if self.quantization is not None:
            d["quantization_config"] = dict(self.quantization)
        if self.expert_dtype is not None:
            d["expert_dtype"] = self.expert_dtype
        return d

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)


def _read_rope(d: dict[str, Any], kw: dict[str, Any]) -> None:
    """rope_scaling (official) or rope_parameters['compress'] (transformers) -> YaRN fields."""
    scaling = d.get("rope_scaling")
    params = d.get("rope_parameters")
    if isinstance(params, dict) and isinstance(params.get("compress"), dict):
        scaling = params["compress"]
        if "rope_theta" in scaling:
            kw["compress_rope_theta"] = scaling["rope_theta"]
        main = params.get("main")
        if isinstance(main, dict) and "rope_theta" in main:
            kw["rope_theta"] = main["rope_theta"]
    if "rope_factor" in d:  # official runtime config
        kw["rope_factor"] = d["rope_factor"]
    if not isinstance(scaling, dict):
        return
    kind = scaling.get("rope_type", scaling.get("type", "yarn"))
    if kind != "yarn":
        raise ConfigError(f"rope_scaling type {kind!r} is not supported (V4 uses 'yarn')")
    for src, dst in (
        ("factor", "rope_factor"),
        ("original_max_position_embeddings", "original_max_position_embeddings"),
        ("beta_fast", "beta_fast"),
        ("beta_slow", "beta_slow"),
    ):
        if src in scaling:
            kw[dst] = scaling[src]


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


def tiny_config(name: str = "tiny", **overrides: Any) -> ModelConfig:
    """Small V4 configs for tests and the embedded default.

    - "tiny": sliding, CSA and HCA layers; 2 hash layers; 8 experts; hc_mult 2.
    - "tiny-csa": mostly CSA with a small index_topk so top-k selection matters.
    - "tiny-hca": HCA-heavy, hc_mult 4, one hash layer.
    """
    presets: dict[str, dict[str, Any]] = {
        "tiny": dict(
            vocab_size=512,
            hidden_size=64,
            num_hidden_layers=4,
            num_attention_heads=4,
            head_dim=32,
            qk_rope_head_dim=16,
            q_lora_rank=32,
            o_groups=2,
            o_lora_rank=16,
            sliding_window=16,
            compress_ratios=[0, 4, 128, 4],
            hc_mult=2,
            hc_sinkhorn_iters=6,
            moe_intermediate_size=32,
            n_routed_experts=8,
            num_experts_per_tok=2,
            num_hash_layers=2,
            index_n_heads=16,
            index_head_dim=32,
            index_topk=8,
            max_position_embeddings=65536,
            original_max_position_embeddings=4096,
        ),
        "tiny-csa": dict(
            vocab_size=384,
            hidden_size=48,
            num_hidden_layers=3,
            num_attention_heads=4,
            head_dim=24,
            qk_rope_head_dim=8,
            q_lora_rank=24,
            o_groups=2,
            o_lora_rank=12,
            sliding_window=8,
            compress_ratios=[4, 4, 0],
            hc_mult=3,
            hc_sinkhorn_iters=20,
            moe_intermediate_size=24,
            n_routed_experts=6,
            num_experts_per_tok=3,
            num_hash_layers=1,
            index_n_heads=16,
            index_head_dim=16,
            index_topk=4,
            max_position_embeddings=32768,
            original_max_position_embeddings=2048,
        ),
        "tiny-hca": dict(
            vocab_size=320,
            hidden_size=32,
            num_hidden_layers=3,
            num_attention_heads=2,
            head_dim=32,
            qk_rope_head_dim=16,
            q_lora_rank=16,
            o_groups=1,
            o_lora_rank=16,
            sliding_window=32,
            compress_ratios=[128, 0, 128],
            hc_mult=4,
            hc_sinkhorn_iters=20,
            moe_intermediate_size=16,
            n_routed_experts=4,
            num_experts_per_tok=2,
            num_hash_layers=1,
            index_n_heads=2,
            index_head_dim=16,
            index_topk=4,
            max_position_embeddings=16384,
            original_max_position_embeddings=1024,
        ),
    }
    if name not in presets:
        raise ConfigError(f"unknown tiny preset {name!r}; choose one of {sorted(presets)}")
    return ModelConfig(**{**presets[name], **overrides})
