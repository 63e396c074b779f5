"""Tensor names of a V4 checkpoint in each layout we read, stated once in one table.

- official: DeepSeek's names, no prefix; also accepted under a `model.` prefix, which
  DeepSeek's own converter strips. FP8/FP4 weights carry `X.scale` beside `X.weight`.
- hf: transformers' names inside `DeepseekV4ForCausalLM`, routed experts stacked
  per layer into `gate_up_proj` [E, 2I, D] (w1 rows, then w3 rows) and `down_proj` [E, D, I];
  FP8 scales as `X.weight_scale_inv`.
- hf-saved: what transformers' `save_pretrained` writes: it reverts its renaming rules, which
  gives the official names under `model.`, except where a rule does not invert (the rows that
  differ from "model." + official below: embeddings, head, mHC head, attention kv_norm).
  Dense only.

`_NAMES` lists each official name (`{L}`: layer, `{E}`: expert) with its name in the other two
layouts; the tests check the table against transformers itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Stacked:
    """One expert's weight inside a stacked tensor: rows [part*I, (part+1)*I) of expert E
    (`part` 0 for w1 and w2, 1 for w3 in gate_up_proj)."""

    name: str
    part: int


# (official name, transformers in memory, what save_pretrained writes)
_GLOBAL_NAMES: list[tuple[str, str, str]] = [
    ("embed.weight", "model.embed_tokens.weight", "model.embed_tokens.weight"),
    ("head.weight", "lm_head.weight", "head.weight"),
    ("norm.weight", "model.norm.weight", "model.norm.weight"),
    ("hc_head_fn", "model.hc_head.hc_fn", "model.hc_head.hc_fn"),
    ("hc_head_base", "model.hc_head.hc_base", "model.hc_head.hc_base"),
    ("hc_head_scale", "model.hc_head.hc_scale", "model.hc_head.hc_scale"),
]
# The same inside layer L: official "layers.L.<name>", the others "model.layers.L.<name>".
_LAYER_NAMES: list[tuple[str, str | Stacked, str]] = [
    ("attn_norm.weight", "input_layernorm.weight", "attn_norm.weight"),
    ("ffn_norm.weight", "post_attention_layernorm.weight", "ffn_norm.weight"),
    ("hc_attn_fn", "attn_hc.fn", "hc_attn_fn"),
    ("hc_attn_base", "attn_hc.base", "hc_attn_base"),
    ("hc_attn_scale", "attn_hc.scale", "hc_attn_scale"),
    ("hc_ffn_fn", "ffn_hc.fn", "hc_ffn_fn"),
    ("hc_ffn_base", "ffn_hc.base", "hc_ffn_base"),
    ("hc_ffn_scale", "ffn_hc.scale", "hc_ffn_scale"),
    ("attn.attn_sink", "self_attn.sinks", "attn.attn_sink"),
    ("attn.wq_a.weight", "self_attn.q_a_proj.weight", "attn.wq_a.weight"),
    ("attn.q_norm.weight", "self_attn.q_a_norm.weight", "attn.q_norm.weight"),
    ("attn.wq_b.weight", "self_attn.q_b_proj.weight", "attn.wq_b.weight"),
    ("attn.wkv.weight", "self_attn.kv_proj.weight", "attn.wkv.weight"),
    ("attn.kv_norm.weight", "self_attn.kv_norm.weight", "attn.norm.weight"),
    ("attn.wo_a.weight", "self_attn.o_a_proj.weight", "attn.wo_a.weight"),
    ("attn.wo_b.weight", "self_attn.o_b_proj.weight", "attn.wo_b.weight"),
    (
        "attn.compressor.wkv.weight",
        "self_attn.compressor.kv_proj.weight",
        "attn.compressor.wkv.weight",
    ),
    (
        "attn.compressor.wgate.weight",
        "self_attn.compressor.gate_proj.weight",
        "attn.compressor.wgate.weight",
    ),
    ("attn.compressor.ape", "self_attn.compressor.position_bias", "attn.compressor.ape"),
    (
        "attn.compressor.norm.weight",
        "self_attn.compressor.kv_norm.weight",
        "attn.compressor.norm.weight",
    ),
    (
        "attn.indexer.wq_b.weight",
        "self_attn.compressor.indexer.q_b_proj.weight",
        "attn.indexer.wq_b.weight",
    ),
    (
        "attn.indexer.weights_proj.weight",
        "self_attn.compressor.indexer.scorer.weights_proj.weight",
        "attn.indexer.weights_proj.weight",
    ),
    (
        "attn.indexer.compressor.wkv.weight",
        "self_attn.compressor.indexer.kv_proj.weight",
        "attn.indexer.compressor.wkv.weight",
    ),
    (
        "attn.indexer.compressor.wgate.weight",
        "self_attn.compressor.indexer.gate_proj.weight",
        "attn.indexer.compressor.wgate.weight",
    ),
    (
        "attn.indexer.compressor.ape",
        "self_attn.compressor.indexer.position_bias",
        "attn.indexer.compressor.ape",
    ),
    (
        "attn.indexer.compressor.norm.weight",
        "self_attn.compressor.indexer.kv_norm.weight",
        "attn.indexer.compressor.norm.weight",
    ),
    ("ffn.gate.weight", "mlp.gate.weight", "ffn.gate.weight"),
    ("ffn.gate.bias", "mlp.gate.e_score_correction_bias", "ffn.gate.bias"),
    ("ffn.gate.tid2eid", "mlp.gate.tid2eid", "ffn.gate.tid2eid"),
    (
        "ffn.shared_experts.w1.weight",
        "mlp.shared_experts.gate_proj.weight",
        "ffn.shared_experts.w1.weight",
    ),
    (
        "ffn.shared_experts.w2.weight",
        "mlp.shared_experts.down_proj.weight",
        "ffn.shared_experts.w2.weight",
    ),
    (
        "ffn.shared_experts.w3.weight",
        "mlp.shared_experts.up_proj.weight",
        "ffn.shared_experts.w3.weight",
    ),
    (
        "ffn.experts.{E}.w1.weight",
        Stacked("mlp.experts.gate_up_proj", 0),
        "ffn.experts.{E}.w1.weight",
    ),
    (
        "ffn.experts.{E}.w3.weight",
        Stacked("mlp.experts.gate_up_proj", 1),
        "ffn.experts.{E}.w3.weight",
    ),
    ("ffn.experts.{E}.w2.weight", Stacked("mlp.experts.down_proj", 0), "ffn.experts.{E}.w2.weight"),
]
_LAYER_PREFIXES = ("layers.{L}.", "model.layers.{L}.", "model.layers.{L}.")


@dataclass(frozen=True)
class Layout:
    """One way of naming a checkpoint's tensors: a column of the table (under `prefix`), and
    how FP8/FP4 scales sit beside their weights (`scale_suffix` replaces `.weight`; None:
    the layout is read dense only)."""

    name: str
    column: int
    prefix: str = ""
    scale_suffix: str | None = None

    def describe(self) -> str:
        return f"{self.name} (under {self.prefix!r})" if self.prefix else self.name


LAYOUTS = (
    Layout("official", 0, scale_suffix=".scale"),
    Layout("official", 0, prefix="model.", scale_suffix=".scale"),
    Layout("hf", 1, scale_suffix=".weight_scale_inv"),
    Layout("hf-saved", 2),
)
LAYOUT_NAMES = ("official", "hf", "hf-saved")

_GLOBAL = {row[0]: row for row in _GLOBAL_NAMES}
_LAYER = {row[0]: row for row in _LAYER_NAMES}
_OFFICIAL_LAYER = re.compile(r"^layers\.(\d+)\.(.+)$")
_EXPERT_LEAF = re.compile(r"^ffn\.experts\.(\d+)\.(w[123]\.weight)$")


def layout_named(name: str, prefix: str = "") -> Layout:
    """The layout called `name` (for writing: official names are written without a prefix)."""
    for candidate in LAYOUTS:
        if candidate.name == name and candidate.prefix == prefix:
            return candidate
    raise KeyError(f"layout {name!r}: choose one of {list(LAYOUT_NAMES)}")


def stored_name(official: str, where: Layout) -> str | tuple[Stacked, int, int]:
    """Official tensor name -> its name in `where`; a stacked expert weight gives (the stacked
    tensor with its layer filled in, layer, expert). KeyError for a name not in the table."""
    if official in _GLOBAL:
        return where.prefix + _GLOBAL[official][where.column]
    m = _OFFICIAL_LAYER.match(official)
    if not m:
        raise KeyError(official)
    layer, leaf = m.group(1), m.group(2)
    expert = _EXPERT_LEAF.match(leaf)
    row = _LAYER[f"ffn.experts.{{E}}.{expert.group(2)}" if expert else leaf]
    name = row[where.column]
    head = _LAYER_PREFIXES[where.column].format(L=layer)
    if isinstance(name, Stacked):
        return Stacked(where.prefix + head + name.name, name.part), int(layer), int(expert.group(1))
    if expert:
        name = name.format(E=expert.group(1))
    return where.prefix + head + name


def official_to_hf(name: str) -> str:
    """Official tensor name -> transformers' in-memory name (routed experts are stacked there,
    so they have none: KeyError)."""
    hf = stored_name(name, layout_named("hf"))
    if not isinstance(hf, str):
        raise KeyError(f"{name!r} has no single transformers name (experts are stacked)")
    return hf
