"""ModelConfig: V4-Flash hyper-parameters from official, runtime or transformers configs.

Which keys of those files are read, and how, is the table in `config_keys.py`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flashbeam.model.network.config_keys import (
    DEFAULT_COMPRESS_RATES,
    HF_LAYER_TYPE_BY_KIND,
    KEYS,
    LAYER_KIND_BY_CODE,
    ConfigError,
    read_config,
)

__all__ = ["ConfigError", "ModelConfig", "tiny_config"]

_YARN_FIELDS = ("rope_factor", "original_max_position_embeddings", "beta_fast", "beta_slow")


@dataclass
class ModelConfig:
    """Hyper-parameters of a DeepSeek-V4 network (defaults are V4-Flash).

    `compress_ratios` holds one layer kind per backbone layer, written as the official file
    writes it: 0 sliding window only, 4 CSA, 128 HCA. How many tokens one compressed entry pools
    is `csa_compress_ratio` / `hca_compress_ratio` (4 and 128 in V4-Flash; transformers'
    `compress_rates` may set others): `layer_ratio(i)` is layer i's. The official file's extra
    trailing MTP entry is kept in `mtp_compress_ratios`.

    RoPE: sliding layers use plain RoPE with `rope_theta`; compressed layers use
    `compress_rope_theta`, with YaRN (`rope_factor`, `original_max_position_embeddings`,
    `beta_fast`, `beta_slow`) when `compress_rope_type` is "yarn", plain RoPE when it is
    "default" (then the YaRN fields must stay at their defaults: they would mean nothing).
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
    csa_compress_ratio: int = 4
    hca_compress_ratio: int = 128
    rope_theta: float = 10000.0
    compress_rope_theta: float = 160000.0
    compress_rope_type: str = "yarn"
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
    num_experts_per_tok: int = 6
    num_hash_layers: int = 3
    routed_scaling_factor: float = 1.5
    swiglu_limit: float = 10.0
    index_n_heads: int = 64
    index_head_dim: int = 128
    index_topk: int = 512
    num_nextn_predict_layers: int = 1
    bos_token_id: int | None = 0
    eos_token_id: int | list[int] | None = 1
    quantization: dict[str, Any] | None = None
    expert_dtype: str | None = None
    # Round cached KV as the official runtime stores it: FP8 for the no-rope dims
    # of window and compressed KV, Hadamard + FP4 for the indexer's queries and keys. Off by
    # default, as in transformers; config.json key `kv_quant_sim`, or `load_model(...)`.
    kv_quant_sim: bool = False

    def __post_init__(self) -> None:
        self.validate()

    # ---- derived -------------------------------------------------------------------------
    @property
    def layer_kinds(self) -> list[str]:
        """ "sliding", "csa" or "hca" per layer."""
        return [LAYER_KIND_BY_CODE[r] for r in self.compress_ratios]

    def layer_ratio(self, layer: int) -> int:
        """Tokens per compressed entry in `layer` (0: a sliding-window layer)."""
        kind = LAYER_KIND_BY_CODE[self.compress_ratios[layer]]
        return {"sliding": 0, "csa": self.csa_compress_ratio, "hca": self.hca_compress_ratio}[kind]

    @property
    def compress_block(self) -> int:
        """Token count after which every compressor's partial buffer is empty (lcm of ratios)."""
        block = 1
        for layer in range(self.num_hidden_layers):
            if ratio := self.layer_ratio(layer):
                block = math.lcm(block, ratio)
        return block

    def is_hash_layer(self, layer: int) -> bool:
        return layer < self.num_hash_layers

    # ---- checks --------------------------------------------------------------------------
    def validate(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(msg)

        _check_types(self)
        need(
            len(self.compress_ratios) == self.num_hidden_layers,
            f"compress_ratios has {len(self.compress_ratios)} entries but num_hidden_layers is "
            f"{self.num_hidden_layers}; give one ratio per layer (plus optionally one for MTP)",
        )
        bad = sorted({r for r in self.compress_ratios if r not in LAYER_KIND_BY_CODE})
        need(
            not bad,
            f"compress_ratios contains {bad}; allowed values are 0, 4 and 128 (the layer kinds; "
            "set compression rates with csa_compress_ratio / hca_compress_ratio)",
        )
        for name in ("csa_compress_ratio", "hca_compress_ratio"):
            need(getattr(self, name) >= 1, f"{name} must be >= 1")
        need(self.num_attention_heads % self.o_groups == 0, "num_attention_heads % o_groups != 0")
        need(self.qk_rope_head_dim % 2 == 0, "qk_rope_head_dim must be even")
        need(0 < self.qk_rope_head_dim <= self.head_dim, "qk_rope_head_dim must be in 1..head_dim")
        need(self.qk_rope_head_dim <= self.index_head_dim, "qk_rope_head_dim > index_head_dim")
        need(
            self.num_experts_per_tok <= self.n_routed_experts,
            "num_experts_per_tok exceeds n_routed_experts",
        )
        need(self.swiglu_limit > 0, "swiglu_limit must be > 0 (the experts always clamp)")
        need(self.sliding_window >= 1, "sliding_window must be >= 1")
        need(0 <= self.num_hash_layers <= self.num_hidden_layers, "bad num_hash_layers")
        self._validate_rope(need)
        width = self.index_head_dim
        need(
            not (self.kv_quant_sim and "csa" in self.layer_kinds and width & (width - 1)),
            f"kv_quant_sim rotates the indexer's {width} dims with a Hadamard transform, which "
            "needs a power of two; set index_head_dim to one or turn kv_quant_sim off",
        )

    def _validate_rope(self, need) -> None:
        need(
            self.compress_rope_type in ("yarn", "default"),
            f"compress_rope_type {self.compress_rope_type!r}: use 'yarn' or 'default' (plain)",
        )
        if self.compress_rope_type == "yarn":
            need(self.rope_factor >= 1, f"rope_factor must be >= 1, got {self.rope_factor}")
            need(self.original_max_position_embeddings >= 1, "bad original_max_position_embeddings")
            return
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        changed = [n for n in _YARN_FIELDS if getattr(self, n) != defaults[n]]
        need(
            not changed,
            f"{changed} set with plain RoPE on the compressed layers (compress_rope_type "
            "'default'); they apply to YaRN only: leave them out or use 'yarn'",
        )

    # ---- reading -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "<dict>") -> ModelConfig:
        """Build from an official HF-format, official runtime or transformers-style dict.

        Every key is honoured, refused or known to be informational (`config_keys.KEYS`); a
        key or value this network cannot honour raises `ConfigError` naming it and `source`.
        """
        defaults = {
            f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
            for f in dataclasses.fields(cls)
        }
        kw = read_config(raw, source, defaults)
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
        """The official HF-format config.json (which transformers also reads).

        What the official format cannot say is written in transformers' keys, which it reads
        beside the official ones: `compress_rates` for non-default compression rates. Plain RoPE
        on the compressed layers is a config without `rope_scaling`.
        """
        d: dict[str, Any] = {"architectures": ["DeepseekV4ForCausalLM"]}
        d.update(
            {k: key.value for k, key in KEYS.items() if key.handling == "fixed" and key.official}
        )
        d["torch_dtype"] = "bfloat16"
        skip = {"compress_ratios", "mtp_compress_ratios", "quantization", "expert_dtype"}
        skip |= {"csa_compress_ratio", "hca_compress_ratio", "compress_rope_type", *_YARN_FIELDS}
        skip |= set() if self.kv_quant_sim else {"kv_quant_sim"}  # not an official key
        for f in dataclasses.fields(self):
            if f.name not in skip:
                d[f.name] = getattr(self, f.name)
        d["compress_ratios"] = list(self.compress_ratios) + list(self.mtp_compress_ratios)
        rates = {"csa": self.csa_compress_ratio, "hca": self.hca_compress_ratio}
        if rates != DEFAULT_COMPRESS_RATES:
            d["compress_rates"] = {HF_LAYER_TYPE_BY_KIND[k]: r for k, r in rates.items()}
        if self.compress_rope_type == "yarn":
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


def _check_types(config: ModelConfig) -> None:
    """Plain int / float / bool fields hold values of that type (true is not 1)."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.type == "int":
            ok = isinstance(value, int) and not isinstance(value, bool)
            what = "an integer"
        elif f.type == "float":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            what = "a number"
        elif f.type == "bool":
            ok, what = isinstance(value, bool), "true or false"
        else:
            continue
        if not ok:
            raise ConfigError(f"{f.name} must be {what}, got {value!r}")


def tiny_config(name: str = "tiny", **overrides: Any) -> ModelConfig:
    """Small V4 configs for tests and the embedded default.

    - "tiny": sliding, CSA and HCA layers; 2 hash layers; 8 experts; hc_mult 2.
    - "tiny-csa": mostly CSA with a small index_topk so top-k selection matters.
    - "tiny-hca": HCA-heavy, hc_mult 4, one hash layer.
    - "tiny-rates": compression rates other than V4-Flash's (CSA 8, HCA 16) and plain RoPE on
      the compressed layers.
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
        "tiny-rates": dict(
            vocab_size=384,
            hidden_size=48,
            num_hidden_layers=4,
            num_attention_heads=4,
            head_dim=24,
            qk_rope_head_dim=8,
            q_lora_rank=24,
            o_groups=2,
            o_lora_rank=12,
            sliding_window=12,
            compress_ratios=[4, 128, 0, 4],
            csa_compress_ratio=8,
            hca_compress_ratio=16,
            compress_rope_type="default",
            hc_mult=2,
            hc_sinkhorn_iters=8,
            moe_intermediate_size=24,
            n_routed_experts=6,
            num_experts_per_tok=2,
            num_hash_layers=1,
            index_n_heads=16,
            index_head_dim=16,
            index_topk=4,
            max_position_embeddings=32768,
        ),
    }
    if name not in presets:
        raise ConfigError(f"unknown tiny preset {name!r}; choose one of {sorted(presets)}")
    return ModelConfig(**{**presets[name], **overrides})
