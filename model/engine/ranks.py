"""The processes of one tensor-parallel engine: this process is rank 0, N-1 helpers are the rest.

`RankGroup.start(world, entry, payload)` starts the helpers itself (no `torchrun`): each joins
one `torch.distributed` group (NCCL on CUDA, gloo on CPU) and runs `entry(group, payload)`,
typically a loop that replays what rank 0 broadcasts with `group.send`. Rank 0 keeps driving
from the calling process.

Failures are bounded in time, never a hang:
- a helper that exits is noticed by rank 0's watchdog, and every later `send`/`check` raises
  `RankFailure` naming the rank, its pid and exit code; a collective blocked on the dead rank
  fails when gloo/NCCL see the closed connection, or at the group's timeout;
- helpers poll their parent and exit when it is gone (SIGKILL included), so no orphan is left;
- `close()` stops the helpers, waits a bounded time and kills what is left.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import queue
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

STOP = "__stop__"
_PARENT_POLL_S = 0.5


class RankFailure(RuntimeError):
    """A rank of a tensor-parallel engine died, hung or failed: the engine cannot go on."""


@dataclass
class RankGroup:
    """One rank's view of the group: its rank, the world size, and (rank 0) the helpers."""

    rank: int
    world: int
    backend: str
    commands: Any  # a gloo group for commands only (the network's collectives use the default)
    processes: list[Any]
    _failure: list[str]
    _status: Any  # helpers -> rank 0: "ready" or why a helper could not start

    # ---- starting ------------------------------------------------------------------------------
    @classmethod
    def start(
        cls,
        world: int,
        entry: Callable[[RankGroup, Any], None],
        payload: Any,
        backend: str = "gloo",
        timeout_s: float = 120.0,
    ) -> RankGroup:
        """Start ranks 1..world-1 running `entry(group, payload)` and join them as rank 0.
        `entry` and `payload` must pickle (helpers are spawned, not forked)."""
        if dist.is_initialized():
            raise RankFailure(
                "this process already belongs to a torch.distributed group; one tensor-parallel "
                "engine per process (close the other engine first)"
            )
        port = _free_port()
        ctx = mp.get_context("spawn")
        status = ctx.Queue()
        processes = []
        for rank in range(1, world):
            proc = ctx.Process(
                target=_helper_main,
                args=(rank, world, port, backend, timeout_s, entry, payload, os.getpid(), status),
                daemon=True,
                name=f"flashbeam-rank{rank}",
            )
            proc.start()
            processes.append(proc)
        group = None
        try:
            group = cls._join(0, world, port, backend, timeout_s, processes, status)
        finally:
            if group is None:
                _stop_processes(processes, grace_s=0)
        return group

    @classmethod
    def _join(cls, rank, world, port, backend, timeout_s, processes, status) -> RankGroup:
        timeout = dt.timedelta(seconds=timeout_s)
        try:
            dist.init_process_group(
                backend, init_method=f"tcp://127.0.0.1:{port}", world_size=world, rank=rank,
                timeout=timeout,
            )  # fmt: skip
            # Commands travel on a group of their own: a stop sent while a rank still waits in
            # a collective of the network must not be matched against that collective.
            commands = dist.new_group(backend="gloo", timeout=timeout)
        except Exception as e:  # noqa: BLE001 - any failure to join is a failure of the group
            dead = [f"rank {i + 1} exited with code {p.exitcode}" for i, p in enumerate(processes)
                    if p.exitcode is not None]  # fmt: skip
            raise RankFailure(
                f"the {world} ranks of the tensor-parallel engine could not join: {e}"
                + (f" ({'; '.join(dead)})" if dead else "")
            ) from e
        group = cls(rank, world, backend, commands, processes, [], status)
        if rank == 0:
            threading.Thread(
                target=group._watch, name="flashbeam-rank-watchdog", daemon=True
            ).start()
        return group

    # ---- rank 0 ---------------------------------------------------------------------------------
    def send(self, command: Any) -> None:
        """Broadcast one command (any picklable value) from rank 0 to every helper."""
        self.check()
        try:
            dist.broadcast_object_list([command], src=0, group=self.commands)
        except Exception as e:  # noqa: BLE001 - a broken group: say which rank broke it
            raise self._failed(e) from e

    @property
    def failed(self) -> bool:
        """Whether a helper has died (the group can no longer run collectives)."""
        return bool(self._failure)

    def check(self) -> None:
        """Raise `RankFailure` if a helper has died."""
        self._poll()
        if self._failure:
            raise RankFailure(self._failure[0])

    def _poll(self) -> None:
        """Ask the processes themselves, so a death the watchdog has not reported yet counts."""
        for rank, proc in enumerate(self.processes, start=1):
            if not self._failure and not proc.is_alive() and proc.exitcode not in (None, 0):
                self._failure.append(
                    f"rank {rank} (pid {proc.pid}) exited with code {proc.exitcode}"
                )

    def guard(self, error: BaseException) -> RankFailure:
        """The error to raise for a collective that failed on rank 0."""
        return self._failed(error)

    def _failed(self, error: BaseException) -> RankFailure:
        deadline = time.monotonic() + 2.0  # a lost peer is seen before its exit is reaped
        while not self._failure and time.monotonic() < deadline:
            time.sleep(0.05)
            self._poll()
        cause = self._failure[0] if self._failure else "a rank stopped answering"
        return RankFailure(f"tensor-parallel engine failed: {cause} ({error})")

    def _watch(self) -> None:
        sentinels = {p.sentinel: (i + 1, p) for i, p in enumerate(self.processes)}
        while sentinels:
            ready = wait(list(sentinels), timeout=1.0)
            for s in ready:
                rank, proc = sentinels.pop(s)
                proc.join(5)  # reap it, so its exit code is known
                if not self._failure and proc.exitcode != 0:
                    self._failure.append(
                        f"rank {rank} (pid {proc.pid}) exited with code {proc.exitcode}"
                    )
            if self._failure:
                return

    def close(self, grace_s: float = 10.0) -> None:
        """Stop the helpers (after a stop command when the group still works) and leave the
        process group; bounded by `grace_s`, then helpers are killed."""
        if self.rank == 0 and not self._failure:
            with contextlib.suppress(Exception):  # a broken group: its helpers are killed below
                dist.broadcast_object_list([STOP], src=0, group=self.commands)
        _stop_processes(self.processes, grace_s)
        if dist.is_initialized():
            dist.destroy_process_group()

    # ---- helpers --------------------------------------------------------------------------------
    def wait_ready(self, timeout_s: float) -> None:
        """Rank 0: wait until every helper called `ready()` (loading a large shard can take
        minutes, longer than a collective may wait); a helper that fails or dies first, or the
        timeout, raises `RankFailure` with its reason."""
        deadline = time.monotonic() + timeout_s
        waiting = self.world - 1
        while waiting:
            self.check()
            try:
                rank, message = self._status.get(
                    timeout=min(1.0, max(deadline - time.monotonic(), 0))
                )
            except queue.Empty:
                if time.monotonic() >= deadline:
                    raise RankFailure(
                        f"{waiting} of the {self.world - 1} helper ranks were not ready after "
                        f"{timeout_s:.0f} s"
                    ) from None
                continue
            if message != "ready":
                raise RankFailure(f"rank {rank} could not start: {message}")
            waiting -= 1

    def ready(self) -> None:
        """A helper: tell rank 0 this rank is ready."""
        self._status.put((self.rank, "ready"))

    def receive(self) -> Any:
        """The next command rank 0 broadcast (helpers)."""
        box = [None]
        dist.broadcast_object_list(box, src=0, group=self.commands)
        return box[0]


def _helper_main(rank, world, port, backend, timeout_s, entry, payload, parent_pid, status):
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()
    if backend == "gloo":  # CPU ranks share the cores instead of each taking all of them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    group = RankGroup._join(rank, world, port, backend, timeout_s, [], status)
    try:
        entry(group, payload)
    except BaseException as e:  # noqa: BLE001 - a broken group: leave at once, no cleanup
        status.put((rank, f"{type(e).__name__}: {e}"))  # rank 0 may be waiting for `ready`
        traceback.print_exc()
        status.close()
        status.join_thread()
        os._exit(1)  # tearing down a group whose peer is gone can block without the GIL
    dist.destroy_process_group()


def _exit_with_parent(parent_pid: int) -> None:
    """A helper's watchdog: when rank 0's process is gone (reparented), exit at once."""
    while os.getppid() == parent_pid:
        time.sleep(_PARENT_POLL_S)
    os._exit(1)


def _stop_processes(processes, grace_s: float) -> None:
    deadline = time.monotonic() + grace_s
    for proc in processes:
        proc.join(max(deadline - time.monotonic(), 0))
    for proc in processes:
        if proc.is_alive():
            proc.kill()
            proc.join(5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"
