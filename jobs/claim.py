"""Before a run writes anything: claim its outputs, tidy what dead runs left, find work to reuse.

    claim = claim_outputs(plan.partitions, plan.results, fresh=False)
    config = dataclasses.replace(plan.config, resume=claim.resume)
    ...                      # run, finalize
    claim.release()

For each output partition (in path order): take its lock (`jobs.lock`; OutputBusy when a live
run holds it), put back a partition a dead run left renamed aside, and remove the run
directories dead runs left in the staging area. The results partition's `finished/` store
holds what earlier runs of the same job and date made durable; the run reuses what still
applies (`pipelines.resume`), or, with `fresh`, discards it first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flashbeam.pipelines.config import ResumeConfig
from flashbeam.pipelines.resume import list_finished

from .lock import LockHolder, OutputLock
from .partition import Partition


@dataclass
class OutputClaim:
    locks: list[OutputLock]
    resume: ResumeConfig
    taken_over: list[LockHolder] = field(default_factory=list)  # dead runs' locks
    restored: list[str] = field(default_factory=list)  # partitions put back from aside
    cleared: int = 0  # directories dead runs left, removed
    cleared_bytes: int = 0  # their bytes
    discarded_bytes: int = 0  # finished results dropped by `fresh`

    def check(self) -> None:
        """Raise LockLost when another run took one of the locks over."""
        for lock in self.locks:
            lock.check()

    def release(self) -> None:
        for lock in reversed(self.locks):
            lock.release()
        self.locks = []

    def notices(self) -> list[str]:
        """What the claim did, in a sentence each, for the user."""
        lines = [
            f"took over the lock of {holder.describe()}, which is no longer running"
            for holder in self.taken_over
        ]
        lines += [f"restored the previous output from {path}" for path in self.restored]
        if self.cleared:
            lines.append(
                f"removed what dead runs left: {self.cleared} staging director"
                f"{'y' if self.cleared == 1 else 'ies'}, {_size(self.cleared_bytes)}"
            )
        if self.discarded_bytes:
            lines.append(f"--fresh: discarded {_size(self.discarded_bytes)} of finished results")
        if self.resume.files:
            lines.append(
                f"resuming: {len(self.resume.files)} file(s) of finished results from earlier "
                "runs (--fresh ignores them)"
            )
        return lines


def claim_outputs(partitions: list[Partition], results: Partition, fresh: bool) -> OutputClaim:
    """Lock every partition and prepare the run's resume settings; raises OutputBusy or
    OSError (nothing of another run is touched then)."""
    locks = []
    claim = OutputClaim(locks, ResumeConfig(results.finished, (), results.run_id))
    try:
        for partition in sorted(partitions, key=lambda p: p.path):
            lock = OutputLock(partition.lock, partition.path, results.run_id)
            dead = lock.acquire()
            locks.append(lock)
            if dead is not None and dead.run_id != results.run_id:
                claim.taken_over.append(dead)
            restored = partition.recover()
            if restored is not None:
                claim.restored.append(restored)
            cleared, freed = partition.clear_dead_runs()
            claim.cleared += cleared
            claim.cleared_bytes += freed
        if fresh:
            claim.discarded_bytes = results.discard_finished()
        files = tuple(list_finished(results.finished))
        claim.resume = ResumeConfig(results.finished, files, results.run_id)
    except BaseException:
        claim.release()
        raise
    return claim


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = n / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
