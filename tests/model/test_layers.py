"""Layer building blocks: rope on interleaved pairs, on the inference and the autograd path."""

import pytest
import torch

from flashbeam.model.network.layers import apply_rope


def _rotate_pairs(x, cos, sin):
    """The 2x2 rotation of each (even, odd) pair of x's trailing 2*len(cos) dims, written out."""
    rd = 2 * cos.shape[-1]
    even, odd = x[..., -rd::2], x[..., -rd + 1 :: 2]
    out = x.clone()
    out[..., -rd::2] = even * cos - odd * sin
    out[..., -rd + 1 :: 2] = even * sin + odd * cos
    return out


@pytest.mark.parametrize("strided", [False, True])
def test_rope_rotates_the_trailing_pairs_on_both_paths(strided):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 4, 32, generator=gen)
    if strided:  # a head-major view, as attention outputs can be
        x = torch.randn(3, 4, 5, 32, generator=gen).transpose(1, 2)
    angles = torch.rand(3, 5, 1, 8, generator=gen) * 6
    cos, sin = angles.cos(), angles.sin()
    expected = _rotate_pairs(x, cos, sin)
    before = x.clone()
    with torch.inference_mode():
        inferred = apply_rope(x, cos, sin)
    leaf = x.clone().requires_grad_()
    tracked = apply_rope(leaf, cos, sin)
    torch.testing.assert_close(inferred, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(tracked.detach(), inferred, rtol=0, atol=0)
    assert torch.equal(x, before)  # the input is left as it was
    tracked.sum().backward()
    assert leaf.grad is not None and leaf.grad.shape == x.shape
    with torch.inference_mode():
        back = apply_rope(inferred, cos, sin, inverse=True)
    torch.testing.assert_close(back, x, rtol=1e-5, atol=1e-5)
