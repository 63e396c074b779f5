"""What a checkpoint of a config holds: every official tensor name with its dense shape, how
each is stored when quantized, and the dtype it loads as.
"""

from __future__ import annotations

import re
from typing import Literal

import torch

from flashbeam.model.network.config import ModelConfig

Quantize = Literal["fp8", "fp8+fp4"] | None


_FP8_LINEAR = re.compile(
    r"^layers\.\d+\.(attn\.(wq_a|wq_b|wkv|wo_a|wo_b)|attn\.indexer\.wq_b|ffn\.shared_experts\.w[123])"
    r"\.weight$"
)


_EXPERT = re.compile(r"^layers\.(\d+)\.ffn\.experts\.(\d+)\.(w[123])\.weight$")


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be loaded (or a model that cannot be saved) as asked."""


# ---- the tensor inventory ------------------------------------------------------------------
def expected_tensors(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Official tensor name -> dense shape for every backbone tensor of `config`."""
    c = config
    D, N, H, d = c.hidden_size, c.hc_mult, c.num_attention_heads, c.head_dim
    I, E, V = c.moe_intermediate_size, c.n_routed_experts, c.vocab_size
    hc_rows = (2 + N) * N
    out: dict[str, tuple[int, ...]] = {
        "embed.weight": (V, D),
        "head.weight": (V, D),
        "norm.weight": (D,),
        "hc_head_fn": (N, N * D),
        "hc_head_base": (N,),
        "hc_head_scale": (1,),
    }
    for L, kind in enumerate(c.layer_kinds):
        ratio = c.layer_ratio(L)
        p = f"layers.{L}."
        for part in ("attn", "ffn"):
            out[f"{p}{part}_norm.weight"] = (D,)
            out[f"{p}hc_{part}_fn"] = (hc_rows, N * D)
            out[f"{p}hc_{part}_base"] = (hc_rows,)
            out[f"{p}hc_{part}_scale"] = (3,)
        a = p + "attn."
        out[a + "attn_sink"] = (H,)
        out[a + "wq_a.weight"] = (c.q_lora_rank, D)
        out[a + "q_norm.weight"] = (c.q_lora_rank,)
        out[a + "wq_b.weight"] = (H * d, c.q_lora_rank)
        out[a + "wkv.weight"] = (d, D)
        out[a + "kv_norm.weight"] = (d,)
        out[a + "wo_a.weight"] = (c.o_groups * c.o_lora_rank, H * d // c.o_groups)
        out[a + "wo_b.weight"] = (D, c.o_groups * c.o_lora_rank)
        if ratio:
            out.update(_compressor(a + "compressor.", ratio, kind == "csa", d, D))
        if kind == "csa":
            di = c.index_head_dim
            out[a + "indexer.wq_b.weight"] = (c.index_n_heads * di, c.q_lora_rank)
            out[a + "indexer.weights_proj.weight"] = (c.index_n_heads, D)
            out.update(_compressor(a + "indexer.compressor.", ratio, True, di, D))
        f = p + "ffn."
        out[f + "gate.weight"] = (E, D)
        if c.is_hash_layer(L):
            out[f + "gate.tid2eid"] = (V, c.num_experts_per_tok)
        else:
            out[f + "gate.bias"] = (E,)
        for prefix in [f + "shared_experts."] + [f"{f}experts.{e}." for e in range(E)]:
            out[prefix + "w1.weight"] = (I, D)
            out[prefix + "w2.weight"] = (D, I)
            out[prefix + "w3.weight"] = (I, D)
    return out


def _compressor(
    prefix: str, ratio: int, overlap: bool, dim: int, D: int
) -> dict[str, tuple[int, ...]]:
    width = (2 if overlap else 1) * dim  # CSA windows overlap: two halves per entry
    return {
        prefix + "wkv.weight": (width, D),
        prefix + "wgate.weight": (width, D),
        prefix + "ape": (ratio, width),
        prefix + "norm.weight": (dim,),
    }


def _keeps_fp32(name: str) -> bool:
    """Tensors the official checkpoint stores in fp32 whatever the model dtype (mHC, sinks, position
    biases, the router bias: their precision matters more than their size)."""
    leaf = name.rsplit(".", 1)[-1]
    return leaf in ("attn_sink", "ape", "bias") or leaf.startswith("hc_")


def _is_index(name: str) -> bool:
    return name.endswith(".tid2eid")


def _is_mtp(name: str) -> bool:
    return name.startswith(("mtp.", "model.mtp."))


def dense_dtype(name: str, dtype: torch.dtype) -> torch.dtype:
    """The dtype `read_dense` gives tensor `name` when floats are loaded as `dtype`."""
    if _is_index(name):
        return torch.int64
    if _keeps_fp32(name) and dtype.itemsize < 4:
        return torch.float32
    return dtype


def quantized_format(name: str, quantize: Quantize) -> Literal["fp8", "fp4"] | None:
    """How `save_checkpoint(quantize=...)` stores official tensor `name` (None: as it is)."""
    if quantize and _FP8_LINEAR.match(name):
        return "fp8"
    if quantize and _EXPERT.match(name):
        return "fp4" if quantize == "fp8+fp4" else "fp8"
    return None
