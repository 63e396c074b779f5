"""The engine's loop: take submissions, schedule, run, sample, deliver; in one thread.

Only the loop thread touches the scheduler, the runner and the sequences it holds; other
threads talk to it through the inbox (new requests, cancellations, stop) and read results from
futures. Every decision (admission, eviction, the sampled token) is made here or in the
scheduler and passed to the runner as plain data.
"""

from __future__ import annotations

import heapq
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass

import torch

from flashbeam.model.engine.output import accept, next_tokens, result_of
from flashbeam.model.engine.runner import FATAL_ERRORS, ModelRunner
from flashbeam.model.engine.scheduler import Chunk, Scheduler
from flashbeam.model.engine.sequence import Sequence
from flashbeam.model.text.tokenizer import Tokenizer


class EngineError(RuntimeError):
    """The engine cannot take or finish requests: it was closed, or it stopped on a fatal
    error (which is then the `__cause__`)."""


class EngineFull(EngineError):
    """No room for another request within `queue_timeout`: `max_pending` are in the engine."""


@dataclass
class EngineProgress:
    """Counters passed to the `progress` callback after every step."""

    finished: int
    total: int
    prompt_tokens: int
    cached_tokens: int
    generated_tokens: int
    errors: int
    elapsed_s: float


class Tally:
    """The counters of one `generate` call. The loop moves them and posts an EngineProgress
    after each step that did; the calling thread hands those to its callback (`follow`)."""

    def __init__(self, total: int) -> None:
        self.progress = EngineProgress(0, total, 0, 0, 0, 0, 0.0)
        self.started = time.perf_counter()
        self.updates: queue.SimpleQueue[EngineProgress] = queue.SimpleQueue()

    def finished_one(self, seq: Sequence) -> None:
        self.progress.finished += 1
        self.progress.errors += seq.finish_reason == "error"

    def post(self) -> None:
        self.progress.elapsed_s = time.perf_counter() - self.started
        self.updates.put(EngineProgress(**vars(self.progress)))

    def follow(self, futures: list[Future], callback: Callable[[EngineProgress], None]) -> None:
        """Call `callback` with each posted update until every future is done. Updates are
        posted before results are delivered, so none is missed."""
        while True:
            try:
                callback(self.updates.get(timeout=0.05))
            except queue.Empty:
                if all(f.done() for f in futures):
                    break
        while True:
            try:
                callback(self.updates.get_nowait())
            except queue.Empty:
                return


