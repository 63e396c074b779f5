"""`flashbeam bench engine --tensor-parallel N` (or `--config`/`--layers`): engine throughput
at V4-Flash's dimensions, per GPU, at several concurrencies.

No official checkpoint can be downloaded where this was written, so the benchmark writes a random
one in the official layout (FP8 dense linears, FP4 routed experts: `random_packed`) of the model
or of a slice of it (its first `layers` layers, for a machine that cannot hold it all), loads it
with `Engine.load(..., tensor_parallel=N)` and, for each concurrency C:

- prefill: C requests of `input_tokens` random token ids, one new token each; input tokens per
  second over the wall time;
- a whole run: C fresh requests of `input_tokens` in and `output_tokens` out. Total tokens/s is
  (input + output tokens) over its wall time, the measure SGLang publishes; decode tokens/s counts
  the tokens generated after the last prompt finished prefilling, over that stretch of time.

Rates are per GPU (divided by the tensor-parallel size). A slice also reports per-layer figures:
its times divided by its layer count (the embedding, head and sampling included, shared out).
Nothing is scaled to a model or a machine that was not run; SGLang's published figures come
with the result, labelled as published, for the reader to compare against a full-model run.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from flashbeam.model.checkpoint.fit import GiB, StoredFormats, plan_fit, weight_bytes
from flashbeam.model.checkpoint.random_packed import (
    ExpertFormat,
    quantized_config,
    write_random_packed_checkpoint,
)
from flashbeam.model.checkpoint.reader import CONFIG_FILE, CheckpointReader
from flashbeam.model.engine.bench import random_prompts
from flashbeam.model.engine.engine import Engine
from flashbeam.model.engine.loop import EngineProgress
from flashbeam.model.engine.request import Request
from flashbeam.model.network.config import ConfigError, ModelConfig, tiny_config
from flashbeam.model.network.parallel import ParallelError, check_world_size
from flashbeam.model.network.quantized import FP8Linear, PackedExperts

OFFICIAL = "official"  # ModelConfig's defaults: the V4-Flash config.json

PUBLISHED_PEER = {
    "source": "SGLang's published DeepSeek-V4-Flash figures (published, not measured here)",
    "metric": "total (input + output) tokens/s per GPU",
    "workload": "8k-token prompts, 1k new tokens",
    "H200 FP4 TP4": {"1": 607, "16": 3264, "256": 4207},
    "H100 FP4 TP8": {"1": 320, "16": 2009, "256": 2429},
}


class BenchRefused(ValueError):
    """A benchmark asked for what this machine cannot run (memory, disk, GPUs, sizes)."""


@dataclass(frozen=True)
class ThroughputSetup:
    """What one benchmark run is asked to do."""

    config: str = OFFICIAL
    layers: int | None = None
    tensor_parallel: int = 1
    concurrency: tuple[int, ...] = (1, 16, 256)
    input_tokens: int = 8192
    output_tokens: int = 1024
    device: str | None = None
    dtype: str = "bfloat16"
    experts: ExpertFormat = "fp4"
    checkpoint_dir: str | None = None
    keep_quantized: bool | None = None
    max_batch_tokens: int = 16384
    reserve_bytes: int = 4 * GiB
    seed: int = 0

    @property
    def device_type(self) -> str:
        return torch.device(self.resolved_device).type

    @property
    def resolved_device(self) -> str:
        return self.device or ("cuda" if torch.cuda.is_available() else "cpu")

    @property
    def keeps_packed(self) -> bool:
        """Whether the engine holds FP8/FP4 weights packed (load_model's default: on CUDA)."""
        if self.keep_quantized is not None:
            return self.keep_quantized
        return self.device_type == "cuda"


def sliced_config(spec: str, layers: int | None = None) -> ModelConfig:
    """The model to run: "official" (V4-Flash), a tiny preset, or a config.json (or a directory
    holding one); with `layers`, only its first `layers` layers."""
    try:
        if spec == OFFICIAL:
            config = ModelConfig()
        elif Path(spec).is_dir() or Path(spec).is_file():
            path = Path(spec) / CONFIG_FILE if Path(spec).is_dir() else Path(spec)
            config = ModelConfig.from_file(path)
        else:
            config = tiny_config(spec)
    except ConfigError as e:
        raise BenchRefused(f"--config {spec}: {e} (or give 'official' or a config.json)") from None
    if layers is None:
        return config
    total = config.num_hidden_layers
    if not 1 <= layers <= total:
        raise BenchRefused(f"--layers {layers}: the model has {total} layers; give 1 to {total}")
    return config.replace(
        num_hidden_layers=layers,
        compress_ratios=config.compress_ratios[:layers],
        num_hash_layers=min(config.num_hash_layers, layers),
    )


def bench_throughput(setup: ThroughputSetup) -> dict[str, Any]:
    """Run the benchmark `setup` describes; one JSON-ready dict."""
    _check_sizes(setup)
    config = quantized_config(sliced_config(setup.config, setup.layers), setup.experts)
    full_layers = sliced_config(setup.config).num_hidden_layers
    dtype = getattr(torch, setup.dtype)
    plan = check_fits(config, setup, dtype)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(setup.checkpoint_dir or tmp)
        checkpoint = _ensure_checkpoint(directory, config, setup)
        started = time.perf_counter()
        engine = Engine.load(
            directory, device=setup.resolved_device, dtype=dtype,
            tensor_parallel=setup.tensor_parallel, keep_quantized=setup.keep_quantized,
            max_batch_tokens=setup.max_batch_tokens, max_batch_size=max(setup.concurrency),
            max_pending=max(setup.concurrency) + 1, cache_bytes=0,
        )  # fmt: skip
        with engine:
            load_s = time.perf_counter() - started
            held = held_formats(engine.model)
            _warm_up(engine, setup)
            runs = [_measure(engine, setup, c, config.num_hidden_layers) for c in setup.concurrency]
    is_slice = config.num_hidden_layers < full_layers
    return {
        "benchmark": "engine-throughput",
        "device": device_name(setup),
        "config": setup.config,
        "layers": config.num_hidden_layers,
        "model_layers": full_layers,
        "slice": is_slice,
        "layer_kinds": config.layer_kinds,
        "tp": setup.tensor_parallel,
        "concurrency": list(setup.concurrency),
        "input_tokens": setup.input_tokens,
        "output_tokens": setup.output_tokens,
        "dtype": setup.dtype,
        "max_batch_tokens": setup.max_batch_tokens,
        "weights": {
            "stored": checkpoint.pop("stored"),
            "held_by_rank0": held,
            "packed": setup.keeps_packed,
            "planned_bytes_per_gpu": plan.weight_bytes_per_gpu,
        },
        "checkpoint": checkpoint,
        "load_s": round(load_s, 2),
        "results": runs,
        "published_peer": PUBLISHED_PEER,
        "comparable_to_published": not is_slice,
        "note": (
            f"a slice: the first {config.num_hidden_layers} of {full_layers} layers; its rates "
            "are not the model's and are not scaled to it"
            if is_slice
            else "the whole model"
        ),
    }


def _check_sizes(setup: ThroughputSetup) -> None:
    if not setup.concurrency or min(setup.concurrency) < 1:
        raise BenchRefused(f"--concurrency {setup.concurrency}: give positive request counts")
    if setup.input_tokens < 1 or setup.output_tokens < 2:
        raise BenchRefused(
            f"--input-tokens {setup.input_tokens} --output-tokens {setup.output_tokens}: a "
            "prompt needs a token and decode needs at least 2 new tokens (the first comes from "
            "prefill)"
        )
    if setup.tensor_parallel < 1:
        raise BenchRefused(f"--tensor-parallel {setup.tensor_parallel}: give 1 or more")


def check_fits(config: ModelConfig, setup: ThroughputSetup, dtype: torch.dtype):
    """Refuse up front, with `flashbeam plan`'s arithmetic, a run whose weights and sequences
    do not fit: the GPUs' free memory on CUDA, an equal share of the host's available memory
    per rank on the CPU. Returns the plan."""
    world = setup.tensor_parallel
    try:  # the checkpoint is FP8 however the engine holds it: its scale blocks must stay whole
        check_world_size(config, world, quantized=True)
    except ParallelError as e:
        raise BenchRefused(f"{setup.config}: {e}") from None
    if setup.device_type == "cuda":
        available = torch.cuda.device_count()
        if available < world:
            raise BenchRefused(f"--tensor-parallel {world} needs {world} GPUs; found {available}")
        memory = min(torch.cuda.mem_get_info(d)[0] for d in range(world))
        where = f"{world} x GPU"
    else:
        memory = _host_available_bytes() // world
        where = f"{world} CPU rank(s)"
    stored = StoredFormats.of_config(config).of
    format_of = stored if setup.keeps_packed else (lambda name: "dense")
    plan = plan_fit(
        config, world, memory, context=setup.input_tokens + setup.output_tokens,
        concurrency=max(setup.concurrency), dtype=dtype, format_of=format_of, cache_bytes=0,
        reserve_bytes=setup.reserve_bytes,
    )  # fmt: skip
    if not plan.fits:
        layers = f"{config.num_hidden_layers} layers"
        raise BenchRefused(
            f"{setup.config} ({layers}) does not fit {where} with {_gib(memory)} free each: "
            f"{plan.verdict}. Use fewer --layers, a lower --concurrency, or more --tensor-parallel"
        )
    return plan


def _host_available_bytes() -> int:
    """MemAvailable of /proc/meminfo (Linux); the physical memory elsewhere."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _gib(n: int) -> str:
    return f"{n / GiB:.1f} GiB"


def _ensure_checkpoint(directory: Path, config: ModelConfig, setup: ThroughputSetup) -> dict:
    """Write the random checkpoint into `directory`, or reuse the one a previous run left there
    (same config); a directory holding another model is refused, never overwritten."""
    saved = directory / CONFIG_FILE
    reused = saved.is_file()
    if reused:
        theirs = ModelConfig.from_file(saved).to_official_dict()
        if theirs != config.to_official_dict():
            raise BenchRefused(
                f"--checkpoint-dir {directory} holds another model; give an empty directory "
                "(or the one an identical run wrote)"
            )
        write_s = 0.0
    else:
        stored_size = weight_bytes(config, StoredFormats.of_config(config).of, torch.bfloat16, 0, 1)
        directory.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(directory).free
        if stored_size["total"] > free:
            raise BenchRefused(
                f"the random checkpoint takes {_gib(stored_size['total'])}; {directory} has "
                f"{_gib(free)} free. Use fewer --layers or another --checkpoint-dir"
            )
        started = time.perf_counter()
        draw_on = "cuda:0" if setup.device_type == "cuda" else "cpu"
        write_random_packed_checkpoint(directory, config, setup.experts, setup.seed, draw_on)
        write_s = time.perf_counter() - started
    with CheckpointReader(directory, config) as reader:
        entries = list(reader.entries.values())
    stored: dict[str, int] = {}
    for entry in entries:
        stored[entry.fmt] = stored.get(entry.fmt, 0) + 1
    files = [*directory.glob("*.safetensors")]
    return {
        "dir": str(directory) if setup.checkpoint_dir else None,
        "reused": reused,
        "bytes": sum(f.stat().st_size for f in files),
        "write_s": round(write_s, 2),
        "stored": stored,
    }


def held_formats(model: torch.nn.Module) -> dict[str, int]:
    """How rank 0's network holds its weights: FP8 linears, packed expert layers by format."""
    held = {"fp8_linears": 0, "fp8_expert_layers": 0, "fp4_expert_layers": 0}
    for module in model.modules():
        if isinstance(module, FP8Linear):
            held["fp8_linears"] += 1
        elif isinstance(module, PackedExperts):
            held[f"{module.weights.fmt}_expert_layers"] += 1
    return held


def device_name(setup: ThroughputSetup) -> str:
    if setup.device_type == "cuda":
        names = {torch.cuda.get_device_name(d) for d in range(setup.tensor_parallel)}
        return " + ".join(sorted(names))
    return f"CPU {platform.machine()} ({os.cpu_count()} cores)"


def _requests(vocab: int, length: int, count: int, max_tokens: int, seed: int) -> list[Request]:
    ids = random_prompts(count, length, vocab, seed)
    return [
        Request(id=f"s{seed}r{i}", prompt_token_ids=p, max_tokens=max_tokens, ignore_eos=True)
        for i, p in enumerate(ids)
    ]


def _warm_up(engine: Engine, setup: ThroughputSetup) -> None:
    """One request through prefill and decode: kernels compile before any timing."""
    vocab = engine.model.config.vocab_size
    warm = _requests(vocab, setup.input_tokens, 1, 3, seed=setup.seed + 9999)
    _check_results(engine.generate(warm))


def _check_results(results) -> None:
    failed = [r for r in results if r.finish_reason == "error"]
    if failed:
        raise RuntimeError(f"{len(failed)} benchmark requests failed; first: {failed[0].error}")


def _measure(engine: Engine, setup: ThroughputSetup, concurrency: int, layers: int) -> dict:
    world, c, length = setup.tensor_parallel, concurrency, setup.input_tokens
    vocab = engine.model.config.vocab_size
    prompts = _requests(vocab, length, c, 1, seed=setup.seed + 2 * c)
    started = time.perf_counter()
    _check_results(engine.generate(prompts))
    prefill_s = time.perf_counter() - started

    runs = _requests(vocab, length, c, setup.output_tokens, seed=setup.seed + 2 * c + 1)
    updates: list[EngineProgress] = []
    started = time.perf_counter()
    results = engine.generate(runs, updates.append)
    run_s = time.perf_counter() - started
    _check_results(results)
    decode = _decode_phase(updates, c * setup.input_tokens)
    generated = sum(r.usage.completion_tokens for r in results)
    out = {
        "concurrency": c,
        "prefill_tok_s_per_gpu": c * setup.input_tokens / prefill_s / world,
        "decode_tok_s_per_gpu": decode["tokens"] / decode["seconds"] / world,
        "total_tok_s_per_gpu": (c * setup.input_tokens + generated) / run_s / world,
        "prefill_wall_s": round(prefill_s, 3),
        "run_wall_s": round(run_s, 3),
        "generated_tokens": generated,
        "decode_steps": decode["steps"],
        "decode_step_ms": 1000 * decode["seconds"] / decode["steps"],
    }
    out["prefill_ms_per_layer"] = 1000 * prefill_s / layers
    out["decode_step_ms_per_layer"] = out["decode_step_ms"] / layers
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}


def _decode_phase(updates: list[EngineProgress], prompt_tokens: int) -> dict[str, float]:
    """Tokens, seconds and steps from the step that finished the last prompt's prefill to the
    end of the run: every step in it is a decode step of the sequences still generating."""
    first = next(i for i, u in enumerate(updates) if u.prompt_tokens >= prompt_tokens)
    start, end = updates[first], updates[-1]
    steps = len(updates) - 1 - first
    if steps < 1 or end.elapsed_s <= start.elapsed_s:
        raise BenchRefused("no decode step followed the prefill: raise --output-tokens")
    return {
        "tokens": end.generated_tokens - start.generated_tokens,
        "seconds": end.elapsed_s - start.elapsed_s,
        "steps": steps,
    }
