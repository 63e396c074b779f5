"""Engine faults contained: a request's deadline, and running out of memory.

    engine = ContainedEngine(config, engine_for, timeout_s=task.timeout_s)
    outcomes = run_prompts(engine, prompts, task, model)      # as with the Engine itself

`ContainedEngine` stands between the retry driver and the process's Engine (`load(config)`,
`handler.engine_for`), with the Engine's `submit_many`:

- **Deadline** (`task.timeout_s`): a request gets that long from the moment it is first handed
  over, its retries included. The Engine ends a request past its deadline with an error result
  that says where it was; that request becomes an error row and the others go on.
- **Out of memory**: the Engine stops on it and fails every request it holds. Those requests
  go to a fresh engine (`engine_for` loads one after a fatal error), at most half as many at a
  time as were running when memory ran out, and so on while it runs out again: the batch is
  split and retried. A request that runs out of memory alone ends as an error result naming its
  sizes and what to change; the rest go on.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from flashbeam.model.engine.engine import Engine
from flashbeam.model.engine.request import Request, Result

from .config import EngineConfig
from .prompts import prompt_text
from .sharding import tokenizer_for


def out_of_memory(error: BaseException | None) -> BaseException | None:
    """The out-of-memory error behind `error` (itself or a cause), if any."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, torch.OutOfMemoryError | MemoryError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


@dataclass
class _Request:
    request: Request
    outer: Future = field(default_factory=Future)
    deadline: float | None = None
    alone: bool = False  # handed over while the limit was one: nothing else of ours ran beside it


class ContainedEngine:
    """The Engine's `submit_many`, with per-request deadlines and out-of-memory containment.
    One per batch of prompts; safe from any thread."""

    def __init__(
        self,
        config: EngineConfig,
        load: Callable[[EngineConfig], Engine],
        timeout_s: float | None = None,
    ):
        self.config, self.timeout_s, self._load = config, timeout_s, load
        self._lock = threading.Lock()
        self._engine: Engine | None = None
        self._limit: int | None = None  # after running out of memory: at most this many at once
        self._running: dict[int, int] = {}  # engine id -> our requests in it
        self._waiting: deque[_Request] = deque()
        self._deadlines: dict[str, float] = {}
        self.splits = 0  # times the running requests were cut down after running out of memory

    def submit_many(self, requests: list[Request]) -> list[Future[Result]]:
        now = time.monotonic()
        entries = []
        with self._lock:
            for request in requests:
                if self.timeout_s is not None:
                    self._deadlines.setdefault(request.id, now + self.timeout_s)
                entries.append(_Request(request, deadline=self._deadlines.get(request.id)))
            self._waiting.extend(entries)
        self._pump()
        return [entry.outer for entry in entries]

    # ---- handing requests over -----------------------------------------------------------------

    def _pump(self) -> None:
        """Hand over what is waiting, as far as the limit allows."""
        while True:
            with self._lock:
                engine = self._engine
            if engine is None or engine.failure is not None:
                engine = self._load(self.config)  # after a fatal error: a fresh one
            with self._lock:
                if self._engine is None or self._engine.failure is not None:
                    self._engine = engine
                engine = self._engine
                running = self._running.get(id(engine), 0)
                room = len(self._waiting) if self._limit is None else self._limit - running
                batch = [self._waiting.popleft() for _ in range(min(room, len(self._waiting)))]
                if not batch:
                    return
                for entry in batch:
                    entry.alone = self._limit == 1
                self._running[id(engine)] = running + len(batch)
            self._hand_over(engine, batch)

    def _hand_over(self, engine: Engine, batch: list[_Request]) -> None:
        """Submit `batch` together, in runs of equal deadline (one timeout per submission)."""
        now = time.monotonic()
        runs: dict[float | None, list[_Request]] = {}
        for entry in batch:
            runs.setdefault(entry.deadline, []).append(entry)
        for deadline, entries in runs.items():
            timeout = None if deadline is None else max(deadline - now, 0.0)
            try:
                futures = engine.submit_many([e.request for e in entries], timeout=timeout)
            except Exception as e:  # noqa: BLE001 - refused: each request learns why
                futures = [_failed(e) for _ in entries]
            for entry, future in zip(entries, futures):
                future.add_done_callback(
                    lambda f, entry=entry, engine=engine: self._finished(entry, engine, f)
                )

    # ---- results ---------------------------------------------------------------------------------

    def _finished(self, entry: _Request, engine: Engine, future: Future[Result]) -> None:
        error = None if future.cancelled() else future.exception()
        memory = out_of_memory(error)
        with self._lock:
            running = self._running.get(id(engine), 0)
            self._running[id(engine)] = running - 1
            if memory is not None and not entry.alone:
                if self._engine is engine:  # the first to hear of it: fewer at once from now
                    self._limit = max(1, (running if self._limit is None else self._limit) // 2)
                    self._engine = None
                    self.splits += 1
                self._waiting.appendleft(entry)
            waiting = bool(self._waiting)
        if memory is not None and entry.alone:
            entry.outer.set_result(self._too_large(entry.request, memory))
        elif memory is None:
            _settle(entry.outer, future, self._deadline_note(entry))
        if waiting:  # from a thread of our own: this runs on the engine's loop thread
            threading.Thread(target=self._pump, name="flashbeam-contain", daemon=True).start()

    def _deadline_note(self, entry: _Request) -> str:
        if entry.deadline is None or time.monotonic() < entry.deadline:
            return ""
        return f" (the deadline, task.timeout_s = {self.timeout_s:g} s, passed)"

    def _too_large(self, request: Request, error: BaseException) -> Result:
        try:
            prompt = len(tokenizer_for(self.config.model).backend.encode(prompt_text(request)))
            size = f"its prompt is {prompt:,} tokens"
        except Exception:  # noqa: BLE001 - the sizes are a courtesy; the reason stands alone
            size = "its prompt could not be measured"
        message = (
            f"request {request.id!r} runs out of memory even alone: {size}, it may generate "
            f"{request.max_tokens:,} tokens, the engine takes {self.config.max_batch_tokens:,} "
            f"tokens a step and keeps a {self.config.cache_bytes:,}-byte prefix cache "
            f"({type(error).__name__}: {error}). Shorten the documents "
            "(task.chunking.max_tokens), lower task.max_tokens or engine.max_batch_tokens, or "
            "give the engine more memory"
        )
        return Result(request.id, finish_reason="error", error=message)


def _failed(error: BaseException) -> Future[Result]:
    future: Future[Result] = Future()
    future.set_exception(error)
    return future


def _settle(outer: Future, inner: Future, note: str) -> None:
    """Pass the inner result on; an error result ended by the deadline says which setting."""
    if inner.cancelled():
        outer.cancel()
    elif inner.exception() is not None:
        outer.set_exception(inner.exception())
    else:
        result = inner.result()
        if note and result.finish_reason == "error":
            result = dataclasses.replace(result, error=f"{result.error}{note}")
        outer.set_result(result)
