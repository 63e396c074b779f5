"""The scheduler: which sequences run, what each step computes, which prefixes stay cached.

Policy only: it decides, the runner computes. It keeps
- `waiting`: submitted sequences in admission order, planned again whenever the set changes
  (`scheduling.plan_prefix_reuse` over the sequences still prefilling and those waiting), so
  requests that share a prefix, whoever submitted them, are admitted together and the prefix
  is computed once. A plan costs time in proportion to everything waiting, so while planned
  sequences are left to admit, new arrivals wait at the end, unplanned and not admitted, until
  `PLAN_INTERVAL_RATIO` times the last plan's duration has passed: requests that trickle in one
  by one (a call larger than `max_pending` hands one over per finished request) cost a plan
  per interval instead of one per step. A sequence overtaken by `max_batch_size` later
  arrivals is overdue and goes first, so a steady stream of new groups never starves it.
- `running`: admitted sequences, prefilling or generating, at most `max_batch_size`. A sequence
  is admitted while the running ones' unprefilled prompts leave budget in the step, and while
  the snapshots it is to take for waiting sequences fit the cache beside those pinned and being
  computed (`state_bytes`), rather than filling the batch with prompts no step can serve yet or
  prefixes the cache cannot keep.
- the prefix cache, whose entries are `SnapshotRef`s to state the runner holds. A prefix that
  waiting sequences plan to restore stays pinned from when it is cached until the last of them
  is admitted (the snapshots of concurrent prefills could evict it first); a sequence pins the
  snapshot it restored until its first chunk is computed (its state is that snapshot's
  tensors until then).

`schedule()` admits what fits and plans one step: a decode token for every generating sequence,
then prefill chunks within `max_batch_tokens`, with the snapshots to take inside each chunk.
"""

from __future__ import annotations

import bisect
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from flashbeam.model.engine.prefix_cache import PrefixCache
from flashbeam.model.engine.prefix_plan import plan_prefix_reuse
from flashbeam.model.engine.sequence import Sequence

# While planned sequences wait, arrivals are planned once this many times the last plan's
# duration has passed since it: planning then takes at most about a tenth of the loop's time.
PLAN_INTERVAL_RATIO = 10


@dataclass(frozen=True)
class SnapshotRef:
    """A prefix-cache entry: the runner holds the state under `id`; the cache counts `nbytes`."""

    id: int
    nbytes: int


@dataclass(frozen=True)
class Admission:
    seq: Sequence
    restore: int | None  # id of the snapshot its state starts from; None: the empty state


@dataclass(frozen=True)
class Chunk:
    """`size` prompt tokens of `seq` from `seq.computed`; `snapshots` lists (tokens of the chunk
    after which, snapshot id) for the states to cache, in prompt order."""

    seq: Sequence
    size: int
    snapshots: list[tuple[int, int]]

    @property
    def tokens(self) -> list[int]:
        return self.seq.prompt[self.seq.computed : self.seq.computed + self.size]


@dataclass(frozen=True)
class StepPlan:
    admitted: list[Admission]
    decode: list[Sequence]
    prefill: list[list[Chunk]]  # groups of equal chunk size: one forward pass each


