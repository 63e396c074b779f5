"""`flashbeam bench engine` and `flashbeam bench prefix-cache`: one JSON object each on stdout.

All build a random-weight tiny checkpoint in a temporary directory, so they measure the engine,
not a particular set of weights. The engine benchmark runs transformers' `generate` (a test
dependency) on the same checkpoint and prompts in the same process and reports the ratio; with
`--callers K` it measures instead K threads sharing one engine (`bench_engine_callers`).
"""

from __future__ import annotations

import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from flashbeam.model.checkpoint.random_init import write_random_checkpoint
from flashbeam.model.engine.engine import Engine
from flashbeam.model.engine.request import Request
from flashbeam.model.network.config import tiny_config


def random_prompts(n: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    # Ids from 16 up: keep clear of the special tokens at the bottom of the vocabulary.
    return torch.randint(16, vocab, (n, length), generator=gen).tolist()


def bench_engine(
    prompts: int = 64,
    prompt_len: int = 512,
    new_tokens: int = 64,
    preset: str = "tiny",
    max_batch_tokens: int = 16384,
    reference: bool = True,
    threads: int | None = None,
) -> dict[str, Any]:
    """Generated tokens/s of `Engine.generate` vs transformers' `generate` on one workload."""
    if threads:
        torch.set_num_threads(threads)
    config = tiny_config(preset)
    ids = random_prompts(prompts, prompt_len, config.vocab_size, seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        write_random_checkpoint(tmp, config, seed=0)
        engine = Engine.load(
            tmp, max_batch_tokens=max_batch_tokens, max_batch_size=prompts, cache_bytes=0
        )
        requests = [
            Request(id=f"r{i}", prompt_token_ids=p, max_tokens=new_tokens, ignore_eos=True)
            for i, p in enumerate(ids)
        ]
        engine.generate(requests[:2])  # warm-up
        t0 = time.perf_counter()
        results = engine.generate(requests)
        ours_s = time.perf_counter() - t0
        generated = sum(r.usage.completion_tokens for r in results)
        out: dict[str, Any] = {
            "benchmark": "engine",
            "workload": {
                "max_batch_tokens": max_batch_tokens,
                "prompts": prompts,
                "prompt_tokens": prompt_len,
                "new_tokens": new_tokens,
                "preset": preset,
                "threads": torch.get_num_threads(),
            },
            "tokens_per_s": generated / ours_s,
            "wall_s": ours_s,
        }
        if reference:
            ref_s, ref_tokens, agree = _transformers_generate(tmp, ids, new_tokens, results)
            out["reference"] = "transformers DeepseekV4ForCausalLM.generate (greedy, batched)"
            out["reference_tokens_per_s"] = ref_tokens / ref_s
            out["reference_wall_s"] = ref_s
            out["ratio"] = out["tokens_per_s"] / out["reference_tokens_per_s"]
            out["greedy_token_agreement"] = agree
    return out


def _transformers_generate(directory, ids, new_tokens, results) -> tuple[float, int, float]:
    try:
        from transformers import DeepseekV4ForCausalLM
    except ImportError as e:  # transformers is a test/bench dependency only
        raise SystemExit(f"the engine benchmark's reference needs transformers: {e}") from None
    model = DeepseekV4ForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    batch = torch.tensor(ids)
    kwargs = dict(
        max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=1
    )
    with torch.inference_mode():
        model.generate(batch[:2], **kwargs)  # warm-up
        t0 = time.perf_counter()
        out = model.generate(batch, **kwargs)
        wall = time.perf_counter() - t0
    generated = out[:, batch.shape[1] :]
    ours = torch.tensor([r.token_ids for r in results])
    agree = (generated == ours).float().mean().item()
    return wall, generated.numel(), agree


def bench_prefix_cache(
    documents: int = 8,
    questions: int = 4,
    doc_len: int = 4096,
    question_len: int = 24,
    new_tokens: int = 8,
    preset: str = "tiny",
    max_batch_tokens: int = 4096,
) -> dict[str, Any]:
    """D documents x Q questions (document first): cache on vs off."""
    config = tiny_config(preset)
    docs = random_prompts(documents, doc_len, config.vocab_size, seed=2)
    qs = random_prompts(documents * questions, question_len, config.vocab_size, seed=3)
    requests = [
        Request(
            id=f"d{d}q{q}",
            prompt_token_ids=docs[d] + qs[d * questions + q],
            max_tokens=new_tokens,
            ignore_eos=True,
        )
        for d in range(documents)
        for q in range(questions)
    ]
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        write_random_checkpoint(tmp, config, seed=0)
        for label, cache_bytes in (("off", 0), ("on", 4 << 30)):
            engine = Engine.load(tmp, max_batch_tokens=max_batch_tokens, cache_bytes=cache_bytes)
            t0 = time.perf_counter()
            results = engine.generate(requests)
            runs[label] = (time.perf_counter() - t0, results)
    (off_s, off), (on_s, on) = runs["off"], runs["on"]
    prompt_tokens = sum(r.usage.prompt_tokens for r in on)
    hits = sum(r.usage.prompt_cache_hit_tokens for r in on)
    ideal = documents * (questions - 1) * doc_len
    return {
        "benchmark": "prefix-cache",
        "workload": {
            "documents": documents,
            "questions": questions,
            "doc_tokens": doc_len,
            "question_tokens": question_len,
            "new_tokens": new_tokens,
            "preset": preset,
        },
        "prefill_tokens_computed": prompt_tokens - hits,
        "prefill_tokens_without_cache": sum(r.usage.prompt_cache_miss_tokens for r in off),
        "hit_tokens": hits,
        "ideal_hit_tokens": ideal,
        "hit_ratio_vs_ideal": hits / ideal if ideal else 1.0,
        "wall_s_cache_on": on_s,
        "wall_s_cache_off": off_s,
        "speedup": off_s / on_s,
        "same_tokens": all(a.token_ids == b.token_ids for a, b in zip(on, off)),
    }


def bench_engine_callers(
    callers: int = 4,
    documents: int = 32,
    questions: int = 4,
    doc_len: int = 256,
    question_len: int = 16,
    new_tokens: int = 32,
    requests_per_call: int = 16,
    max_batch_size: int = 64,
    max_batch_tokens: int = 4096,
    preset: str = "tiny",
    threads: int | None = None,
    repeats: int = 3,
) -> dict[str, Any]:
    """K caller threads sharing one engine, each calling `generate` on its share of the prefix
    groups (a document's questions), `requests_per_call` requests at a time, as Beam's DoFn
    threads do. Against the same requests in one `generate` call (what the engine could do
    with everything at once), and against the same callers taking turns (one call at a time, as
    worker threads were served before the continuous loop). Each run on a fresh engine; the
    three modes take turns `repeats` times and each reports its median run, so that a change
    in the machine's load during the benchmark falls on all three alike."""
    if threads:
        torch.set_num_threads(threads)
    config = tiny_config(preset)
    docs = random_prompts(documents, doc_len, config.vocab_size, seed=2)
    asks = random_prompts(documents * questions, question_len, config.vocab_size, seed=3)
    requests = [
        Request(id=f"d{d}q{q}", prompt_token_ids=docs[d] + asks[d * questions + q],
                max_tokens=new_tokens, ignore_eos=True)
        for d in range(documents)
        for q in range(questions)
    ]  # fmt: skip
    calls = [
        requests[i : i + requests_per_call] for i in range(0, len(requests), requests_per_call)
    ]
    options = dict(max_batch_size=max_batch_size, max_batch_tokens=max_batch_tokens)
    modes = ("one_call", "callers", "serialized")
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory() as tmp:
        write_random_checkpoint(tmp, config, seed=0)
        for _ in range(repeats):
            for mode in modes:
                with Engine.load(tmp, **options) as engine:
                    warm = random_prompts(2, 64, config.vocab_size, seed=4)
                    engine.generate([Request(id=f"w{i}", prompt_token_ids=p, max_tokens=4)
                                     for i, p in enumerate(warm)])  # fmt: skip
                    runs[mode].append(_timed_callers(engine, mode, requests, calls, callers))
    one, shared, turns = (median_run(runs[mode]) for mode in modes)
    return {
        "benchmark": "engine-callers",
        "workload": {
            "callers": callers,
            "documents": documents,
            "questions": questions,
            "doc_tokens": doc_len,
            "question_tokens": question_len,
            "new_tokens": new_tokens,
            "requests_per_call": requests_per_call,
            "max_batch_size": max_batch_size,
            "max_batch_tokens": max_batch_tokens,
            "preset": preset,
            "threads": torch.get_num_threads(),
            "repeats": repeats,
        },
        "one_call": _public(one),
        "callers": _public(shared),
        "serialized": _public(turns),
        "callers_vs_one_call": shared["tokens_per_s"] / one["tokens_per_s"],
        "callers_vs_serialized": shared["tokens_per_s"] / turns["tokens_per_s"],
        "same_tokens": all(r["tokens"] == one["tokens"] for m in modes for r in runs[m]),
    }


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median wall time, with every run's wall time beside it (`wall_s_runs`)."""
    ordered = sorted(runs, key=lambda run: run["wall_s"])
    return {**ordered[len(ordered) // 2], "wall_s_runs": [run["wall_s"] for run in runs]}


def _timed_callers(engine, mode, requests, calls, callers) -> dict[str, Any]:
    results = {}
    turn = threading.Lock()

    def caller(k: int) -> None:
        for call in calls[k::callers]:
            if mode == "serialized":
                with turn:
                    done = engine.generate(call)
            else:
                done = engine.generate(call)
            results.update((r.id, r) for r in done)

    started = time.perf_counter()
    if mode == "one_call":
        results.update((r.id, r) for r in engine.generate(requests))
    else:
        with ThreadPoolExecutor(callers) as pool:
            for future in [pool.submit(caller, k) for k in range(callers)]:
                future.result()
    wall = time.perf_counter() - started
    ordered = [results[r.id] for r in requests]
    generated = sum(r.usage.completion_tokens for r in ordered)
    prompt = sum(r.usage.prompt_tokens for r in ordered)
    hits = sum(r.usage.prompt_cache_hit_tokens for r in ordered)
    return {
        "wall_s": wall,
        "tokens_per_s": generated / wall,
        "requests_per_s": len(ordered) / wall,
        "cache_hit_ratio": hits / prompt if prompt else 0.0,
        "errors": sum(r.finish_reason == "error" for r in ordered),
        "tokens": [r.token_ids for r in ordered],
    }


def _public(run: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in run.items() if k != "tokens"}
