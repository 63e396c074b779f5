"""Logit parity with transformers' independent DeepSeek-V4 port on the same random weights (fp32).

Our `save_checkpoint` writes the official layout; transformers maps the official names itself.
The presets together cover sliding, CSA and HCA layers, hash and learned routing, hc_mult 2-4,
sequences longer than the window and more compressed entries than `index_topk`. Seeds are fixed
ones without exact indexer score ties (ties make top-k selection implementation-defined).
"""

import pytest
import torch

from flashbeam.model import save_checkpoint, tiny_config
from flashbeam.model.random_init import random_model

transformers = pytest.importorskip("transformers")

CASES = [
    ("tiny", 300),  # sliding + CSA + HCA, 2 hash layers, hc_mult 2, 75 CSA entries vs topk 8
    ("tiny-csa", 96),  # CSA-heavy, topk 4 of 24 entries, hc_mult 3
    ("tiny-hca", 300),  # HCA-heavy, hc_mult 4, window 32
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