class Scheduler:
    def __init__(
        self,
        cache_bytes: int,
        max_batch_tokens: int,
        max_batch_size: int,
        snapshot_interval: int,
        state_bytes: Callable[[int], int] = lambda length: 0,
        min_wait_tokens: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cache = PrefixCache(cache_bytes, on_drop=self._on_drop)
        self.state_bytes = state_bytes  # the bytes of a snapshot after that many tokens
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.snapshot_interval = snapshot_interval
        self.min_wait_tokens = min_wait_tokens
        self.waiting: list[Sequence] = []
        self.running: list[Sequence] = []
        self._replan = False
        self._clock = clock
        self._unplanned = 0  # arrivals since the last plan: the last ones of `waiting`
        self._planned_at, self._plan_seconds = -math.inf, 0.0
        self.plans = 0
        self._snapshot_ids = itertools.count()
        self._dropped: list[int] = []
        # Prefixes waiting sequences plan to restore: how many plan to, and the pinned cache
        # handles of those already cached.
        self._awaited: dict[tuple[int, ...], int] = {}
        self._held: dict[tuple[int, ...], object] = {}
        self._admitted_arrivals: list[int] = []  # sorted, of admissions since the oldest waiting

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    # ---- the sequences ---------------------------------------------------------------------
    def add(self, seqs: list[Sequence]) -> None:
        self.waiting.extend(seqs)
        self._unplanned += len(seqs)

    def remove(self, seq: Sequence) -> None:
        """Forget a sequence wherever it is (it finished, failed, was cancelled or timed out)."""
        if seq in self.running:
            self.running.remove(seq)
            if seq.prefilling:
                self._replan = True  # waiting consumers of its prefix must not wait for it
        elif seq in self.waiting:
            self.waiting.remove(seq)
            self._replan = True
        if seq.pinned is not None:
            self.cache.unpin(seq.pinned)
            seq.pinned = None

    def take_dropped(self) -> list[int]:
        """Ids of snapshots the cache let go of since the last call: the runner frees them."""
        dropped, self._dropped = self._dropped, []
        return dropped

    def clear(self) -> None:
        self.waiting, self.running = [], []
        self._unplanned = 0
        self._awaited, self._held = {}, {}
        self.cache.clear()

    # ---- one step ----------------------------------------------------------------------------
    def schedule(self) -> StepPlan:
        if self._mark_overdue() or self._replan or self._plan_arrivals():
            self._plan()
        admitted = self._admit_ready()
        decode = [s for s in self.running if not s.prefilling]
        budget = max(self.max_batch_tokens - len(decode), 0)
        by_size: dict[int, list[Chunk]] = {}
        for seq in self.running:
            if seq.prefilling and budget > 0:
                chunk = self._chunk(seq, budget)
                by_size.setdefault(chunk.size, []).append(chunk)
                budget -= chunk.size
        return StepPlan(admitted, decode, list(by_size.values()))

    def prefilled(self, chunk: Chunk, nbytes: dict[int, int]) -> None:
        """Record a computed chunk: cache the snapshots taken in it (`nbytes` by snapshot id)."""
        seq = chunk.seq
        for count, snapshot_id in chunk.snapshots:
            self._cache_snapshot(seq.prompt[: seq.computed + count], snapshot_id, nbytes)
        seq.computed += chunk.size
        if seq.pinned is not None:
            self.cache.unpin(seq.pinned)
            seq.pinned = None

    def _chunk(self, seq: Sequence, budget: int) -> Chunk:
        """Up to the prompt's end, within the step's token budget. With snapshots planned, a
        chunk that stops short of the end stops at a multiple of `snapshot_interval`, so
        sequences at equal progress keep equal chunk sizes and share forward passes; snapshots
        are taken inside the chunk, which is not cut there."""
        end = min(len(seq.prompt), seq.computed + budget)
        if end < len(seq.prompt) and seq.snapshot_points:
            aligned = end // self.snapshot_interval * self.snapshot_interval
            if aligned > seq.computed:
                end = aligned
        points = [p for p in seq.snapshot_points if seq.computed < p <= end]
        snapshots = [(p - seq.computed, next(self._snapshot_ids)) for p in points]
        return Chunk(seq, end - seq.computed, snapshots)

    # ---- planning ----------------------------------------------------------------------------
    def _plan_arrivals(self) -> bool:
        """Whether to plan the sequences that arrived since the last plan now: at once when no
        planned sequence waits, else once the interval since the last plan has passed."""
        if not self._unplanned:
            return False
        if self._unplanned >= len(self.waiting):
            return True
        return self._clock() - self._planned_at >= PLAN_INTERVAL_RATIO * self._plan_seconds

    def _plan(self) -> None:
        """Admission order of the waiting sequences and the snapshot positions of every
        sequence still prefilling: where prompts diverge, every `snapshot_interval` tokens (for
        later requests), and one token before the end (a repeat, e.g. a retry, reuses all but
        one token)."""
        started = self._clock()
        self._replan, self._unplanned = False, 0
        self.plans += 1
        prefilling = [s for s in self.running if s.prefilling]
        seqs = prefilling + self.waiting
        overdue = sorted(
            (i for i, s in enumerate(seqs) if s.overdue and i >= len(prefilling)),
            key=lambda i: seqs[i].arrival,
        )
        plan = plan_prefix_reuse(
            [s.prompt for s in seqs], first=list(range(len(prefilling))) + overdue
        )
        caching = self.cache.capacity_bytes > 0  # a disabled cache: no snapshots, no restores
        for seq, branch in zip(prefilling, plan.branch_points):
            late = [p for p in branch if p > seq.computed] if caching else []
            seq.snapshot_points = sorted({*seq.snapshot_points, *late})
            seq.branch_points = sorted({*seq.branch_points, *late})
        awaited: dict[tuple[int, ...], int] = {}
        ahead = len(prefilling)
        for seq, restore, branch in zip(
            self.waiting, plan.restore_lengths[ahead:], plan.branch_points[ahead:]
        ):
            n = len(seq.prompt)
            regular = range(self.snapshot_interval, n - 1, self.snapshot_interval)
            points = {*branch, *regular, n - 1} - {0}
            seq.snapshot_points = sorted(points) if caching else []
            seq.branch_points = list(branch) if caching else []
            seq.restore_length = restore if caching else 0
            if restore:
                key = tuple(seq.prompt[:restore])
                awaited[key] = awaited.get(key, 0) + 1
        self.waiting = [seqs[i] for i in plan.order if i >= ahead]
        self._hold(awaited)
        self._planned_at = self._clock()
        self._plan_seconds = self._planned_at - started

    def _hold(self, awaited: dict[tuple[int, ...], int]) -> None:
        """Pin the cached prefixes that waiting sequences now plan to restore; unpin the rest."""
        for key in [k for k in self._held if k not in awaited]:
            self.cache.unpin(self._held.pop(key))
        for key in awaited:
            handle = self.cache.find(key) if key not in self._held else None
            if handle is not None:
                self.cache.pin(handle)
                self._held[key] = handle
        self._awaited = awaited

    def _mark_overdue(self) -> bool:
        """Mark waiting sequences that `max_batch_size` later arrivals have overtaken; True
        when any became overdue (the order changes)."""
        if not self.waiting:
            self._admitted_arrivals.clear()
            return False
        arrivals = self._admitted_arrivals
        oldest = min(s.arrival for s in self.waiting)
        del arrivals[: bisect.bisect_right(arrivals, oldest)]  # they overtook no one waiting
        if len(arrivals) < self.max_batch_size:
            return False
        changed = False
        for seq in self.waiting:
            later = len(arrivals) - bisect.bisect_right(arrivals, seq.arrival)
            if not seq.overdue and later >= self.max_batch_size:
                seq.overdue = changed = True
        return changed

    # ---- admission -----------------------------------------------------------------------------
    def _admit_ready(self) -> list[Admission]:
        """Admit waiting sequences in order while there is room: a free slot, and prefill budget
        left in this step once the running sequences' prompts are served (a sequence admitted
        beyond that would only hold a slot, and match the cache before it holds what the running
        ones are computing). Passed over, in order:
        - those whose shared prefix a running sequence is still computing: they wait for its
          snapshot instead of redoing it (producers run ahead of consumers in the order, so
          no one waits forever);
        - sequences whose snapshots others will restore, while those would not fit the cache
          beside those pinned and being computed (`reserved`). Once reservations drain
          (restores unpin), the first is admitted whatever its size, and none after an overdue
          one passed over, so none waits forever;
        - sequences that would restore what one passed over is to compute.
        Only prefixes of at least `min_wait_tokens` are waited for: a shorter one (a shared chat
        template, say) costs less to compute again than a step of waiting.
        """
        admitted: list[Admission] = []
        passed: list[Sequence] = []
        overdue_passed = False
        computing = sum(self._to_restore(s) for s in self.running)
        budget = self.max_batch_tokens - sum(1 for s in self.running if not s.prefilling)
        backlog = sum(len(s.prompt) - s.computed for s in self.running)
        planned = len(self.waiting) - self._unplanned
        arrived = self.waiting[planned:]  # not planned yet: not admitted
        for i, seq in enumerate(self.waiting[:planned]):
            if len(self.running) >= self.max_batch_size or backlog >= budget:
                passed.extend(self.waiting[i:planned])
                break
            needs = self._to_restore(seq)
            if self._must_wait(seq, passed) or (
                needs and self._no_room(needs, computing, overdue_passed)
            ):
                passed.append(seq)
                overdue_passed = overdue_passed or seq.overdue
                continue
            admitted.append(self._admit(seq))
            computing += needs
            backlog += len(seq.prompt) - seq.computed
        self.waiting = passed + arrived
        return admitted

    def _must_wait(self, seq: Sequence, passed: list[Sequence]) -> bool:
        """`seq` would restore a prefix that a running sequence is still computing, or that one
        passed over is to compute (only prefixes worth a step of waiting)."""
        if seq.restore_length < max(self.min_wait_tokens, 1):
            return False
        return self._prefix_in_progress(seq) or self._restores_from(seq, passed)

    def _no_room(self, needs: int, computing: int, overdue_passed: bool) -> bool:
        """Snapshots of `needs` bytes would not fit beside those pinned and being computed;
        with nothing reserved there is always room, so a large one is not held forever."""
        reserved = self.cache.pinned_bytes + computing
        return reserved > 0 and (overdue_passed or reserved + needs > self.cache.capacity_bytes)

    @staticmethod
    def _restores_from(seq: Sequence, passed: list[Sequence]) -> bool:
        """Whether `seq` would restore a prefix of one passed over. Requests that share a
        prefix are adjacent in the order, so the last one passed over is the one to ask."""
        need = seq.restore_length
        return need > 0 and bool(passed) and passed[-1].prompt[:need] == seq.prompt[:need]

    def _prefix_in_progress(self, seq: Sequence) -> bool:
        need = seq.restore_length
        shared = seq.prompt[:need]
        return any(
            r.prefilling and r.computed < need and r.prompt[:need] == shared for r in self.running
        )

    def _to_restore(self, seq: Sequence) -> int:
        """Bytes of the snapshots `seq` is still to take that waiting sequences will restore."""
        return sum(self.state_bytes(p) for p in seq.branch_points if p > seq.computed)

    def _admit(self, seq: Sequence) -> Admission:
        match = self.cache.match(seq.prompt, max_length=len(seq.prompt) - 1)
        restore = None
        if match.snapshot is not None:
            seq.computed = seq.cache_hit = match.length
            seq.pinned = match.handle
            self.cache.pin(match.handle)
            restore = match.snapshot.id
        if seq.restore_length:  # one consumer of a planned prefix fewer to hold it for
            key = tuple(seq.prompt[: seq.restore_length])
            self._awaited[key] -= 1
            if self._awaited[key] == 0:
                del self._awaited[key]
                if key in self._held:
                    self.cache.unpin(self._held.pop(key))
        self.running.append(seq)
        bisect.insort(self._admitted_arrivals, seq.arrival)
        return Admission(seq, restore)

    # ---- the cache ---------------------------------------------------------------------------
    def _cache_snapshot(self, prefix: list[int], snapshot_id: int, nbytes: dict[int, int]) -> None:
        ref = SnapshotRef(snapshot_id, nbytes[snapshot_id])
        handle = self.cache.insert(prefix, ref)
        if handle is None or handle.snapshot is not ref:  # no room: the runner frees it
            self._dropped.append(snapshot_id)
        key = tuple(prefix)
        if handle is not None and self._awaited.get(key) and key not in self._held:
            self.cache.pin(handle)
            self._held[key] = handle

    def _on_drop(self, ref: SnapshotRef) -> None:
        self._dropped.append(ref.id)
