"""`flashbeam bench kernels`: each Triton kernel against its torch reference at V4-Flash sizes.

Shapes: H=64 query heads of D=512 over one shared K=V head; indexer Hi=64 x Di=128 with top-512;
256 routed FP4 experts (I=2048, D=4096, top-6); FP8 projections of the attention block; the
129,280-token vocabulary. Decode at batch 1/32/128 and context 8k/64k, plus a prefill chunk.
For every case it prints the median time of both sides, the speedup, the bytes and FLOPs the op
must at least move or do, and the achieved fraction of the GPU's HBM bandwidth and dense bf16
tensor-core peak (decode is judged against bandwidth, prefill against compute).

Without CUDA it runs a tiny CPU smoke of each reference and prints {"error": "no CUDA device"}.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .attention import sparse_attention_reference, sparse_attention_triton
from .bitmask import apply_token_bitmask_reference_, apply_token_bitmask_triton_
from .indexer import indexer_topk_reference, indexer_topk_triton
from .moe import ExpertWeights, fused_moe_reference, fused_moe_triton
from .quant import fp8_linear_reference, fp8_linear_triton

# Vendor datasheet peaks: (HBM bytes/s, dense bf16 FLOP/s). Matched on the device name.
ROOFLINES = (
    ("H200", 4.8e12, 989e12),
    ("H100 PCIe", 2.0e12, 756e12),
    ("H100 NVL", 3.9e12, 835e12),
    ("H100", 3.35e12, 989e12),
    ("A100", 2.0e12, 312e12),
)
HEADS, HEAD_DIM, WINDOW, CSA_TOPK = 64, 512, 128, 512
INDEX_HEADS, INDEX_DIM = 64, 128
EXPERTS, TOPK, HIDDEN, INTER, SWIGLU_LIMIT = 256, 6, 4096, 2048, 10.0
VOCAB = 129280
FP8_PROJECTIONS = {"wq_b": (32768, 1024), "wq_a": (1024, 4096), "wo_b": (4096, 8192)}


@dataclass
class Case:
    kernel: str
    phase: str  # "decode" | "prefill"
    shape: dict
    bytes: float  # minimum HBM traffic
    flops: float
    triton: Callable[[], object]
    reference: Callable[[], object]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flashbeam bench kernels", description=__doc__)
    parser.add_argument("--kernels", default="attention,indexer,moe,fp8_linear,bitmask")
    parser.add_argument("--quick", action="store_true", help="batch 1 and 8k context only")
    parser.add_argument("--no-reference", action="store_true", help="time the Triton side only")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(json.dumps({"error": "no CUDA device", "cpu_smoke": _cpu_smoke()}))
        return 0
    import triton.testing

    device = torch.cuda.get_device_name()
    hbm, peak = next(((b, f) for key, b, f in ROOFLINES if key in device), (math.nan, math.nan))
    batches, contexts = ((1,), (8192,)) if args.quick else ((1, 32, 128), (8192, 65536))
    builders = {
        "attention": _attention_cases,
        "indexer": _indexer_cases,
        "moe": _moe_cases,
        "fp8_linear": _fp8_linear_cases,
        "bitmask": _bitmask_cases,
    }
    results = []
    for name in args.kernels.split(","):
        if name not in builders:
            parser.error(f"unknown kernel {name!r}; choose from {','.join(builders)}")
        for case in builders[name](batches, contexts):
            results.append(_measure(case, hbm, peak, args.no_reference, triton.testing.do_bench))
            torch.cuda.empty_cache()
    roofline = {"hbm_gb_s": hbm / 1e9, "bf16_tflop_s": peak / 1e12}
    print(json.dumps({"device": device, "roofline": roofline, "results": results}))
    return 0


def _measure(case: Case, hbm: float, peak: float, no_reference: bool, do_bench) -> dict:
    row = {"kernel": case.kernel, "phase": case.phase, **case.shape}
    try:
        ms = do_bench(case.triton, warmup=10, rep=50, return_mode="median")
    except Exception as exc:  # a failing case is reported, the others still run
        return {**row, "error": f"triton: {type(exc).__name__}: {exc}"[:500]}
    row.update(
        triton_ms=round(ms, 4),
        gb_s=round(case.bytes / ms / 1e6, 1),
        tflop_s=round(case.flops / ms / 1e9, 2),
        hbm_roofline_pct=round(100 * case.bytes / (ms * 1e-3) / hbm, 1),
        tc_roofline_pct=round(100 * case.flops / (ms * 1e-3) / peak, 1),
    )
    if not no_reference:
        try:
            ref_ms = do_bench(case.reference, warmup=2, rep=20, return_mode="median")
            row.update(reference_ms=round(ref_ms, 4), speedup=round(ref_ms / ms, 2))
        except Exception as exc:
            row["reference_error"] = f"{type(exc).__name__}: {exc}"[:500]
    return row


# ----------------------------------------------------------------------------- cases


def _attention_cases(batches, contexts):
    """CSA layer: window + top-512 compressed entries; HCA layer: window + every entry."""
    dev, bf = "cuda", torch.bfloat16
    sink = torch.randn(HEADS, device=dev)
    scale = HEAD_DIM**-0.5
    shapes = [("decode", b, c) for b in batches for c in contexts]
    shapes.append(("prefill", 4096, contexts[0]))
    for phase, n, ctx in shapes:
        for layer, compressed in (("csa", min(CSA_TOPK, ctx // 4)), ("hca", ctx // 128)):
            k = WINDOW + compressed
            seqs = n if phase == "decode" else 1
            per_seq = WINDOW + (ctx // 4 if layer == "csa" else ctx // 128)
            kv = torch.randn(seqs * per_seq, HEAD_DIM, device=dev, dtype=bf)
            seq = torch.arange(n, device=dev) if phase == "decode" else torch.zeros(n, device=dev)
            offs = torch.randint(0, per_seq, (n, k), device=dev)
            idx = (seq.long()[:, None] * per_seq + offs).to(torch.int32)
            q = torch.randn(n, HEADS, HEAD_DIM, device=dev, dtype=bf)
            rows = torch.unique(idx).numel()
            yield Case(
                kernel=f"sparse_attention[{layer}]",
                phase=phase,
                shape={"batch_or_tokens": n, "context": ctx, "keys_per_query": k},
                bytes=rows * HEAD_DIM * 2 + 2 * q.numel() * 2 + idx.numel() * 4,
                flops=4 * n * HEADS * k * HEAD_DIM,
                triton=lambda q=q, kv=kv, idx=idx: sparse_attention_triton(q, kv, idx, sink, scale),
                reference=lambda q=q, kv=kv, idx=idx: sparse_attention_reference(
                    q, kv, idx, sink, scale
                ),
            )


def _indexer_cases(batches, contexts):
    """Decode: each sequence scores all its ctx/4 entries; prefill: a causal chunk of 2048
    tokens at the end of the context."""
    dev, bf = "cuda", torch.bfloat16
    shapes = [("decode", b, c) for b in batches for c in contexts]
    shapes.append(("prefill", 2048, contexts[0]))
    for phase, n, ctx in shapes:
        entries = ctx // 4
        if phase == "decode":
            keys = torch.randn(n * entries, INDEX_DIM, device=dev, dtype=bf)
            start = torch.arange(n, device=dev) * entries
            end = start + entries
            key_bytes = keys.numel() * 2
        else:
            keys = torch.randn(entries, INDEX_DIM, device=dev, dtype=bf)
            pos = torch.arange(ctx - n, ctx, device=dev)
            start, end = torch.zeros_like(pos), (pos + 1) // 4
            key_bytes = keys.numel() * 2
        q = torch.randn(n, INDEX_HEADS, INDEX_DIM, device=dev, dtype=bf)
        w = torch.randn(n, INDEX_HEADS, device=dev)
        scored = int((end - start).sum())
        yield Case(
            kernel="indexer_topk",
            phase=phase,
            shape={"batch_or_tokens": n, "context": ctx, "k": CSA_TOPK},
            bytes=key_bytes + q.numel() * 2 + scored * 4,
            flops=2 * scored * INDEX_HEADS * INDEX_DIM,
            triton=lambda a=(q, w, keys, start, end, CSA_TOPK): indexer_topk_triton(*a),
            reference=lambda a=(q, w, keys, start, end, CSA_TOPK): indexer_topk_reference(*a),
        )


def _moe_cases(batches, contexts):
    """FP4 routed experts as in the checkpoint (and FP8 for comparison); expert choice uniform."""
    dev = "cuda"
    for fmt in ("fp4", "fp8"):
        experts = _random_experts(fmt, dev)
        weight_bytes = sum(
            t.numel() * t.element_size()
            for t in (experts.w1, experts.w2, experts.w3)
            + (experts.w1_scale, experts.w2_scale, experts.w3_scale)
        )
        for phase, t in [("decode", b) for b in batches] + [("prefill", 4096)]:
            x = torch.randn(t, HIDDEN, device=dev, dtype=torch.bfloat16)
            ids = torch.rand(t, EXPERTS, device=dev).topk(TOPK, dim=1).indices
            w = torch.rand(t, TOPK, device=dev)
            active = torch.unique(ids).numel()
            yield Case(
                kernel=f"fused_moe[{fmt}]",
                phase=phase,
                shape={"batch_or_tokens": t, "active_experts": active},
                bytes=weight_bytes * active / EXPERTS + x.numel() * 2 + t * HIDDEN * 4,
                flops=2 * t * TOPK * 3 * INTER * HIDDEN,
                triton=lambda a=(x, ids, w, experts, SWIGLU_LIMIT): fused_moe_triton(*a),
                reference=lambda a=(x, ids, w, experts, SWIGLU_LIMIT): fused_moe_reference(*a),
            )
        del experts


def _fp8_linear_cases(batches, contexts):
    dev = "cuda"
    for name, (out_dim, in_dim) in FP8_PROJECTIONS.items():
        weight = torch.randn(out_dim, in_dim, device=dev).to(torch.float8_e4m3fn)
        scale = _random_scales((-(-out_dim // 128), -(-in_dim // 128)), dev)
        for phase, m in [("decode", b) for b in batches] + [("prefill", 4096)]:
            x = torch.randn(m, in_dim, device=dev, dtype=torch.bfloat16)
            yield Case(
                kernel=f"fp8_linear[{name}]",
                phase=phase,
                shape={"batch_or_tokens": m, "out": out_dim, "in": in_dim},
                bytes=weight.numel() + scale.numel() + (x.numel() + m * out_dim) * 2,
                flops=2 * m * out_dim * in_dim,
                triton=lambda x=x, w=weight, s=scale: fp8_linear_triton(x, w, s),
                reference=lambda x=x, w=weight, s=scale: fp8_linear_reference(x, w, s),
            )


def _bitmask_cases(batches, contexts):
    dev = "cuda"
    for b in batches:
        logits = torch.randn(b, VOCAB, device=dev)
        mask = torch.randint(
            -(2**31), 2**31 - 1, (b, -(-VOCAB // 32)), dtype=torch.int32, device=dev
        )
        yield Case(
            kernel="apply_token_bitmask_",
            phase="decode",
            shape={"batch_or_tokens": b, "vocab": VOCAB},
            bytes=logits.numel() * 4 * 2 + mask.numel() * 4,
            flops=0,
            triton=lambda lg=logits, m=mask: apply_token_bitmask_triton_(lg, m),
            reference=lambda lg=logits, m=mask: apply_token_bitmask_reference_(lg, m),
        )


def _random_scales(shape, device) -> torch.Tensor:
    """e8m0 scales near 2^-7..2^-5, the range real checkpoints use for these weights."""
    return torch.randint(120, 123, shape, dtype=torch.uint8, device=device).view(
        torch.float8_e8m0fnu
    )


def _random_experts(fmt: str, device, e: int = EXPERTS, i: int = INTER, d: int = HIDDEN):
    shapes = ((i, d), (d, i), (i, d))
    if fmt == "fp4":
        weights = [
            torch.randint(-128, 128, (e, o, n // 2), dtype=torch.int8, device=device)
            for o, n in shapes
        ]
        scales = [_random_scales((e, o, n // 32), device) for o, n in shapes]
    elif fmt == "fp8":
        weights = [
            torch.randn(e, o, n, device=device, dtype=torch.bfloat16).to(torch.float8_e4m3fn)
            for o, n in shapes
        ]
        scales = [_random_scales((e, -(-o // 128), -(-n // 128)), device) for o, n in shapes]
    else:
        weights = [torch.randn(e, o, n, device=device) * 0.05 for o, n in shapes]
        scales = [None, None, None]
    return ExpertWeights(*weights, *scales)


def _cpu_smoke() -> dict:
    """Each reference once at toy sizes: proves the CPU path runs, measures nothing real."""
    torch.manual_seed(0)
    q, kv = torch.randn(2, 4, 64), torch.randn(16, 64)
    idx = torch.randint(-1, 16, (2, 8), dtype=torch.int32)
    experts = _random_experts("fp4", "cpu", e=4, i=64, d=64)
    mask = torch.full((2, 4), -1, dtype=torch.int32)
    cases = {
        "sparse_attention": lambda: sparse_attention_reference(q, kv, idx, torch.zeros(4), 0.125),
        "indexer_topk": lambda: indexer_topk_reference(
            q, torch.randn(2, 4), kv, torch.tensor([0, 4]), torch.tensor([10, 16]), 4
        ),
        "fused_moe": lambda: fused_moe_reference(
            torch.randn(3, 64), torch.randint(0, 4, (3, 2)), torch.rand(3, 2), experts, 10.0
        ),
        "fp8_linear": lambda: fp8_linear_reference(
            torch.randn(3, 64),
            torch.randn(32, 64).to(torch.float8_e4m3fn),
            _random_scales((1, 1), "cpu"),
        ),
        "apply_token_bitmask_": lambda: apply_token_bitmask_reference_(torch.randn(2, 100), mask),
    }
    out = {}
    for name, fn in cases.items():
        t0 = time.perf_counter()
        fn()
        out[name] = {"ok": True, "ms": round((time.perf_counter() - t0) * 1e3, 3)}
    return out


if __name__ == "__main__":
    raise SystemExit(main())
