"""The Engine: one continuous-batching loop in a background thread, fed from any thread.

`submit(request)` returns a `Future[Result]` at once, `submit_many(requests)` one per request
for requests that belong together; `generate(requests)` submits them all and waits. The loop
thread (`loop.py`) owns all engine state, so callers never touch it. Each pass of the loop:
1. takes what arrived (new requests, cancellations) and fails requests past their deadline;
2. asks the scheduler for a step (`scheduler.py`): admissions in prefix-sharing order, one
   decode token for every generating sequence, prefill chunks within the token budget;
3. has the runner compute it (`runner.py`), samples each sequence's next token (`output.py`)
   and records the prefix snapshots the step took in the cache;
4. delivers the result of every request that finished, at once, and posts progress.

Requests join the running batch at the next step, so an accelerator never idles while anything
is pending. Submissions hold a slot until they finish: with `max_pending` slots taken, `submit`
blocks (backpressure). A failure tied to one request fails that request; a fatal one (out of
memory, a failure outside the model) fails every pending future with it as the cause, and the
engine refuses further work. `close()` (or leaving a `with` block) stops the thread and frees
the model.
"""

from __future__ import annotations

import atexit
import itertools
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

import torch

from flashbeam.model.checkpoint.fit import require_fit
from flashbeam.model.checkpoint.loading import load_model, resolve_checkpoint
from flashbeam.model.engine.decode_graphs import graph_sizes
from flashbeam.model.engine.intake import Intake
from flashbeam.model.engine.loop import EngineError, EngineFull, EngineLoop, EngineProgress, Tally
from flashbeam.model.engine.output import result_of
from flashbeam.model.engine.parallel_runner import ParallelRunner, ShardSpec, devices_for
from flashbeam.model.engine.prefix_cache import PrefixCache
from flashbeam.model.engine.request import Request, Result
from flashbeam.model.engine.runner import ModelRunner
from flashbeam.model.engine.scheduler import Scheduler
from flashbeam.model.grammar.compiler import GrammarCompiler
from flashbeam.model.network.transformer import Transformer
from flashbeam.model.text.tokenizer import Tokenizer

__all__ = ["Engine", "EngineError", "EngineFull", "EngineProgress"]

_live: weakref.WeakSet[EngineLoop] = weakref.WeakSet()


@atexit.register
def _stop_all_loops() -> None:
    """Stop every loop thread before the interpreter tears down: a daemon thread still inside
    torch when it does could abort the finished process."""
    for loop in list(_live):
        loop.stop(drain=False, join=True, join_timeout=30.0)


