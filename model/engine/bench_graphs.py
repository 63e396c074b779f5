"""`flashbeam bench decode-graphs`: decode tokens/s with CUDA graphs vs eager, per batch size.

For each batch size B, B sequences are prefilled with `prompt_len` tokens and then decode
`steps` tokens greedily, once through the eager runner and once through a runner replaying a
CUDA graph of the step (`decode_graphs`), on the same model in the same process. Only the decode
steps are timed (after `warmup` untimed steps, which on CUDA include the capture). Both runs
must pick the same tokens; the agreement is reported. Off CUDA there is nothing to capture: the
graphed runner runs the same static steps eagerly, so its ratio measures the static step's
padded shapes, not graphs.
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

import torch

from flashbeam.model.checkpoint.loading import load_model
from flashbeam.model.checkpoint.random_init import write_random_checkpoint
from flashbeam.model.engine.bench import random_prompts
from flashbeam.model.engine.runner import ModelRunner
from flashbeam.model.network.config import tiny_config
from flashbeam.model.network.transformer import Transformer


def bench_decode_graphs(
    batches: tuple[int, ...] = (1, 8, 64),
    steps: int = 64,
    prompt_len: int = 256,
    warmup: int = 4,
    preset: str = "tiny",
    checkpoint: str | None = None,
    device: str | None = None,
    dtype: str = "bfloat16",
    threads: int | None = None,
) -> dict[str, Any]:
    if threads:
        torch.set_num_threads(threads)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch_dtype = getattr(torch, dtype)
    with tempfile.TemporaryDirectory() as tmp:
        path = checkpoint or write_random_checkpoint(tmp, tiny_config(preset), seed=0)
        model = load_model(path, device, torch_dtype)
    results = []
    for batch in batches:
        eager = _decode_rate(ModelRunner(model), model, batch, steps, prompt_len, warmup)
        graphed_runner = ModelRunner(model, graph_sizes=[batch])
        graphed = _decode_rate(graphed_runner, model, batch, steps, prompt_len, warmup)
        results.append(
            {
                "batch": batch,
                "eager_tokens_per_s": round(eager["tokens_per_s"], 1),
                "graphs_tokens_per_s": round(graphed["tokens_per_s"], 1),
                "ratio": round(graphed["tokens_per_s"] / eager["tokens_per_s"], 3),
                "eager_step_ms": round(eager["step_ms"], 3),
                "graphs_step_ms": round(graphed["step_ms"], 3),
                "token_agreement": _agreement(eager["tokens"], graphed["tokens"]),
                "graph_replays": graphed_runner.graphs.stats["replays"],
            }
        )
        del graphed_runner
    return {
        "benchmark": "decode-graphs",
        "device": str(model.device),
        "captured": model.device.type == "cuda",
        "workload": {
            "model": checkpoint or f"random {preset}",
            "dtype": dtype,
            "prompt_tokens": prompt_len,
            "decode_steps": steps,
            "warmup_steps": warmup,
            "threads": torch.get_num_threads(),
        },
        "results": results,
    }


def _decode_rate(
    runner: ModelRunner, model: Transformer, batch: int, steps: int, prompt_len: int, warmup: int
) -> dict[str, Any]:
    prompts = random_prompts(batch, prompt_len, model.config.vocab_size, seed=batch)
    ids = list(range(batch))
    with torch.inference_mode():
        for i in ids:
            runner.add(i, None, max_length=prompt_len + warmup + steps + 1)
        logits, _ = runner.prefill(ids, prompts, [[] for _ in ids])
        token = logits.argmax(-1)
        chosen = []
        for _ in range(warmup):
            token = runner.decode(ids, token.tolist()).argmax(-1)
        _synchronize(model)
        started = time.perf_counter()
        for _ in range(steps):
            token = runner.decode(ids, token.tolist()).argmax(-1)
            chosen.append(token)
        _synchronize(model)
        seconds = time.perf_counter() - started
        runner.release(ids)
        runner.clear()
    return {
        "tokens_per_s": batch * steps / seconds,
        "step_ms": 1000 * seconds / steps,
        "tokens": torch.stack(chosen).cpu(),
    }


def _synchronize(model: Transformer) -> None:
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)


def _agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Share of the greedy steps where both runs chose the same token for every row, up to the
    first step where they differ (after it they decode different sequences)."""
    same = (a == b).all(dim=1).long()
    first_diff = int(same.argmin()) if not bool(same.all()) else len(same)
    return round(first_diff / len(same), 3)
