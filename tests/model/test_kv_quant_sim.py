"""kv_quant_sim: cached KV and the indexer's queries and keys rounded as the official runtime
stores them (spec pitfall 13): FP8 e4m3 for the no-rope dims of window and compressed KV
(power-of-two scale per 64 dims), Hadamard rotation then FP4 e2m1 for the indexer (per 32)."""

import functools

import pytest
import torch

from flashbeam.kernels.quant import E4M3_MAX, FP4_MAGNITUDES
from flashbeam.model import ModelConfig, tiny_config
from flashbeam.model.checkpoint.formats import quantize_fp4, unpack_fp4
from flashbeam.model.checkpoint.loading import load_model
from flashbeam.model.checkpoint.random_init import random_model
from flashbeam.model.checkpoint.saving import save_checkpoint
from flashbeam.model.network.config import ConfigError
from flashbeam.model.network.decode import DecodeBatch
from flashbeam.model.network.kv_quant import fp4_simulate, fp8_simulate, hadamard_rotate


def _x(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 3


def _pow2_scales(x, block):
    return x.abs().unflatten(-1, (-1, block)).amax(-1)


def test_fp8_simulation_rounds_the_leading_dims_to_e4m3_per_64_and_leaves_the_rest():
    x = _x(4, 7, 192)
    y = fp8_simulate(x, 128)
    assert torch.equal(y[..., 128:], x[..., 128:])
    assert y.dtype == x.dtype and not torch.equal(y[..., :128], x[..., :128])
    # each block's scale is the power of two that puts its largest magnitude in (224, 448]
    scale = torch.exp2(torch.ceil(torch.log2(_pow2_scales(x[..., :128], 64) / E4M3_MAX)))
    per_element = scale.repeat_interleave(64, dim=-1)
    codes = y[..., :128] / per_element
    assert torch.equal(codes.to(torch.float8_e4m3fn).float(), codes)  # e4m3 values exactly
    assert ((codes - x[..., :128] / per_element).abs() <= codes.abs() / 16 + 2**-9).all()
    assert torch.equal(fp8_simulate(y, 128), y)  # rounding twice changes nothing


def test_fp8_simulation_keeps_zero_blocks_and_takes_a_ragged_last_block():
    x = _x(3, 80)
    x[0, :64] = 0
    y = fp8_simulate(x, 80)
    assert torch.equal(y[0, :64], torch.zeros(64))
    assert torch.equal(fp8_simulate(y, 80), y)
    assert (y - x).abs().max() <= x.abs().max() / 16


def test_fp4_simulation_is_the_weight_quantiser_round_trip():
    x = _x(6, 128)
    y = fp4_simulate(x)
    packed, scale = quantize_fp4(x)
    assert torch.equal(y, unpack_fp4(packed, scale))
    values = set(FP4_MAGNITUDES) | {-v for v in FP4_MAGNITUDES}
    scale = torch.exp2(torch.ceil(torch.log2(_pow2_scales(x, 32) / 6)))
    codes = y / scale.repeat_interleave(32, dim=-1)  # e2m1 values under power-of-two scales
    assert set(codes.flatten().tolist()) <= values
    assert torch.equal(fp4_simulate(y), y)


def test_hadamard_rotation_is_orthonormal_and_its_own_inverse():
    x = _x(5, 3, 128, seed=1)
    h = hadamard_rotate(x)
    sylvester = torch.ones(1, 1)
    for _ in range(7):
        sylvester = torch.cat(
            [torch.cat([sylvester, sylvester], 1), torch.cat([sylvester, -sylvester], 1)], 0
        )
    assert torch.allclose(h, x @ sylvester.T / 128**0.5, atol=1e-5)
    assert torch.allclose(hadamard_rotate(h), x, atol=1e-5)
    q, k = _x(128, seed=2), _x(128, seed=3)
    assert torch.allclose(hadamard_rotate(q) @ hadamard_rotate(k), q @ k, rtol=1e-5)
    with pytest.raises(ValueError, match="power-of-two"):
        hadamard_rotate(torch.zeros(3, 96))


def _rotated_fp4(x):
    return fp4_simulate(hadamard_rotate(x))


def _model(preset, on):
    return random_model(tiny_config(preset, kv_quant_sim=on), seed=0)


def test_each_attention_input_is_rounded_where_it_is_made():
    """Same weights, same inputs: with the switch on, window KV, main compressed entries, the
    indexer's keys and its queries are exactly the plain values put through the simulation."""
    plain, sim = _model("tiny", False), _model("tiny", True)
    config = plain.config
    nope = config.head_dim - config.qk_rope_head_dim
    layer = config.compress_ratios.index(4)
    a, b = plain.layers[layer].attn, sim.layers[layer].attn
    x = _x(2, 9, config.hidden_size, seed=4)
    positions = torch.arange(9).expand(2, 9)
    with torch.no_grad():
        qr, _, kv, rope = a.project_in(x, positions)
        _, _, kv_sim, _ = b.project_in(x, positions)
        assert torch.equal(kv_sim, fp8_simulate(kv, nope))
        assert not torch.equal(kv_sim, kv)
        q, w = a.indexer.queries(x, qr, rope)
        q_sim, w_sim = b.indexer.queries(x, qr, rope)
        assert torch.equal(q_sim, fp4_simulate(hadamard_rotate(q))) and torch.equal(w_sim, w)
        for comp, comp_sim, rounded in (
            (a.compressor, b.compressor, functools.partial(fp8_simulate, dims=nope)),
            (a.indexer.compressor, b.indexer.compressor, _rotated_fp4),
        ):
            width = comp.wkv.out_features
            win = _x(3, 4, width, seed=5), _x(3, 4, width, seed=6)
            prior = (_x(3, 4, comp.dim, seed=7), _x(3, 4, comp.dim, seed=8))
            ids = torch.tensor([1, 2, 5])
            entries = comp.pool(*win, prior, ids, torch.float32)
            assert torch.equal(comp_sim.pool(*win, prior, ids, torch.float32), rounded(entries))


@pytest.mark.parametrize("preset", ["tiny", "tiny-csa", "tiny-hca"])
def test_simulated_kv_changes_the_logits(preset):
    ids = torch.randint(16, 300, (2, 260), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain, sim = _model(preset, False)(ids), _model(preset, True)(ids)
    assert sim.isfinite().all()
    assert (sim - plain).abs().mean() > 1e-3


@pytest.mark.parametrize("preset", ["tiny", "tiny-csa", "tiny-hca"])
def test_with_simulated_kv_chunked_prefill_and_decode_match_the_full_forward(preset):
    """The rounding happens once, where an entry is made, so every path caches the same values
    up to the last bits of the sums that lead to them: prefill in chunks, then batched decode,
    against one whole-sequence pass. (Such a last bit can move a value across a rounding
    boundary of e4m3 or e2m1: a step of 1/16 or more in one element, ~1e-4 in the logits; the
    plain paths agree to 2e-5.)"""
    model = _model(preset, True)
    config = model.config
    ids = torch.randint(16, config.vocab_size, (2, 240), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        full = model(ids)
        states = [model.empty_state() for _ in range(2)]
        pos, out = 0, []
        for size in (5, 1, 130, 64):
            logits, states = model.forward_step(ids[:, pos : pos + size], states)
            out.append(logits)
            pos += size
        batch = DecodeBatch.build(model, states, extra_tokens=40)
        for t in range(pos, 240):
            out.append(model.decode_step(ids[:, t : t + 1], batch))
    assert (torch.cat(out, dim=1) - full).abs().max().item() <= 1e-3


def test_the_switch_is_a_config_key_and_a_load_option(tmp_path):
    config = tiny_config("tiny")
    save_checkpoint(random_model(config, seed=0), tmp_path / "ckpt")
    assert not load_model(tmp_path / "ckpt").config.kv_quant_sim
    assert load_model(tmp_path / "ckpt", kv_quant_sim=True).config.kv_quant_sim
    assert "kv_quant_sim" not in config.to_official_dict()  # off: the official keys only
    on = config.replace(kv_quant_sim=True).to_official_dict()
    assert ModelConfig.from_dict(on).kv_quant_sim is True
    with pytest.raises(ConfigError, match="kv_quant_sim must be true or false"):
        tiny_config("tiny", kv_quant_sim="yes")
    with pytest.raises(ConfigError, match="power of two"):
        tiny_config("tiny", kv_quant_sim=True, index_head_dim=48)
