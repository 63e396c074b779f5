"""`flashbeam bench pipeline`: framework overhead and the effect of prefix grouping.

Workload: `documents` synthetic documents of about `doc_tokens` tokens, `questions` questions
each (a prefix-heavy job: every question repeats its document), free-text answers of
`max_tokens` tokens, on a random-weight tiny checkpoint. Three timed runs, each on a fresh
engine (empty prefix cache, `max_batch_size` sequences in its running batch):

- engine: the pipeline's own requests (same prompts) in one `Engine.generate` call;
- pipeline: the whole job through the DirectRunner, prefix grouping on;
- ungrouped: the same job with grouping off (requests scattered over engine calls).

The DirectRunner runs `worker_threads` threads (`--direct_running_mode=multi_threading`), each
handing its bundles' engine calls to the process's one engine, whose loop batches them
together. `requests_per_call` far below the job's request count (16 of 256 by default) and a
prefix cache (`cache_bytes`, default 4 MiB: the states of about a dozen documents of the tiny
model) that cannot hold every document model a worker that sees far more documents than fit one
engine call or its memory: there, a document's questions are served from the cache reliably
only when they reach the engine together. The three runs take turns `repeats` times; each mode
reports its median run.

What each wall time includes, so that both sides pay for the same things:
- engine: reading the input file, building the requests, loading the engine (weights and
  tokenizer from the checkpoint) and generating;
- pipeline, ungrouped: the whole `run_pipeline` call: Beam's construction and start-up, reading,
  prompts, prefix keys, loading the engine in the worker, generating and validating, the reduce
  step, writing the Parquet files and reading back the counters.
Neither includes the process's first-use costs, which no later run pays again: before the timed
runs, `_warm_up` makes one small generate (torch's first calls) and runs the job on its first
document with the same Beam options (the first import and start of Beam's runner, which would
otherwise fall on whichever pipeline mode runs first).

With `runner="dask"` the grouped job runs twice instead, on the same input: on the DirectRunner
(one worker) and on a dask.distributed LocalCluster of `workers` processes (one thread each),
after a one-document job that makes every worker import flashbeam and load its engine (their
start-up is reported apart). Per stage: the summed run time of the Dask tasks of each top-level
step.
"""

from __future__ import annotations

import dataclasses
import json
import random
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from flashbeam.model.checkpoint.random_init import write_random_checkpoint
from flashbeam.model.engine.bench import median_run
from flashbeam.model.engine.request import Request
from flashbeam.model.network.config import tiny_config

from .config import (
    ChunkingConfig,
    EngineConfig,
    GroupingConfig,
    InputConfig,
    OutputConfig,
    PipelineConfig,
    TaskConfig,
)
from .handler import engine_for, release_engines
from .prompts import document_requests
from .readers import read_file
from .records import Document
from .run import run_pipeline
from .sharding import shard_document, tokenizer_for

_WORDS = (
    "invoice", "payment", "contract", "vendor", "customer", "total", "amount", "due", "date",
    "shipment", "order", "report", "revenue", "quarter", "staffing", "incident", "roadmap",
    "project", "budget", "forecast", "signed", "agreed", "term", "service", "delivery",
    "account", "balance", "tax", "discount", "item", "quantity", "price", "currency", "team",
)  # fmt: skip


