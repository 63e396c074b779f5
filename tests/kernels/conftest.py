"""Kernel tests run the Triton kernels on CUDA when there is a GPU, else in Triton's interpreter
on CPU. TRITON_INTERPRET is read when a kernel is decorated, so it is set here, before anything
imports flashbeam.kernels (tests/conftest.py should do the same if other test directories that
import the kernels are collected first)."""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cpu" if INTERPRET else "cuda"


def _interpreter_bf16_dot_works() -> bool:
    import triton
    import triton.language as tl

    @triton.jit
    def probe(a_ptr, out_ptr):
        r = tl.arange(0, 16)
        a = tl.load(a_ptr + r[:, None] * 16 + r[None, :])
        tl.store(out_ptr + r[:, None] * 16 + r[None, :], tl.dot(a, a))

    a = torch.eye(16, dtype=torch.bfloat16) * 2
    out = torch.empty(16, 16)
    probe[(1,)](a, out)
    return torch.equal(out, torch.eye(16) * 4)


def _patch_interpreter_bf16_dot() -> None:
    """Triton's interpreter stores bf16 as raw uint16 and its `tl.dot` multiplies those bit
    patterns (triton-lang/triton#11584, unsupported upstream). Convert bf16 operands to fp32
    first, as the GPU's tensor cores effectively do, so bf16 kernels are testable on CPU."""
    import triton.language as tl
    from triton.runtime.interpreter import InterpreterBuilder

    original = InterpreterBuilder.create_dot

    def create_dot(self, a, b, d, *args, **kwargs):
        if a.dtype.scalar == tl.bfloat16:
            a = self.cast_impl(a, tl.float32)
        if b.dtype.scalar == tl.bfloat16:
            b = self.cast_impl(b, tl.float32)
        return original(self, a, b, d, *args, **kwargs)

    InterpreterBuilder.create_dot = create_dot


BF16_OK = True
if INTERPRET and not _interpreter_bf16_dot_works():
    _patch_interpreter_bf16_dot()
    BF16_OK = _interpreter_bf16_dot_works()

# Activation dtypes every Triton test runs with (bf16 only where the interpreter handles it).
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if BF16_OK else [])


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "dtype" in metafunc.fixturenames:
        metafunc.parametrize("dtype", DTYPES, ids=[str(d).removeprefix("torch.") for d in DTYPES])


@pytest.fixture(scope="session")
def device() -> str:
    """Where the Triton kernels run; fails clearly if they were decorated before
    TRITON_INTERPRET was set (i.e. some earlier module imported flashbeam.kernels)."""
    if INTERPRET:
        from triton.runtime.interpreter import InterpretedFunction

        from flashbeam.kernels import attention

        if not isinstance(attention._sparse_attention_kernel, InterpretedFunction):
            pytest.fail(
                "flashbeam.kernels was imported before tests/kernels/conftest.py set "
                "TRITON_INTERPRET=1; set it at the top of tests/conftest.py"
            )
    return DEVICE


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
