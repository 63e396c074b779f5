"""Fused MoE over dense / FP8 / FP4 experts: grouping, reference vs naive loops, Triton vs
reference."""

from __future__ import annotations

import pytest
import torch

from flashbeam.kernels import ExpertWeights
from flashbeam.kernels.moe import align_by_expert, fused_moe_reference, fused_moe_triton

TOL = {
    torch.float32: dict(rtol=1e-4, atol=1e-4),
    torch.float16: dict(rtol=1e-2, atol=1e-2),
    torch.bfloat16: dict(rtol=3e-2, atol=3e-2),
}


def random_experts(fmt: str, e: int, i: int, d: int, device="cpu") -> ExpertWeights:
    shapes = ((i, d), (d, i), (i, d))

    def e8m0(shape):
        return torch.randint(119, 125, shape, dtype=torch.uint8).view(torch.float8_e8m0fnu)

    if fmt == "dense":
        return ExpertWeights(*(torch.randn(e, *s, device=device) * 0.1 for s in shapes))
    if fmt == "fp8":
        w = [torch.randn(e, *s).to(torch.float8_e4m3fn) for s in shapes]
        s = [e8m0((e, -(-o // 128), -(-n // 128))) for o, n in shapes]
    else:
        w = [torch.randint(-128, 128, (e, o, n // 2), dtype=torch.int8) for o, n in shapes]
        s = [e8m0((e, o, n // 32)) for o, n in shapes]
    return ExpertWeights(*(t.to(device) for t in w + s))


def test_align_by_expert_groups_every_pair_once():
    topk_ids = torch.tensor([[3, 0], [3, 1], [3, 0], [2, 3]])
    pair_of_slot, block_expert = align_by_expert(topk_ids, num_experts=5, block_m=2)
    flat = topk_ids.flatten()
    p = flat.numel()
    slots = pair_of_slot.view(-1, 2)
    real = pair_of_slot[pair_of_slot < p]
    assert sorted(real.tolist()) == list(range(p))
    for block, expert in zip(slots.tolist(), block_expert.tolist()):
        for pair in block:
            if pair < p:
                assert flat[pair].item() == expert  # a block holds one expert's pairs
    # expert 3 has 4 pairs -> 2 blocks; experts 0,1,2 one block each; the rest unused (>= E)
    assert block_expert.tolist()[:5] == [0, 1, 2, 3, 3]
    assert all(e >= 5 for e in block_expert.tolist()[5:])


def test_reference_matches_naive_loop():
    experts = random_experts("dense", 3, 8, 6)
    x, ids, w = torch.randn(4, 6), torch.tensor([[0, 2], [1, 1], [2, 0], [0, 1]]), torch.rand(4, 2)
    limit = 0.2
    got = fused_moe_reference(x, ids, w, experts, limit)
    for t in range(4):
        want = torch.zeros(6)
        for slot in range(2):
            e = ids[t, slot].item()
            g = (experts.w1[e] @ x[t]).clamp(max=limit)
            u = (experts.w3[e] @ x[t]).clamp(-limit, limit)
            h = g * torch.sigmoid(g) * u * w[t, slot]
            want += experts.w2[e] @ h
        torch.testing.assert_close(got[t], want)


def test_fp4_expert_hand_values(device):
    # I = 2, D = 32. w1 = w3 bytes 0x11: both nibbles code 1 (0.5), scale 2^1 -> every weight 1.0.
    # w2 bytes 0x02: even column code 2 (1.0), odd column code 0; scale 2^0.
    def e8m0(byte, shape):
        return torch.full(shape, byte, dtype=torch.uint8).view(torch.float8_e8m0fnu).to(device)

    w13 = torch.full((1, 2, 16), 0x11, dtype=torch.int8, device=device)
    w2 = torch.full((1, 32, 1), 0x02, dtype=torch.int8, device=device)
    experts = ExpertWeights(
        w13, w2, w13, e8m0(128, (1, 2, 1)), e8m0(127, (1, 32, 1)), e8m0(128, (1, 2, 1))
    )
    assert experts.fmt == "fp4" and (experts.intermediate, experts.hidden) == (2, 32)
    w1, w2d, _ = experts.dequantized(0)
    assert w1.eq(1.0).all() and w2d[:, 0].eq(1.0).all() and w2d[:, 1].eq(0.0).all()
    # x = ones: g = u = 32 on both rows, h = silu(32) * 32 * 0.5, y = h (only column 0 counts).
    x = torch.ones(1, 32, device=device)
    ids, w = (
        torch.zeros(1, 1, dtype=torch.int64, device=device),
        torch.full((1, 1), 0.5, device=device),
    )
    want = 32 / (1 + torch.exp(torch.tensor(-32.0))) * 32 * 0.5
    for impl in (fused_moe_reference, fused_moe_triton):
        torch.testing.assert_close(
            impl(x, ids, w, experts, None).cpu(), torch.full((1, 32), want.item())
        )
    # With the clamp at 10: g = min(32, 10), u = clamp(32, -10, 10).
    clamped = 10 / (1 + torch.exp(torch.tensor(-10.0))) * 10 * 0.5
    for impl in (fused_moe_reference, fused_moe_triton):
        torch.testing.assert_close(
            impl(x, ids, w, experts, 10.0).cpu(), torch.full((1, 32), clamped.item())
        )


def test_rejects_inconsistent_weights():
    good = random_experts("fp8", 2, 128, 256)
    with pytest.raises(ValueError, match="disagree"):
        ExpertWeights(good.w1, good.w1, good.w3, good.w1_scale, good.w1_scale, good.w3_scale)
    with pytest.raises(ValueError, match="scales"):
        ExpertWeights(good.w1, good.w2, good.w3)
    with pytest.raises(ValueError, match="w2_scale"):
        ExpertWeights(
            good.w1, good.w2, good.w3, good.w1_scale, good.w1_scale[:, :, :0], good.w3_scale
        )


@pytest.mark.parametrize("fmt", ["dense", "fp8", "fp4"])
def test_triton_matches_reference(device, dtype, fmt):
    # I = 160 spans two FP8 scale blocks and is not a multiple of the 64-wide tiles; expert 0
    # gets every token (more than one 16-row block), expert 3 none; the clamp bites at 0.5.
    e, i, d, t = 4, 160, 64, 17
    experts = random_experts(fmt, e, i, d, device)
    x = torch.randn(t, d, device=device).to(dtype)
    ids = torch.stack([torch.zeros(t, dtype=torch.int64), torch.randint(1, 3, (t,))], 1)
    ids, w = ids.to(device), torch.rand(t, 2, device=device)
    native = device == "cuda" and torch.cuda.get_device_capability() >= (8, 9)
    got = fused_moe_triton(x, ids, w, experts, 0.5, native_fp8=native)
    want = fused_moe_reference(x, ids, w, experts, 0.5)
    assert got.dtype == torch.float32 and got.shape == (t, d)
    scale = max(1.0, want.abs().max().item())
    torch.testing.assert_close(got, want, **{key: v * scale for key, v in TOL[dtype].items()})


def test_triton_without_clamp(device):
    experts = random_experts("dense", 3, 32, 48, device)
    x, w = torch.randn(5, 48, device=device) * 10, torch.rand(5, 2, device=device)
    ids = torch.tensor([[0, 1], [1, 2], [2, 0], [0, 2], [1, 0]], device=device)
    got = fused_moe_triton(x, ids, w, experts, None)
    torch.testing.assert_close(
        got, fused_moe_reference(x, ids, w, experts, None), **TOL[torch.float32]
    )
    clamped = fused_moe_reference(x, ids, w, experts, 0.5)
    assert not torch.allclose(got, clamped)  # the inputs are large enough for the clamp to matter


def test_triton_fp8_software_decode_and_single_token(device):
    experts = random_experts("fp8", 3, 128, 64, device)
    x = torch.randn(1, 64, device=device)
    ids, w = torch.tensor([[2, 0]], device=device), torch.tensor([[0.7, 0.3]], device=device)
    got = fused_moe_triton(x, ids, w, experts, 10.0, native_fp8=False)
    torch.testing.assert_close(
        got, fused_moe_reference(x, ids, w, experts, 10.0), rtol=1e-4, atol=1e-3
    )


def test_no_tokens(device):
    experts = random_experts("dense", 2, 16, 16, device)
    x = torch.zeros(0, 16, device=device)
    ids, w = torch.zeros(0, 2, dtype=torch.int64, device=device), torch.zeros(0, 2, device=device)
    assert fused_moe_triton(x, ids, w, experts, 1.0).shape == (0, 16)
    assert fused_moe_reference(x, ids, w, experts, 1.0).shape == (0, 16)