class Engine:
    def __init__(
        self,
        model: Transformer,
        tokenizer: Tokenizer,
        max_batch_tokens: int = 2048,
        max_batch_size: int = 64,
        cache_bytes: int = 1 << 30,
        snapshot_interval: int = 1024,
        name: str = "model",
        max_pending: int = 1024,
        runner: ModelRunner | ParallelRunner | None = None,
        cuda_graphs: bool = False,
    ) -> None:
        """`model` runs on one device; or give the `runner` of a tensor-parallel group (see
        `Engine.load(..., tensor_parallel=N)`) and its rank-0 `model`. `cuda_graphs` replays
        decode steps from CUDA graphs captured for the batch sizes 1, 2, 4, ... up to
        `max_batch_size` (`decode_graphs`); it needs a model on one CUDA device."""
        if max_batch_tokens < 1 or max_batch_size < 1 or max_pending < 1:
            raise ValueError("max_batch_tokens, max_batch_size and max_pending must be >= 1")
        if cuda_graphs and (runner is not None or model.device.type != "cuda"):
            raise ValueError(
                f"cuda_graphs needs the model on one CUDA device (it is on {model.device}"
                f"{', with tensor parallel ranks' if runner is not None else ''}); "
                "turn cuda_graphs off, or load on device='cuda' with tensor_parallel=1"
            )
        self.tokenizer = tokenizer
        self.name = name
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.snapshot_interval = snapshot_interval
        self.max_pending = max_pending
        config = model.config
        self.intake = Intake(tokenizer, config.vocab_size, config.max_position_embeddings)
        if runner is None:
            runner = ModelRunner(model, graph_sizes(max_batch_size) if cuda_graphs else None)
        self.runner = runner
        self.scheduler = Scheduler(
            cache_bytes,
            max_batch_tokens,
            max_batch_size,
            snapshot_interval,
            state_bytes=self.runner.state_bytes,
        )
        self._loop = EngineLoop(self.runner, self.scheduler, tokenizer, max_pending)
        _live.add(self._loop)
        # A forgotten engine stops its thread (after finishing what it holds) when collected.
        weakref.finalize(self, self._loop.stop, True, False).atexit = False
        self._ids = itertools.count()
        self._arrivals = itertools.count()

    @classmethod
    def load(
        cls,
        path: str | Path = "tiny",
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        kv_quant_sim: bool | None = None,
        tensor_parallel: int = 1,
        devices: list[str] | None = None,
        keep_quantized: bool | None = None,
        **options,
    ) -> Engine:
        """Load a checkpoint directory (or "tiny", the embedded default) with its tokenizer;
        `kv_quant_sim` and `keep_quantized` as in `load_model`, the rest are the Engine's
        options.

        `tensor_parallel=N` spreads the model over N ranks (`model.parallel`): this process is
        rank 0 and starts N-1 helper processes itself, each loading only its share, on
        `devices` (default cuda:0..N-1 for device="cuda", else the CPU with gloo). On GPUs the
        weights are checked against the GPUs' free memory first, with the arithmetic of
        `flashbeam plan`."""
        directory = resolve_checkpoint(path)
        tokenizer = Tokenizer.from_file(directory)
        ranks = devices_for(device, tensor_parallel, devices)
        if torch.device(ranks[0]).type == "cuda":
            require_fit(directory, ranks, dtype, options.get("cache_bytes", 1 << 30))
        if tensor_parallel == 1:
            model = load_model(
                directory, ranks[0], dtype, keep_quantized=keep_quantized, kv_quant_sim=kv_quant_sim
            )
            return cls(model, tokenizer, name=str(path), **options)
        shards = ShardSpec(directory, ranks, dtype, kv_quant_sim, keep_quantized)
        runner = ParallelRunner.start(shards)
        try:
            return cls(runner.model, tokenizer, name=str(path), runner=runner, **options)
        except BaseException:
            runner.close()
            raise

    @property
    def model(self) -> Transformer | None:
        """The network (None once the engine is closed)."""
        return self.runner.model

    @property
    def cache(self) -> PrefixCache:
        return self.scheduler.cache

    @property
    def context(self) -> int:
        return self.intake.context

    @property
    def grammars(self) -> GrammarCompiler:
        return self.intake.grammars

    @property
    def failure(self) -> BaseException | None:
        """The fatal error the engine stopped on, if it did."""
        return self._loop.failure

    # ---- public ------------------------------------------------------------------------------
    def submit(
        self, request: Request, timeout: float | None = None, queue_timeout: float | None = None
    ) -> Future[Result]:
        """Hand one request to the loop; its future completes when it finishes.

        `timeout` (seconds from now) fails the request when it has not finished by then.
        With `max_pending` requests in the engine, this waits for room: `queue_timeout=None`
        as long as it takes, otherwise at most that long before raising `EngineFull`.
        Cancelling the future takes the request out of the engine.
        """
        return self._submit([request], timeout, queue_timeout, None)[0]

    def submit_many(
        self,
        requests: list[Request],
        timeout: float | None = None,
        queue_timeout: float | None = None,
    ) -> list[Future[Result]]:
        """`submit` for requests that belong together: they reach the loop as one arrival
        and are planned together, so a prefix they share is computed once even when the first
        of them would otherwise be running before the rest arrive."""
        return self._submit(list(requests), timeout, queue_timeout, None)

    def generate(
        self,
        requests: list[Request],
        progress: Callable[[EngineProgress], None] | None = None,
        timeout: float | None = None,
    ) -> list[Result]:
        """Run every request to completion; results come back in request order.

        A request that cannot run (bad messages, prompt too long, schema the grammar engine
        rejects, a failure inside the model, its `timeout` passed) gets `finish_reason="error"`;
        the rest proceed. `progress` is called in this thread after each engine step that moved
        these requests on.
        """
        tally = Tally(len(requests)) if progress is not None else None
        futures = self._submit(list(requests), timeout, None, tally)
        if tally is not None:
            try:
                tally.follow(futures, progress)
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        return [f.result() for f in futures]

    def close(self, wait: bool = True) -> None:
        """Stop taking requests, finish those already submitted (`wait=False`: fail them with
        `EngineError`), stop the loop's thread and free the model, its states and the cache."""
        self._loop.stop(drain=wait)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- submission --------------------------------------------------------------------------
    def _submit(
        self,
        requests: list[Request],
        timeout: float | None,
        queue_timeout: float | None,
        tally: Tally | None,
    ) -> list[Future[Result]]:
        self._loop.check_open()
        arrival = next(self._arrivals)  # one stamp per call: its requests are planned together
        deadline = time.monotonic() + timeout if timeout is not None else None
        seqs = [self.intake.sequence(next(self._ids), r) for r in requests]
        live = []
        for seq in seqs:
            seq.future, seq.arrival, seq.deadline, seq.tally = Future(), arrival, deadline, tally
            if seq.finished:  # the request cannot run: its error result is ready now
                if tally is not None:
                    tally.finished_one(seq)
                seq.future.set_result(result_of(seq))
            else:
                live.append(seq)
        self._loop.enter(live, queue_timeout)
        return [seq.future for seq in seqs]
