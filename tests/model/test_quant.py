"""FP8 e4m3 / FP4 e2m1 / e8m0 formats against hand-computed bit patterns, and round trips."""

import pytest
import torch

from flashbeam.model.checkpoint.formats import (
    QuantFormatError,
    QuantizedWeight,
    dequantize_fp8,
    e8m0_from_exponent,
    e8m0_to_float,
    quantize_fp4,
    quantize_fp8,
    unpack_fp4,
    unpack_fp4_codes,
)


def e8m0(*bytes_: int) -> torch.Tensor:
    return torch.tensor(bytes_, dtype=torch.uint8).view(torch.float8_e8m0fnu)


def e4m3(rows: list[list[int]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.uint8).view(torch.float8_e4m3fn)


def packed(rows: list[list[int]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.uint8).view(torch.int8)


# ---- e8m0 ----------------------------------------------------------------------------------
def test_e8m0_bytes_are_powers_of_two_multipliers():
    got = e8m0_to_float(e8m0(127, 130, 126, 0, 254, 255))
    assert got[:5].tolist() == [1.0, 8.0, 0.5, 2.0**-127, 2.0**127]
    assert torch.isnan(got[5])


def test_e8m0_from_exponent_writes_biased_bytes():
    s = e8m0_from_exponent(torch.tensor([0, 3, -1, -200, 200]))
    assert s.dtype == torch.float8_e8m0fnu
    assert s.view(torch.uint8).tolist() == [127, 130, 126, 0, 254]


def test_float_scales_are_used_as_multipliers_too():
    assert e8m0_to_float(torch.tensor([0.25])).tolist() == [0.25]
    with pytest.raises(QuantFormatError):
        e8m0_to_float(torch.tensor([1], dtype=torch.int32))


# ---- FP8 -----------------------------------------------------------------------------------
def test_e4m3_known_bytes():
    # 0x38 = 0|0111|000 -> 1.0; 0x7E = 0|1111|110 -> 1.75 * 2^8 = 448; 0xC0 = 1|1000|000 -> -2;
    # 0x01 -> smallest subnormal 2^-9; 0x3C = 0|0111|100 -> 1.5
    w = e4m3([[0x38, 0x7E, 0xC0], [0x01, 0x3C, 0x00]])
    got = dequantize_fp8(w, e8m0(127).view(1, 1))
    assert got.tolist() == [[1.0, 448.0, -2.0], [2.0**-9, 1.5, 0.0]]


def test_fp8_scale_multiplies_per_block():
    w = e4m3([[0x38, 0x3C]])
    assert dequantize_fp8(w, e8m0(130).view(1, 1)).tolist() == [[8.0, 12.0]]
    assert dequantize_fp8(w, e8m0(125).view(1, 1)).tolist() == [[0.25, 0.375]]


def test_fp8_ragged_edge_blocks_use_their_own_scale():
    # [130, 129] weight -> 2x2 scale grid; the last row/column blocks are 2 and 1 wide.
    w = torch.full((130, 129), 0x38, dtype=torch.uint8).view(torch.float8_e4m3fn)  # all 1.0
    s = e8m0(127, 128, 129, 130).view(2, 2)  # 1, 2 / 4, 8
    got = dequantize_fp8(w, s, dtype=torch.float64)
    assert got.dtype == torch.float64
    assert got[0, 0] == 1 and got[127, 127] == 1
    assert got[0, 128] == 2 and got[127, 128] == 2
    assert got[128, 0] == 4 and got[129, 127] == 4
    assert got[128, 128] == 8 and got[129, 128] == 8


def test_fp8_rejects_wrong_scale_grid():
    w = torch.zeros(130, 129).to(torch.float8_e4m3fn)
    with pytest.raises(QuantFormatError, match=r"needs \[2, 2\]"):
        dequantize_fp8(w, e8m0(127).view(1, 1))


def test_quantize_fp8_picks_smallest_power_of_two_scale():
    w = torch.zeros(2, 2)
    w[0, 0] = 448.0  # fits exactly at scale 1
    q, s = quantize_fp8(w)
    assert s.view(torch.uint8).tolist() == [[127]]
    assert q.view(torch.uint8)[0, 0].item() == 0x7E
    q, s = quantize_fp8(w * 3)  # 1344 / 448 = 3 -> scale 4
    assert s.view(torch.uint8).tolist() == [[129]]
    q, s = quantize_fp8(torch.zeros(3, 3))  # all-zero block: scale 1, codes 0
    assert s.view(torch.uint8).tolist() == [[127]]
    assert q.view(torch.uint8).sum() == 0


@pytest.mark.parametrize("shape", [(128, 128), (130, 257), (5, 3), (300, 128)])
def test_fp8_round_trip_within_half_an_e4m3_step(shape):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(shape, generator=g) * torch.logspace(-3, 1, shape[1])
    q, s = quantize_fp8(w)
    assert q.dtype == torch.float8_e4m3fn and s.dtype == torch.float8_e8m0fnu
    assert tuple(s.shape) == (-(-shape[0] // 128), -(-shape[1] // 128))
    d = dequantize_fp8(q, s)
    mult = e8m0_to_float(s).repeat_interleave(128, 0)[: shape[0]].repeat_interleave(128, 1)
    mult = mult[:, : shape[1]]
    assert (w / mult).abs().max() <= 448
    # e4m3 has 3 mantissa bits (relative step 2^-3), subnormal step 2^-9 of the scale.
    bound = torch.maximum(w.abs() * 2.0**-4, mult * 2.0**-10)
    assert ((d - w).abs() <= bound).all()
    # Quantized values are a fixed point: quantizing the dequantized weight changes nothing.
    assert torch.equal(dequantize_fp8(*quantize_fp8(d)), d)


# ---- FP4 -----------------------------------------------------------------------------------
def test_fp4_low_nibble_is_the_even_column():
    # 0x21: low nibble 1 -> 0.5 (column 0), high nibble 2 -> 1.0 (column 1).
    # 0xF0: low 0 -> 0.0, high 0xF -> -6.0; 0x9E: low 0xE -> -4.0, high 0x9 -> -0.5.
    p = packed([[0x21, 0xF0, 0x9E] + [0] * 13])
    assert unpack_fp4_codes(p)[0, :6].tolist() == [1, 2, 0, 15, 14, 9]
    got = unpack_fp4(p, e8m0(127).view(1, 1))
    assert got[0, :6].tolist() == [0.5, 1.0, 0.0, -6.0, -4.0, -0.5]
    assert got[0, 6:].abs().sum() == 0


def test_fp4_code_table():
    codes = torch.arange(16, dtype=torch.uint8)
    p = packed([(codes[0::2] | (codes[1::2] << 4)).tolist() + [0] * 8])
    got = unpack_fp4(p, e8m0(127).view(1, 1))[0, :16]
    table = [0, 0.5, 1, 1.5, 2, 3, 4, 6]
    assert got.tolist() == table + [-v for v in table]


def test_fp4_scale_per_32_inputs():
    p = packed([[0x22] * 32])  # 64 inputs, all code 2 (1.0)
    got = unpack_fp4(p, e8m0(127, 129).view(1, 2))
    assert got[0, :32].tolist() == [1.0] * 32
    assert got[0, 32:].tolist() == [4.0] * 32
    with pytest.raises(QuantFormatError, match=r"needs \[1, 2\]"):
        unpack_fp4(p, e8m0(127).view(1, 1))


def test_quantize_fp4_rounds_to_nearest_ties_to_even_code():
    # Block max 6 -> scale 1. Ties: .25->0, .75->1, 1.25->1, 1.75->2, 2.5->2, 3.5->4, 5->4.
    row = [6.0, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -0.3, -0.2, 0.8, -5.5] + [0.0] * 20
    p, s = quantize_fp4(torch.tensor([row]))
    assert s.view(torch.uint8).tolist() == [[127]]
    want = [6.0, 0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, -0.5, 0.0, 1.0, -6.0]
    assert unpack_fp4(p, s)[0, :12].tolist() == want
    assert unpack_fp4_codes(p)[0, 9] == 0  # tiny negatives round to +0, not code 8


def test_quantize_fp4_packs_two_per_byte():
    p, s = quantize_fp4(torch.tensor([[0.5, 1.0] + [0.0] * 29 + [6.0]]))
    assert p.dtype == torch.int8 and tuple(p.shape) == (1, 16)
    assert p.view(torch.uint8)[0, 0] == 0x21
    assert p.view(torch.uint8)[0, 15] == 0x70  # column 31 (odd, high nibble) = code 7


@pytest.mark.parametrize("shape", [(4, 64), (3, 2048), (5, 48), (2, 24)])
def test_fp4_round_trip_within_half_a_code_step(shape):
    g = torch.Generator().manual_seed(1)
    w = torch.randn(shape, generator=g) * torch.logspace(-2, 1, shape[1])
    p, s = quantize_fp4(w)
    assert tuple(p.shape) == (shape[0], shape[1] // 2)
    assert tuple(s.shape) == (shape[0], -(-shape[1] // 32))
    d = unpack_fp4(p, s)
    mult = e8m0_to_float(s).repeat_interleave(32, 1)[:, : shape[1]]
    v = w.abs() / mult
    assert v.max() <= 6
    # half the gap to the next code: .25 below 2, .5 below 4, 1 up to 6
    half_gap = torch.where(v < 2, 0.25, torch.where(v < 4, 0.5, 1.0))
    assert ((d - w).abs() <= half_gap * mult).all()
    assert torch.equal(unpack_fp4(*quantize_fp4(d)), d)


def test_fp4_needs_even_input_dim():
    with pytest.raises(QuantFormatError, match="even"):
        quantize_fp4(torch.zeros(2, 33))


def test_quantized_weight_wraps_both_formats():
    w = torch.randn(130, 64)
    for fmt in ("fp8", "fp4"):
        q = QuantizedWeight.quantize(w, fmt)
        assert q.shape == (130, 64)
        d = q.dequantize(torch.bfloat16)
        assert d.dtype == torch.bfloat16
        assert torch.allclose(d.float(), w, rtol=0.3, atol=0.3)


def test_matches_transformers_dequantizer():
    """An independent reader (transformers' FP8 integration) agrees on both formats."""
    fp8 = pytest.importorskip("transformers.integrations.finegrained_fp8")
    deq = fp8.Fp8Dequantize(None)
    w = torch.randn(256, 384)
    q, s = quantize_fp8(w)
    ref = deq._dequantize_one(q, s.view(torch.uint8), torch.float32)
    assert torch.equal(ref, dequantize_fp8(q, s))
    p, s4 = quantize_fp4(w)
    ref = deq._dequantize_one(p, s4.view(torch.uint8), torch.float32)
    assert torch.equal(ref, unpack_fp4(p, s4))