def bench_pipeline(
    documents: int = 64,
    questions: int = 4,
    doc_tokens: int = 1024,
    max_tokens: int = 16,
    requests_per_call: int = 16,
    cache_bytes: int = 4 << 20,
    preset: str = "tiny",
    threads: int | None = None,
    runner: str = "direct",
    workers: int = 2,
    worker_threads: int = 4,
    max_batch_size: int = 64,
    repeats: int = 1,
) -> dict[str, Any]:
    """Docs/s and tokens/s of the pipeline vs the engine alone, and grouping on vs off; or, with
    `runner="dask"`, the DirectRunner vs a local Dask cluster of `workers` processes. The
    DirectRunner's `worker_threads` share one engine of `max_batch_size` running sequences."""
    if runner not in ("direct", "dask"):
        raise ValueError(f"runner must be direct or dask, got {runner!r}")
    if threads:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        checkpoint = str(write_random_checkpoint(root / "ckpt", tiny_config(preset), seed=0))
        engine = EngineConfig(
            model=checkpoint,
            max_batch_size=max_batch_size,
            cache_bytes=cache_bytes,
            torch_threads=threads,
        )
        _write_documents(root / "docs.jsonl", documents, doc_tokens, tokenizer_for(checkpoint))
        task = TaskConfig(
            kind="generate",
            instructions="Answer the question about the document in one sentence.",
            questions=tuple(
                f"Question {q + 1}: what does the document say?" for q in range(questions)
            ),  # fmt: skip
            max_tokens=max_tokens,
            chunking=ChunkingConfig(max_tokens=None),
        )

        def config(name: str, grouped: bool) -> PipelineConfig:
            out = root / name
            return PipelineConfig(
                input=InputConfig(str(root / "docs.jsonl")),
                output=OutputConfig(str(out / "results"), str(out / "errors")),
                task=task,
                engine=engine,
                grouping=GroupingConfig(
                    enabled=grouped,
                    max_group_requests=requests_per_call,
                    requests_per_call=requests_per_call,
                ),
            )

        workload = {
            "documents": documents,
            "questions": questions,
            "doc_tokens": doc_tokens,
            "max_tokens": max_tokens,
            "requests_per_call": requests_per_call,
            "max_batch_size": max_batch_size,
            "cache_bytes": cache_bytes,
            "preset": preset,
            "runner": "DirectRunner",
            "worker_threads": worker_threads,
            "threads": torch.get_num_threads(),
            "repeats": repeats,
        }
        options = []
        if worker_threads > 1 and runner == "direct":
            options = [
                f"--direct_num_workers={worker_threads}",
                "--direct_running_mode=multi_threading",
            ]
        _warm_up(engine, config("warm-up", True), options, root)
        if runner == "dask":
            on_direct = _run_pipeline(config("direct", True), [])
            on_dask = _run_on_dask(config("dask", True), workers, root)
            return {
                "benchmark": "pipeline",
                "workload": {
                    **workload,
                    "runner": "DirectRunner vs dask",
                    "workers": workers,
                    "worker_threads": 1,
                },  # fmt: skip
                "direct": on_direct,
                "dask": on_dask,
                "dask_vs_direct": on_direct["wall_s"] / on_dask["wall_s"],
            }
        runs: dict[str, list[dict[str, Any]]] = {"engine": [], "grouped": [], "ungrouped": []}
        for i in range(repeats):
            runs["engine"].append(_run_engine_only(root / "docs.jsonl", task, engine))
            runs["grouped"].append(_run_pipeline(config(f"grouped{i}", True), options))
            runs["ungrouped"].append(_run_pipeline(config(f"ungrouped{i}", False), options))
        direct, grouped, ungrouped = (median_run(runs[mode]) for mode in runs)
    return {
        "benchmark": "pipeline",
        "workload": workload,
        "engine": direct,
        "pipeline": grouped,
        "ungrouped": ungrouped,
        "pipeline_vs_engine": grouped["docs_per_s"] / direct["docs_per_s"],
        "grouping_speedup": ungrouped["wall_s"] / grouped["wall_s"],
        "cache_hit_ratio": grouped["cache_hit_ratio"],
        "cache_hit_ratio_ungrouped": ungrouped["cache_hit_ratio"],
    }


def _write_documents(path: Path, n: int, tokens: int, tokenizer) -> None:
    rng = random.Random(0)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            words = [f"Document {i}."]
            while len(tokenizer.encode(" ".join(words))) < tokens:
                words.extend(rng.choice(_WORDS) for _ in range(32))
            text = " ".join(words)
            offsets = tokenizer.backend.encode(text, add_special_tokens=False).offsets
            f.write(json.dumps({"text": text[: offsets[tokens - 1][1]]}) + "\n")


def _warm_up(engine: EngineConfig, job: PipelineConfig, options: list[str], root: Path) -> None:
    """One small generate and a one-document run of `job`, so that no measured run pays torch's
    first-call costs or the first import and start of Beam's runner in this process."""
    engine_for(engine).generate([Request(id="w", messages=[{"role": "user", "content": "hi"}],
                                         max_tokens=2)])  # fmt: skip
    release_engines()
    first = root / "warm-up.jsonl"
    with open(job.input.path, encoding="utf-8") as f:
        first.write_text(f.readline(), encoding="utf-8")
    run_pipeline(
        dataclasses.replace(job, input=dataclasses.replace(job.input, path=str(first))), options
    )
    release_engines()


