"""Logit parity with transformers' independent DeepSeek-V4 port on the same random weights (fp32).

Both ways: our `save_checkpoint` writes the official layout and transformers loads it; and
transformers' own random models, saved by its `save_pretrained`, load with our `load_model`.
The cases together cover sliding, CSA and HCA layers, compression rates other than 4 and 128,
plain RoPE and YaRN on the compressed layers, hash and learned routing, hc_mult 2-4, sequences
longer than the window and more compressed entries than `index_topk`. Seeds and indexer widths
are ones without exact indexer score ties (ties make top-k selection implementation-defined).
"""

import pytest
import torch
from safetensors import safe_open

from flashbeam.model import load_model, save_checkpoint, tiny_config
from flashbeam.model.checkpoint.random_init import random_model
from flashbeam.model.checkpoint.reader import CheckpointReader

transformers = pytest.importorskip("transformers")

CASES = [
    ("tiny", 300),  # sliding + CSA + HCA, 2 hash layers, hc_mult 2, 75 CSA entries vs topk 8
    ("tiny-csa", 96),  # CSA-heavy, topk 4 of 24 entries, hc_mult 3
    ("tiny-hca", 300),  # HCA-heavy, hc_mult 4, window 32
    ("tiny-rates", 200),  # plain RoPE, CSA 8 / HCA 16 (written as compress_rates), topk 4 of 25
]


@pytest.mark.parametrize("preset,seq", CASES)
def test_logits_match_transformers(tmp_path, preset, seq):
    config = tiny_config(preset)
    ours = random_model(config, seed=0)
    save_checkpoint(ours, tmp_path)
    theirs = transformers.DeepseekV4ForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    ids = torch.randint(16, config.vocab_size, (2, seq), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = theirs.eval()(ids).logits
        got = ours(ids)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= 1e-4


def test_written_config_gives_transformers_the_same_schedule():
    hf = transformers.DeepseekV4Config(**tiny_config("tiny").to_official_dict())
    assert hf.layer_types == [
        "sliding_attention",
        "compressed_sparse_attention",
        "heavily_compressed_attention",
        "compressed_sparse_attention",
    ]
    assert hf.mlp_layer_types == ["hash_moe", "hash_moe", "moe", "moe"]


# ---- checkpoints transformers saves, loaded by us -------------------------------------------
S, C, H = "sliding_attention", "compressed_sparse_attention", "heavily_compressed_attention"
SHAPES = dict(
    vocab_size=512,
    hidden_size=64,
    num_attention_heads=4,
    head_dim=32,
    partial_rotary_factor=0.5,
    q_lora_rank=32,
    o_groups=2,
    o_lora_rank=16,
    sliding_window=16,
    moe_intermediate_size=32,
    n_routed_experts=8,
    num_experts_per_tok=2,
    index_n_heads=16,
    index_head_dim=32,
    index_topk=8,
    hc_sinkhorn_iters=6,
)
THEIR_CASES = [
    # plain RoPE everywhere, HCA pooling 8 tokens; 50 CSA entries against top-8 at 200 tokens
    (
        dict(
            layer_types=[S, C, H, C],
            mlp_layer_types=["hash_moe", "hash_moe", "moe", "moe"],
            compress_rates={C: 4, H: 8},
            hc_mult=2,
        ),
        200,
    ),
    # YaRN on the compressed layers, CSA pooling 8 (overlapping 16) and HCA 32, hc_mult 3
    (
        dict(
            layer_types=[C, H, S],
            mlp_layer_types=["hash_moe", "moe", "moe"],
            compress_rates={C: 8, H: 32},
            rope_parameters={
                "main": {"rope_type": "default", "rope_theta": 10000.0},
                "compress": {
                    "rope_type": "yarn",
                    "rope_theta": 160000.0,
                    "factor": 16.0,
                    "original_max_position_embeddings": 2048,
                    "beta_fast": 32.0,
                    "beta_slow": 1.0,
                    "attention_factor": 1.0,
                },
            },
            max_position_embeddings=32768,
            hc_mult=3,
        ),
        160,
    ),
]


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Seeded random weights by transformers' own parameter names: norms near 1, mHC gates
    and biases small, matrices ~ N(0, 1/fan_in), a distinct random expert set per token."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in [*model.named_parameters(), *model.named_buffers()]:
            leaf = name.rsplit(".", 1)[-1]
            noise = torch.randn(p.shape, generator=gen)
            if leaf == "tid2eid":
                experts = model.config.n_routed_experts
                rows = [torch.randperm(experts, generator=gen)[: p.shape[1]] for _ in range(len(p))]
                p.copy_(torch.stack(rows))
            elif name.endswith("norm.weight") or leaf in ("scale", "hc_scale"):
                p.copy_(1 + 0.1 * noise)
            elif leaf in ("base", "hc_base", "sinks", "position_bias", "e_score_correction_bias"):
                p.copy_(0.1 * noise)
            elif p.is_floating_point() and p.dim() >= 2:
                p.copy_(noise / p.shape[-1] ** 0.5)


@pytest.mark.parametrize("case,seq", THEIR_CASES)
def test_checkpoints_transformers_saves_load_with_its_logits(tmp_path, case, seq):
    config = transformers.DeepseekV4Config(
        **SHAPES, num_hidden_layers=len(case["layer_types"]), **case
    )
    theirs = transformers.DeepseekV4ForCausalLM(config).float()
    randomize(theirs, seed=0)
    theirs.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        names = set(f.keys())
    assert "head.weight" in names and "model.embed_tokens.weight" in names
    ours = load_model(tmp_path)
    assert CheckpointReader(tmp_path, ours.config).layout == "hf-saved"
    rates = case["compress_rates"]
    assert (ours.config.csa_compress_ratio, ours.config.hca_compress_ratio) == (rates[C], rates[H])
    plain = "rope_parameters" not in case
    assert ours.config.compress_rope_type == ("default" if plain else "yarn")
    ids = torch.randint(16, config.vocab_size, (2, seq), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = theirs.eval()(ids).logits
        got = ours(ids)
    assert (got - expected).abs().max().item() <= 1e-4
