"""Triton import shim: the kernel modules import cleanly where triton is missing (e.g. macOS).

Without triton, `triton.jit` leaves the kernel bodies as plain functions that nothing calls (the
dispatcher never picks the Triton path then) and `tl.constexpr` exists for their annotations.
"""

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # pragma: no cover - exercised only on platforms without triton
    HAS_TRITON = False

    class _Missing:
        constexpr = object

        @staticmethod
        def jit(fn=None, **_kwargs):
            return fn if fn is not None else (lambda f: f)

    triton = tl = _Missing()

__all__ = ["HAS_TRITON", "triton", "tl"]