class EngineLoop:
    def __init__(
        self, runner: ModelRunner, scheduler: Scheduler, tokenizer: Tokenizer, max_pending: int
    ) -> None:
        self.runner = runner
        self.scheduler = scheduler
        self.tokenizer = tokenizer
        self.failure: BaseException | None = None
        self._slots = threading.Semaphore(max_pending)
        self._inbox: queue.SimpleQueue[tuple[str, object]] = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards `_stopped`, the thread's start and the inbox
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._stopping = self._drain = False
        self._deadlines: list[tuple[float, int, Sequence]] = []
        self._moved: dict[int, Tally] = {}
        self._done: list[Sequence] = []

    # ---- other threads ---------------------------------------------------------------------
    def check_open(self) -> None:
        if self._stopped:
            raise self._refusal()

    def enter(self, seqs: list[Sequence], queue_timeout: float | None) -> None:
        """Hand sequences to the loop, each holding a slot; wait for slots as `queue_timeout`
        says. What was taken before a wait is handed over first, so the wait can end; when
        the wait runs out, those are cancelled: all of `seqs` enter, or none stays."""
        batch: list[Sequence] = []
        for i, seq in enumerate(seqs):
            if not self._slots.acquire(blocking=False):
                self._put(batch)
                batch = []
                if not self._slots.acquire(timeout=queue_timeout):
                    for handed in seqs[:i]:
                        handed.future.cancel()
                    raise EngineFull(
                        f"request {seq.request.id!r}: the engine holds its maximum of pending "
                        f"requests and none finished within {queue_timeout} s; submit more "
                        "slowly, or raise max_pending"
                    )
            batch.append(seq)
        self._put(batch)

    def _put(self, batch: list[Sequence]) -> None:
        if not batch:
            return
        with self._lock:
            if self._stopped:
                for _ in batch:
                    self._slots.release()
                raise self._refusal()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="flashbeam-engine")
                self._thread.daemon = True
                self._thread.start()
            self._inbox.put(("add", batch))
        for seq in batch:
            seq.future.add_done_callback(lambda f, seq=seq: self._on_done(f, seq))

    def _on_done(self, future: Future, seq: Sequence) -> None:
        if future.cancelled():
            self._inbox.put(("cancel", seq))

    def stop(self, drain: bool, join: bool = True, join_timeout: float | None = None) -> None:
        """Refuse new work; the loop finishes what it holds (`drain`) or fails it, exits and
        frees the model. `join` waits for that (not from the loop's own thread)."""
        with self._lock:
            self._stopped = True
            thread = self._thread
            if thread is not None:
                self._inbox.put(("stop", drain))
        if thread is None:
            self._release()
        elif join and thread is not threading.current_thread():
            thread.join(join_timeout)

    def _refusal(self) -> EngineError:
        if self.failure is None:
            return EngineError("the engine is closed; load a new one to submit more requests")
        error = EngineError(
            f"the engine stopped on a fatal error ({type(self.failure).__name__}: "
            f"{self.failure}); load a new one"
        )
        error.__cause__ = self.failure
        return error

    # ---- the loop thread ---------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while self._take():
                self._expire()
                if self.scheduler.has_work:
                    self._step()
                self._publish()
        except BaseException as e:  # noqa: BLE001 - fatal: every pending future gets the cause
            self._fail_all(e)
        finally:
            self._release()

    def _take(self) -> bool:
        """Take what arrived, waiting when there is nothing to do; False: exit the loop."""
        block = not self.scheduler.has_work and not self._stopping
        while True:
            try:
                kind, item = self._inbox.get(block=block)
            except queue.Empty:
                break
            block = False
            if kind == "add":
                self.scheduler.add(item)
                for seq in item:
                    if seq.deadline is not None:
                        heapq.heappush(self._deadlines, (seq.deadline, seq.id, seq))
            elif kind == "cancel":
                if not item.finished:
                    item.finish("error", f"request {item.request.id!r}: cancelled")
                    self._retire(item)
            else:  # a stop that fails what is pending overrules one that drains it
                self._drain = item and (self._drain or not self._stopping)
                self._stopping = True
        if not self._stopping:
            return True
        if not self._drain:
            self._fail_pending(lambda: self._refusal())
            return False
        return self.scheduler.has_work

    def _expire(self) -> None:
        now = time.monotonic()
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, seq = heapq.heappop(self._deadlines)
            if not seq.finished:
                where = (
                    "waiting to be admitted"
                    if seq in self.scheduler.waiting
                    else f"with {seq.computed} prompt tokens and {len(seq.output)} output "
                    "tokens computed"
                )
                seq.finish("error", f"request {seq.request.id!r}: timed out {where}")
                self._retire(seq)

    def _step(self) -> None:
        plan = self.scheduler.schedule()
        for admission in plan.admitted:
            seq = admission.seq
            self.runner.add(seq.id, admission.restore, seq.max_length)
            if seq.tally is not None:
                seq.tally.progress.prompt_tokens += seq.computed
                seq.tally.progress.cached_tokens += seq.cache_hit
                self._moved[id(seq.tally)] = seq.tally
        touched = list(plan.decode)
        if plan.decode:
            self._decode(plan.decode)
        for group in plan.prefill:
            self._prefill(group)
            touched.extend(c.seq for c in group)
        for seq in touched:
            if seq.finished:
                self._retire(seq)
        self.runner.drop_snapshots(self.scheduler.take_dropped())

    def _prefill(self, group: list[Chunk]) -> None:
        """One forward pass over chunks of equal size; on a failure retry them one by one, so
        only the culprit fails."""
        try:
            logits, nbytes = self.runner.prefill(
                [c.seq.id for c in group], [c.tokens for c in group], [c.snapshots for c in group]
            )
        except FATAL_ERRORS:
            raise
        except Exception as e:  # noqa: BLE001 - a model failure ends the requests it hits only
            if len(group) == 1:
                seq = group[0].seq
                seq.finish("error", f"request {seq.request.id!r}: model failure: {e}")
            else:
                for chunk in group:
                    self._prefill([chunk])
            return
        for chunk in group:
            self.scheduler.prefilled(chunk, nbytes)
            if chunk.seq.tally is not None:
                chunk.seq.tally.progress.prompt_tokens += chunk.size
                self._moved[id(chunk.seq.tally)] = chunk.seq.tally
        self._sample([(c.seq, logits[i]) for i, c in enumerate(group) if not c.seq.prefilling])

    def _decode(self, seqs: list[Sequence]) -> None:
        """One token for every generating sequence, in one batched call."""
        try:
            logits = self.runner.decode([s.id for s in seqs], [s.last_token for s in seqs])
        except FATAL_ERRORS:
            raise
        except Exception as e:  # noqa: BLE001 - the batch state is unusable after this
            for seq in seqs:
                seq.finish("error", f"request {seq.request.id!r}: model failure in decode: {e}")
            return
        self._sample(list(zip(seqs, logits)))

    def _sample(self, outcome: list[tuple[Sequence, torch.Tensor]]) -> None:
        """Sample one token for each (sequence, next-token logits) pair, as one batch."""
        if not outcome:
            return
        seqs = [seq for seq, _ in outcome]
        try:
            tokens = next_tokens(seqs, torch.stack([lg for _, lg in outcome]))
        except FATAL_ERRORS:
            raise
        except Exception as e:  # noqa: BLE001 - isolate the request that failed
            if len(outcome) == 1:
                seqs[0].finish("error", f"request {seqs[0].request.id!r}: {e}")
            else:
                for pair in outcome:
                    self._sample([pair])
            return
        for seq, token in zip(seqs, tokens):
            before = len(seq.output)
            try:
                accept(seq, token, self.tokenizer)
            except Exception as e:  # noqa: BLE001 - a grammar failure ends this request only
                seq.finish("error", f"request {seq.request.id!r}: {e}")
            if seq.tally is not None and len(seq.output) > before:
                seq.tally.progress.generated_tokens += 1
                self._moved[id(seq.tally)] = seq.tally

    # ---- delivery ------------------------------------------------------------------------------
    def _retire(self, seq: Sequence) -> None:
        """A finished sequence leaves the scheduler and the runner; its result goes out with
        the step's progress (`_publish`)."""
        self.scheduler.remove(seq)
        self.runner.release([seq.id])
        pending = len(self.scheduler.waiting) + len(self.scheduler.running)
        if len(self._deadlines) > 64 + 2 * pending:  # drop the finished ones now and then
            self._deadlines = [d for d in self._deadlines if not d[2].finished]
            heapq.heapify(self._deadlines)
        if seq.tally is not None:
            seq.tally.finished_one(seq)
            self._moved[id(seq.tally)] = seq.tally
        self._done.append(seq)

    def _publish(self) -> None:
        for tally in self._moved.values():
            tally.post()
        self._moved = {}
        done, self._done = self._done, []
        for seq in done:
            self._settle(seq.future, result=result_of(seq))

    def _settle(self, future: Future, result=None, error: BaseException | None = None) -> None:
        try:
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)
        except InvalidStateError:  # cancelled by its caller meanwhile
            pass
        self._slots.release()

    def _fail_pending(self, error: Callable[[], BaseException]) -> None:
        """Fail every request the loop holds or has yet to take (their slots come free)."""
        pending = self.scheduler.waiting + self.scheduler.running
        while True:
            try:
                kind, item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if kind == "add":
                pending.extend(item)
        self._publish()
        for seq in pending:
            self._settle(seq.future, error=error())
        self.scheduler.clear()
        self.runner.clear()

    def _fail_all(self, cause: BaseException) -> None:
        with self._lock:
            self._stopped = True
            self.failure = cause
        self._fail_pending(self._refusal)

    def _release(self) -> None:
        self.scheduler.clear()
        self.runner.close()
