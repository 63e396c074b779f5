"""The engine's runner over the GPUs (ranks) of one worker: rank 0 drives, helpers replay.

The engine's loop, scheduler, prefix cache, grammar masks and sampling all live on rank 0, as
on one device. `ParallelRunner` stands in for its `ModelRunner`: every call that changes
state (adding and releasing sequences, dropping snapshots, prefill, decode) is broadcast to the
helper ranks first, then run locally, so each rank's runner holds the same sequence states and
snapshots (the K=V head and compressors are replicated) while the network's collectives
combine their shares of heads, experts and vocabulary. Only rank 0 samples from the logits.

A call that fails the same way on every rank (a request-level error) is replayed as a failure
on the helpers too, and the group goes on. A broken group (a dead or hung rank, a failed
collective) raises `RankFailure`, which the engine treats as fatal: every pending request fails
with it, within the group's timeout, and the helpers are stopped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from flashbeam.model.checkpoint.loading import load_model
from flashbeam.model.engine.ranks import STOP, RankFailure, RankGroup, backend_for
from flashbeam.model.engine.runner import ModelRunner
from flashbeam.model.network.parallel import TensorParallel

_log = logging.getLogger(__name__)

# The runner calls that change state: what the helpers must replay.
REPLAYED = ("add", "release", "drop_snapshots", "clear", "prefill", "decode")
FREEING = ("release", "drop_snapshots", "clear")


@dataclass(frozen=True)
class ShardSpec:
    """What a rank needs to load its share of the model (picklable: helpers are spawned)."""

    directory: Path
    devices: tuple[str, ...]
    dtype: torch.dtype
    kv_quant_sim: bool | None
    keep_quantized: bool | None = None

    def load(self, rank: int, world: int):
        return load_model(
            self.directory,
            device=self.devices[rank],
            dtype=self.dtype,
            keep_quantized=self.keep_quantized,
            kv_quant_sim=self.kv_quant_sim,
            tp=TensorParallel(rank, world),
        )


def devices_for(device: str, world: int, devices: list[str] | None = None) -> tuple[str, ...]:
    """One device per rank: the ones given, or cuda:0..N-1 for "cuda", or the CPU for all."""
    if devices is not None:
        if len(devices) != world:
            raise ValueError(
                f"devices lists {len(devices)} devices for tensor_parallel={world}; give one per "
                "rank, or leave devices out"
            )
        return tuple(devices)
    kind = torch.device(device).type
    if kind == "cuda":
        available = torch.cuda.device_count()
        if available < world:
            raise ValueError(
                f"tensor_parallel={world} needs {world} GPUs; this machine has {available}"
            )
        return tuple(f"cuda:{rank}" for rank in range(world))
    return (device,) * world


class ParallelRunner:
    """`ModelRunner`'s interface over a group of ranks (this process is rank 0)."""

    def __init__(self, local: ModelRunner, group: RankGroup) -> None:
        self.local, self.group = local, group

    @classmethod
    def start(
        cls, spec: ShardSpec, timeout_s: float = 120.0, load_timeout_s: float = 3600.0
    ) -> ParallelRunner:
        """Start the helper ranks, each loading its shard, and load rank 0's. `timeout_s`
        bounds every collective (a hung rank fails the engine then); `load_timeout_s` the
        loading of the shards."""
        world = len(spec.devices)
        backend = backend_for(torch.device(spec.devices[0]))
        group = RankGroup.start(world, _serve, spec, backend=backend, timeout_s=timeout_s)
        try:
            local = ModelRunner(spec.load(0, world))
            group.wait_ready(load_timeout_s)
        except BaseException:
            group.close(grace_s=0)
            raise
        return cls(local, group)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.local, name)
        if name not in REPLAYED:
            return attr  # queries answered from rank 0's copy

        def replayed(*args):
            if self.group.failed and name in FREEING:
                return attr(*args)  # freeing rank 0's memory needs no helper
            self.group.send((name, args))
            try:
                return attr(*args)
            except RankFailure:
                raise
            except Exception as e:
                if _from_the_group(e):
                    raise self.group.guard(e) from e
                self.group.check()  # a helper that died is the cause, not this request
                raise

        return replayed

    @property
    def model(self):
        return self.local.model

    def close(self) -> None:
        self.local.close()
        self.group.close()


def _from_the_group(error: BaseException) -> bool:
    """Whether a collective failed (gloo reports a lost peer as a plain RuntimeError)."""
    text = str(error)
    return isinstance(error, dist.DistError) or any(
        mark in text for mark in ("gloo", "NCCL", "Connection reset", "Connection closed")
    )


def _serve(group: RankGroup, spec: ShardSpec) -> None:
    """A helper rank: load this rank's shard, then replay rank 0's runner calls."""
    runner = ModelRunner(spec.load(group.rank, group.world))
    group.ready()
    while (command := group.receive()) != STOP:
        name, args = command
        try:
            getattr(runner, name)(*args)
        except Exception as e:  # noqa: BLE001 - rank 0 hit the same request-level error
            if _from_the_group(e):
                raise
            _log.debug("rank %d: %s failed as on rank 0: %s", group.rank, name, e)
    runner.close()
