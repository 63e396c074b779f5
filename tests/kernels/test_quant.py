"""FP8/FP4 weight formats (hand-computed bit patterns) and the FP8 block-scaled linear."""

from __future__ import annotations

import pytest
import torch

from flashbeam.kernels import dequantize_fp8_blocks, e8m0_to_float, unpack_fp4
from flashbeam.kernels.quant import fp8_linear_reference, fp8_linear_triton

# (e4m3fn byte, value): sign | 4 exponent bits (bias 7) | 3 mantissa bits.
E4M3_CASES = [
    (0x00, 0.0),
    (0x38, 1.0),  # exp 7 -> 2^0
    (0x3C, 1.5),  # mantissa 100 -> 1.5
    (0x40, 2.0),
    (0xC0, -2.0),
    (0x08, 2.0**-6),  # smallest normal
    (0x01, 2.0**-9),  # smallest subnormal: 1/8 * 2^-6
    (0x7E, 448.0),  # largest finite: 1.75 * 2^8
]


def e8m0(*values: int, shape=None) -> torch.Tensor:
    t = torch.tensor(values, dtype=torch.uint8)
    return (t.reshape(shape) if shape else t).view(torch.float8_e8m0fnu)


def fp8_bytes(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.uint8).view(torch.float8_e4m3fn)


def tolerance(dtype: torch.dtype) -> dict:
    return {
        torch.float32: dict(rtol=1e-4, atol=1e-4),
        torch.float16: dict(rtol=2e-3, atol=2e-3),
        torch.bfloat16: dict(rtol=1.6e-2, atol=1e-2),
    }[dtype]


def test_e8m0_is_a_power_of_two_multiplier():
    assert e8m0_to_float(e8m0(127, 128, 125, 134)).tolist() == [1.0, 2.0, 0.25, 128.0]
    raw = torch.tensor([126], dtype=torch.uint8)
    assert e8m0_to_float(raw).item() == 0.5  # raw bytes are accepted too
    assert e8m0_to_float(torch.tensor([0.25], dtype=torch.bfloat16)).tolist() == [0.25]
    assert e8m0_to_float(e8m0(255)).isnan().all()
    with pytest.raises(TypeError):
        e8m0_to_float(torch.ones(1, dtype=torch.int32))


def test_fp8_block_dequant_hand_values():
    weight = fp8_bytes([[b for b, _ in E4M3_CASES]])  # [1, 8]
    got = dequantize_fp8_blocks(weight, e8m0(128, shape=(1, 1)))  # scale 2
    assert got.tolist() == [[2 * v for _, v in E4M3_CASES]]


def test_fp8_block_dequant_matches_per_element_loop():
    out_dim, in_dim = 131, 260  # partial last blocks on both axes
    weight = torch.randn(out_dim, in_dim).to(torch.float8_e4m3fn)
    scale_bytes = torch.randint(110, 140, (2, 3), dtype=torch.uint8)
    got = dequantize_fp8_blocks(weight, scale_bytes.view(torch.float8_e8m0fnu))
    w, s = weight.float().tolist(), scale_bytes.tolist()
    want = [
        [w[i][j] * 2.0 ** (s[i // 128][j // 128] - 127) for j in range(in_dim)]
        for i in range(out_dim)
    ]
    assert got.tolist() == want


def test_fp8_block_dequant_rejects_wrong_scale_shape():
    with pytest.raises(ValueError, match="block scales"):
        dequantize_fp8_blocks(torch.zeros(130, 10).to(torch.float8_e4m3fn), e8m0(127, shape=(1, 1)))


def test_unpack_fp4_hand_values():
    # 0x21: low nibble 1 (0.5) is column 0, high nibble 2 (1.0) column 1;
    # 0xF8: 8 = -0, F = -6; 0x7A: A = sign|2 -> -1.0, 7 -> 6.0.
    packed = torch.tensor([[0x21, 0xF8 - 256, 0x7A]], dtype=torch.int8)
    assert unpack_fp4(packed).tolist() == [[0.5, 1.0, -0.0, -6.0, -1.0, 6.0]]


def test_unpack_fp4_every_byte_and_scales():
    table = [0, 0.5, 1, 1.5, 2, 3, 4, 6]

    def e2m1(code: int) -> float:
        return -table[code & 7] if code & 8 else table[code & 7]

    packed = torch.arange(256, dtype=torch.uint8).reshape(4, 64)
    scale = e8m0(*range(112, 128), shape=(4, 4))  # per row, per 32 columns
    got = unpack_fp4(packed, scale)
    for i in range(4):
        for j in range(128):
            byte = int(packed[i, j // 2])
            code = byte & 0xF if j % 2 == 0 else byte >> 4
            assert got[i, j].item() == e2m1(code) * 2.0 ** (112 + 4 * i + j // 32 - 127)


def test_fp8_linear_reference_against_loop():
    x = torch.randn(2, 3, 40)
    weight = torch.randn(5, 40).to(torch.float8_e4m3fn)
    scale = e8m0(126, shape=(1, 1))
    got = fp8_linear_reference(x, weight, scale)
    w = weight.float() * 0.5
    for a in range(2):
        for b in range(3):
            for o in range(5):
                want = sum(x[a, b, i].item() * w[o, i].item() for i in range(40))
                assert got[a, b, o].item() == pytest.approx(want, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("native_fp8", [True, False])
def test_fp8_linear_triton_decodes_every_byte_exactly(device, native_fp8):
    if device == "cuda" and native_fp8 and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("hardware e4m3 needs sm_89+")
    codes = torch.arange(256, dtype=torch.uint8)
    codes[codes & 0x7F == 0x7F] = 0  # NaN encodings
    weight = codes.view(torch.float8_e4m3fn).reshape(16, 16).to(device)
    eye = torch.eye(16, device=device)
    got = fp8_linear_triton(eye, weight, e8m0(127, shape=(1, 1)).to(device), native_fp8)
    assert torch.equal(got.T.cpu(), weight.float().cpu())


@pytest.mark.parametrize("shape", [(1, 200, 16), (5, 300, 130), (2, 3, 64, 40)])
def test_fp8_linear_triton_matches_reference(device, dtype, shape):
    *lead, in_dim, out_dim = shape
    x = torch.randn(*lead, in_dim, device=device).to(dtype)
    weight = torch.randn(out_dim, in_dim, device=device).to(torch.float8_e4m3fn)
    scale = torch.randint(118, 130, (-(-out_dim // 128), -(-in_dim // 128)), dtype=torch.uint8)
    scale = scale.view(torch.float8_e8m0fnu).to(device)
    native = device == "cuda" and torch.cuda.get_device_capability() >= (8, 9)
    got = fp8_linear_triton(x, weight, scale, native_fp8=native)
    want = fp8_linear_reference(x, weight, scale)
    assert got.shape == (*lead, out_dim) and got.dtype == dtype
    torch.testing.assert_close(got.float(), want.float(), **tolerance(dtype))


def test_fp8_linear_triton_empty_batch(device):
    weight = torch.zeros(8, 16, device=device).to(torch.float8_e4m3fn)
    scale = e8m0(127, shape=(1, 1)).to(device)
    got = fp8_linear_triton(torch.zeros(0, 16, device=device), weight, scale)
    assert got.shape == (0, 8)
