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


def init_weights(model: Transformer, seed: int = 0, std: float | None = None) -> Transformer:
    """Fill every parameter from a seeded generator: matrices ~ N(0, 1/fan_in) (or `std`),
    norms at 1, mHC and router small, hash tables a random distinct expert set per token."""
    gen = torch.Generator().manual_seed(seed)
    cfg = model.config
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if name.endswith("norm.weight") or leaf.endswith("_scale"):
                p.fill_(1.0)
            elif leaf.endswith("_base") or leaf in ("bias", "attn_sink") or leaf == "ape":
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
            else:
                scale = std if std is not None else 1 / math.sqrt(p.shape[-1])
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
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
    train_tokenizer([_CORPUS] * 4, vocab_size=config.vocab_size).save(directory)
    return directory
