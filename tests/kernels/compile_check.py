"""Compile every Triton kernel for real NVIDIA targets on a machine without a GPU.

The interpreter runs kernels with numpy semantics and misses what only the GPU compiler checks
(types through loops, layouts, dot shapes, fp8 support per architecture). This script runs each
launcher on small CPU tensors with the kernel swapped for a recorder, then compiles the recorded
launches with `triton.compile` down to cubin for Hopper (sm_90), and the kernels that read FP8
for Ampere (sm_80, where e4m3 is decoded in software). It must run without TRITON_INTERPRET
(test_compile.py runs it in a subprocess); it prints one JSON object:
{"compiled": [...], "failed": {name: error}}.
"""

from __future__ import annotations

import json
import os
import sys

import torch

assert not os.environ.get("TRITON_INTERPRET"), "run without TRITON_INTERPRET"

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402
from triton.runtime.jit import mangle_type  # noqa: E402

from flashbeam.kernels import attention, bitmask, indexer, moe, quant  # noqa: E402

KERNELS = {
    (attention, "_sparse_attention_kernel"),
    (bitmask, "_bitmask_kernel"),
    (indexer, "_indexer_score_kernel"),
    (moe, "_moe_gate_up_kernel"),
    (moe, "_moe_down_kernel"),
    (quant, "_fp8_linear_kernel"),
}


class _Recorder:
    def __init__(self, kernel, launches):
        self.kernel = kernel
        self.launches = launches

    def __getitem__(self, grid):
        def record(*args, **kwargs):
            self.launches.append((self.kernel, args, kwargs))

        return record


def _source(kernel, args, kwargs):
    options = {k: kwargs.pop(k) for k in ("num_warps", "num_stages") if k in kwargs}
    values = dict(zip(kernel.arg_names, args), **kwargs)
    signature, constexprs = {}, {}
    for param in kernel.params:
        value = values[param.name]
        if param.is_constexpr:
            signature[param.name] = "constexpr"
            constexprs[param.name] = value
        else:
            signature[param.name] = mangle_type(value)
    return ASTSource(kernel, signature, constexprs), options


def _launches(native_fp8: bool):
    """Representative bf16 launches of every kernel (shapes are small; types are what matter)."""
    torch.manual_seed(0)
    bf = torch.bfloat16
    q, kv = torch.randn(3, 8, 512, dtype=bf), torch.randn(40, 512, dtype=bf)
    idx = torch.randint(-1, 40, (3, 70), dtype=torch.int32)
    for splits in (1, 2):
        attention.sparse_attention_triton(q, kv, idx, torch.zeros(8), 512**-0.5, num_splits=splits)
    qi, keys = torch.randn(2, 64, 128, dtype=bf), torch.randn(300, 128, dtype=bf)
    rng = torch.tensor([0, 10]), torch.tensor([300, 200])
    indexer.indexer_topk_triton(qi, torch.randn(2, 64), keys, *rng, 16, tiles_per_program=4)
    x = torch.randn(5, 256, dtype=bf)
    w8 = torch.randn(192, 256).to(torch.float8_e4m3fn)
    s8 = torch.full((2, 2), 127, dtype=torch.uint8).view(torch.float8_e8m0fnu)
    quant.fp8_linear_triton(x, w8, s8, native_fp8=native_fp8)
    quant.fp8_linear_triton(x, w8[:16], s8[:1], native_fp8=native_fp8)  # thin decode tiles
    ids, tw = torch.randint(0, 4, (5, 2)), torch.rand(5, 2)
    for fmt in ("dense", "fp8", "fp4"):
        moe.fused_moe_triton(x, ids, tw, _experts(fmt, 4, 128, 256), 10.0, native_fp8=native_fp8)
    bitmask.apply_token_bitmask_triton_(
        torch.randn(2, 100, dtype=bf), torch.zeros(2, 4, dtype=torch.int32)
    )


def _experts(fmt: str, e: int, i: int, d: int) -> moe.ExpertWeights:
    def scale(*shape):
        return torch.full(shape, 127, dtype=torch.uint8).view(torch.float8_e8m0fnu)

    if fmt == "dense":
        return moe.ExpertWeights(
            *(torch.randn(e, *s, dtype=torch.bfloat16) for s in ((i, d), (d, i), (i, d)))
        )
    if fmt == "fp8":
        w = [torch.randn(e, *s).to(torch.float8_e4m3fn) for s in ((i, d), (d, i), (i, d))]
        return moe.ExpertWeights(*w, scale(e, 1, 2), scale(e, 2, 1), scale(e, 1, 2))
    w = [torch.zeros(e, o, n // 2, dtype=torch.int8) for o, n in ((i, d), (d, i), (i, d))]
    return moe.ExpertWeights(*w, scale(e, i, d // 32), scale(e, d, i // 32), scale(e, i, d // 32))


def _decodes_fp8(kwargs: dict) -> bool:
    return "NATIVE_FP8" in kwargs and kwargs.get("FMT", 1) == 1


def main() -> int:
    compiled, failed = [], {}
    for arch, native_fp8 in ((90, True), (80, False)):
        launches = []
        originals = {(mod, name): getattr(mod, name) for mod, name in KERNELS}
        try:
            for (mod, name), kernel in originals.items():
                setattr(mod, name, _Recorder(kernel, launches))
            _launches(native_fp8)
        finally:
            for (mod, name), kernel in originals.items():
                setattr(mod, name, kernel)
        for n, (kernel, args, kwargs) in enumerate(launches):
            if arch == 80 and not _decodes_fp8(kwargs):
                continue  # Ampere is checked for what differs there: software e4m3 decoding
            label = f"sm_{arch}:{kernel.__name__}#{n}"
            try:
                src, options = _source(kernel, args, dict(kwargs))
                triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)
                compiled.append(label)
            except Exception as exc:  # report every failure, not just the first
                failed[label] = f"{type(exc).__name__}: {exc}"[:2000]
    print(json.dumps({"compiled": compiled, "failed": failed}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
