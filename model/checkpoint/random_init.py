"""Seeded random weights and throwaway checkpoints (tests, benchmarks, the start of training)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from flashbeam.model.checkpoint.saving import save_checkpoint
from flashbeam.model.network.config import ModelConfig
from flashbeam.model.network.transformer import Transformer
from flashbeam.model.text.tokenizer import train_tokenizer

_CORPUS = (
    "Invoice number INV-2041 issued on 2024-03-05 by Northwind Traders to Contoso Ltd. "
    "Total due: 1,234.50 USD. Payment within 30 days. Receipt for coffee and bagels. "
    "The quarterly report summarises revenue, incidents, staffing and the project roadmap. "
    "Contract between Acme Corp and Globex for consulting services starting 1 July 2025. "
    "Questions about the document: who signed it, when is it due, what is the amount? "
    '{"vendor": "Acme", "total": 12.5, "date": "2024-01-31", "items": [1, 2, 3], "ok": true} '
)


def random_dense(
    name: str, shape: tuple[int, ...], gen: torch.Generator, std: float | None = None
) -> torch.Tensor:
    """Seeded fp32 values for official tensor `name` on the generator's device: matrices
    ~ N(0, 1/fan_in) (or `std`), norms and scales at 1, mHC, sinks, biases and ape small."""
    leaf = name.rsplit(".", 1)[-1]
    if name.endswith("norm.weight") or leaf.endswith("_scale"):
        return torch.ones(shape, device=gen.device)
    noise = torch.randn(shape, generator=gen, device=gen.device)
    if leaf.endswith("_base") or leaf in ("bias", "attn_sink", "ape"):
        return noise * 0.1
    return noise * (std if std is not None else 1 / math.sqrt(shape[-1]))


def init_weights(model: Transformer, seed: int = 0, std: float | None = None) -> Transformer:
    """Fill every parameter from a seeded generator (`random_dense`), hash tables with a random
    distinct expert set per token."""
    gen = torch.Generator().manual_seed(seed)
    cfg = model.config
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(random_dense(name, tuple(p.shape), gen, std))
        for block in model.layers:
            gate = block.ffn.gate
            if gate.hashed:
                picks = [
                    torch.randperm(cfg.n_routed_experts, generator=gen)[: cfg.num_experts_per_tok]
                    for _ in range(cfg.vocab_size)
                ]
                gate.tid2eid.copy_(torch.stack(picks))
    return model


def random_model(config: ModelConfig, seed: int = 0, dtype=torch.float32) -> Transformer:
    return init_weights(Transformer(config), seed).to(dtype).eval()


def write_random_checkpoint(
    directory: str | Path, config: ModelConfig, seed: int = 0, quantize: str | None = None
) -> Path:
    """A complete checkpoint directory (config, weights, tokenizer.json) with random weights."""
    directory = Path(directory)
    save_checkpoint(random_model(config, seed), directory, quantize=quantize)
    save_random_tokenizer(directory, config.vocab_size)
    return directory


def save_random_tokenizer(directory: Path, vocab_size: int) -> None:
    """A byte-level BPE of at most `vocab_size` tokens, trained on a few lines of office text."""
    train_tokenizer([_CORPUS] * 4, vocab_size=vocab_size).save(directory)
