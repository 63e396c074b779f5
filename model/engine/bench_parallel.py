"""`flashbeam bench parallel`: what tensor parallelism costs and saves on this machine.

For world sizes 1 and N over the same checkpoint (the random-weight tiny preset by default, or
any checkpoint directory): the weight bytes each rank reads and keeps against the ideal (the
split tensors' 1/N plus the replicated ones), and the time of a prefill chunk and of decode
steps, each rank timing its share. On CPU the collectives go through gloo over loopback, so
the ratio shows the communication overhead honestly, not a GPU speed-up.
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

import torch

from flashbeam.model.checkpoint.loading import load_model, resolve_checkpoint
from flashbeam.model.checkpoint.random_init import write_random_checkpoint
from flashbeam.model.checkpoint.reader import split_reads
from flashbeam.model.engine.ranks import STOP, RankGroup
from flashbeam.model.network.config import ModelConfig, tiny_config
from flashbeam.model.network.decode import DecodeBatch
from flashbeam.model.network.parallel import TensorParallel


def _held_bytes(model: torch.nn.Module) -> int:
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def _weights(directory, config: ModelConfig, world: int) -> dict[str, Any]:
    """Bytes each rank of `world` reads for the split tensors and keeps, against the ideal."""
    measured = split_reads(directory, config, world)
    whole, reads, split_total = measured.whole, measured.per_rank, measured.split_bytes
    replicated = sum(whole.values()) - split_total
    ideal = split_total / world
    return {
        "checkpoint_bytes": sum(whole.values()),
        "split_bytes": split_total,
        "replicated_bytes": replicated,
        "split_bytes_read_per_rank": reads,
        "split_read_vs_ideal": round(max(reads) / ideal, 4) if ideal else None,
        "per_rank_vs_ideal": round((max(reads) + replicated) / (ideal + replicated), 4),
    }


def _time_steps(model, prompt: torch.Tensor, decode_steps: int) -> dict[str, float]:
    with torch.inference_mode():
        states = [model.empty_state() for _ in range(prompt.shape[0])]
        model.forward_step(prompt[:, :16], states)  # warm-up
        started = time.perf_counter()
        _, states = model.forward_step(prompt, states, last_only=True)
        prefill = time.perf_counter() - started
        batch = DecodeBatch.build(model, states, extra_tokens=decode_steps)
        token = prompt[:, -1:]
        started = time.perf_counter()
        for _ in range(decode_steps):
            token = model.decode_step(token, batch)[:, -1].argmax(-1, keepdim=True)
        decode = time.perf_counter() - started
    return {"prefill_s": prefill, "decode_step_ms": 1000 * decode / decode_steps}


def _serve(group: RankGroup, payload) -> None:
    """A helper rank of the benchmark: load its shard, time what rank 0 asks."""
    directory, threads = payload
    torch.set_num_threads(threads)
    model = load_model(directory, tp=TensorParallel(group.rank, group.world))
    while (command := group.receive()) != STOP:
        _time_steps(model, *command)


def bench_parallel(
    world: int = 2,
    checkpoint: str | None = None,
    batch: int = 8,
    prompt_len: int = 512,
    decode_steps: int = 32,
    threads: int = 1,
) -> dict[str, Any]:
    """Weights per rank and step times of `world` ranks against one, on one checkpoint."""
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        if checkpoint is None:
            directory = write_random_checkpoint(tmp, tiny_config("tiny"), seed=0)
        else:
            directory = resolve_checkpoint(checkpoint)
        config = ModelConfig.from_file(directory / "config.json")
        ids = torch.randint(16, config.vocab_size, (batch, prompt_len))
        single = _time_steps(load_model(directory), ids, decode_steps)
        group = RankGroup.start(world, _serve, (directory, threads))
        try:
            shard = load_model(directory, tp=TensorParallel(0, world))
            group.send((ids, decode_steps))
            parallel = _time_steps(shard, ids, decode_steps)
            kept = _held_bytes(shard)
        finally:
            group.close()
        weights = _weights(directory, config, world)
    return {
        "world": world,
        "checkpoint": checkpoint or "random tiny preset",
        "batch": batch,
        "prompt_len": prompt_len,
        "decode_steps": decode_steps,
        "torch_threads_per_rank": threads,
        "weights": {**weights, "rank0_kept_bytes": kept},
        "single": {k: round(v, 4) for k, v in single.items()},
        "parallel": {k: round(v, 4) for k, v in parallel.items()},
        "prefill_time_ratio": round(parallel["prefill_s"] / single["prefill_s"], 3),
        "decode_time_ratio": round(parallel["decode_step_ms"] / single["decode_step_ms"], 3),
    }
