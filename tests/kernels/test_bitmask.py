"""Token bitmask: llguidance's layout (bit j of word i allows token 32*i + j)."""

from __future__ import annotations

import pytest
import torch

from flashbeam.kernels.bitmask import apply_token_bitmask_reference_, apply_token_bitmask_triton_

NEG_INF = float("-inf")
IMPLS = [apply_token_bitmask_reference_, apply_token_bitmask_triton_]


def naive_mask(logits: torch.Tensor, bitmask: torch.Tensor) -> torch.Tensor:
    out = logits.clone()
    for b in range(logits.shape[0]):
        for v in range(logits.shape[1]):
            word = v // 32
            allowed = word < bitmask.shape[1] and (int(bitmask[b, word]) >> (v % 32)) & 1
            if not allowed:
                out[b, v] = NEG_INF
    return out


@pytest.mark.parametrize("impl", IMPLS)
def test_hand_computed_bits(device, impl):
    logits = torch.zeros(2, 40, device=device)
    bitmask = torch.tensor(
        [[0b101, 0b1], [-(2**31), 0]],  # row 0: tokens 0, 2, 32; row 1: token 31 (sign bit)
        dtype=torch.int32,
        device=device,
    )
    impl(logits, bitmask)
    allowed = [(logits[r] == 0).nonzero().flatten().tolist() for r in range(2)]
    assert allowed == [[0, 2, 32], [31]]
    assert logits[0, 1].item() == NEG_INF


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("vocab,words", [(70, 3), (100, 3), (1500, 47)])
def test_matches_per_element_loop(device, dtype, impl, vocab, words):
    # (100, 3): the model's vocabulary runs past the mask -> the tail is disallowed.
    logits = torch.randn(3, vocab, device=device).to(dtype)
    bitmask = torch.randint(-(2**31), 2**31 - 1, (3, words), dtype=torch.int32, device=device)
    bitmask[1] = -1  # everything allowed (within the mask)
    want = naive_mask(logits.cpu(), bitmask.cpu())
    assert impl(logits, bitmask) is logits  # in place
    assert torch.equal(logits.cpu(), want)


def test_rejects_non_int32_mask():
    with pytest.raises(TypeError):
        apply_token_bitmask_reference_(torch.zeros(1, 32), torch.zeros(1, 1, dtype=torch.int64))