def _run_engine_only(path: Path, task: TaskConfig, engine: EngineConfig) -> dict[str, Any]:
    """The pipeline's requests in one generate call; timed from reading the input to the last
    result, engine load included, as the pipeline's run loads its engine in the worker."""
    started = time.perf_counter()
    config = InputConfig(str(path))
    docs = [r for r in read_file(str(path), config, "") if isinstance(r, Document)]
    tokenizer = tokenizer_for(engine.model)
    requests = [
        p.request
        for doc in docs
        for chunk in shard_document(doc, tokenizer, None, 0)
        for p in document_requests(chunk, task)
    ]
    results = engine_for(engine).generate(requests)
    wall = time.perf_counter() - started
    release_engines()
    prompt = sum(r.usage.prompt_tokens for r in results)
    cached = sum(r.usage.prompt_cache_hit_tokens for r in results)
    completion = sum(r.usage.completion_tokens for r in results)
    return _rates(len(docs), wall, prompt, cached, completion)


def _run_pipeline(config: PipelineConfig, options: list[str]) -> dict[str, Any]:
    report = run_pipeline(config, options)
    release_engines()
    m = report.metrics
    documents = m.records_in
    return _rates(documents, report.duration_s, m.prompt_tokens, m.cached_tokens,
                  m.completion_tokens)  # fmt: skip


def _run_on_dask(config: PipelineConfig, workers: int, root: Path) -> dict[str, Any]:
    from distributed import Client, LocalCluster, get_task_stream

    started = time.perf_counter()
    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, memory_limit=0, dashboard_address=None
        ) as cluster,  # fmt: skip
        Client(cluster) as client,
    ):
        cluster_s = time.perf_counter() - started
        options = ["--runner=dask", f"--dask_client_address={cluster.scheduler_address}"]
        first = root / "first.jsonl"
        with open(config.input.path, encoding="utf-8") as f:
            first.write_text(f.readline(), encoding="utf-8")
        warm_up = dataclasses.replace(
            config,
            input=dataclasses.replace(config.input, path=str(first)),
            output=OutputConfig(str(root / "warm-up" / "results"), str(root / "warm-up" / "e")),
        )
        first_job_s = run_pipeline(warm_up, options).duration_s
        with get_task_stream(client) as stream:
            report = run_pipeline(config, options)
    m = report.metrics
    rates = _rates(m.records_in, report.duration_s, m.prompt_tokens, m.cached_tokens,
                   m.completion_tokens)  # fmt: skip
    return {
        **rates,
        "cluster_start_s": cluster_s,
        "first_job_s": first_job_s,
        "task_s_by_stage": _task_seconds_by_stage(stream.data, report.result.steps),
        "engine_task_s_by_worker": _engine_seconds_by_worker(stream.data, report.result.steps),
    }


def _task_seconds_by_stage(tasks: list[dict], steps: dict[str, str]) -> dict[str, float]:
    """Run time of the job's Dask tasks summed per top-level step; tasks of no single step
    (Dask's shuffles, Beam's windowing of a step's input) under "other"."""
    seconds: dict[str, float] = defaultdict(float)
    for task in tasks:
        key = task["key"]
        step = steps.get(key[0] if isinstance(key, tuple) else key, "other/")
        for span in task.get("startstops", ()):
            if span["action"] == "compute":
                seconds[step.split("/")[0]] += span["stop"] - span["start"]
    return {stage: round(s, 3) for stage, s in sorted(seconds.items(), key=lambda kv: -kv[1])}


def _engine_seconds_by_worker(tasks: list[dict], steps: dict[str, str]) -> list[float]:
    """Run time of the engine step's tasks on each worker: how evenly the work was spread."""
    seconds: dict[str, float] = defaultdict(float)
    for task in tasks:
        key = task["key"]
        if "RunInference" in steps.get(key[0] if isinstance(key, tuple) else key, ""):
            seconds[task["worker"]] += sum(
                s["stop"] - s["start"] for s in task["startstops"] if s["action"] == "compute"
            )
    return sorted((round(s, 3) for s in seconds.values()), reverse=True)


def _rates(docs: int, wall: float, prompt: int, cached: int, completion: int) -> dict[str, Any]:
    return {
        "wall_s": wall,
        "docs_per_s": docs / wall,
        "tokens_per_s": (prompt + completion) / wall,  # prompt tokens count, cached or not
        "computed_tokens_per_s": (prompt - cached + completion) / wall,
        "completion_tokens_per_s": completion / wall,
        "prompt_tokens": prompt,
        "cached_tokens": cached,
        "completion_tokens": completion,
        "cache_hit_ratio": cached / prompt if prompt else 0.0,
    }
