"""Faults on the output side, said in words: a full disk, a folder that cannot be written, an
output path that is a file; and what a failed run kept for the next one.

Beam re-raises a worker's exception as a new one with the step's name (an OSError becomes a
RuntimeError whose message holds the original's), so the OSError is looked for along the
exception's chain first and in its message second.
"""

from __future__ import annotations

import errno
import os
import re

from .partition import Partition, is_local, local_path, tree_bytes

_MEANING = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the filesystem is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOTDIR: "a part of the path is a file, not a directory",
    errno.EISDIR: "a directory is in the way",
}
_ERRNO = re.compile(r"\[Errno (\d+)\] ([^:\]\[]+?)(?:: '([^']*)')?(?: \[while|$|\n)")


def output_fault(error: BaseException) -> str | None:
    """What went wrong writing, in words with the path and the system's message; None when
    `error` is not an output-side fault."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _MEANING:
            return _say(e.errno, e.strerror or "", e.filename)
        e = e.__cause__ or e.__context__
    match = _ERRNO.search(str(error))
    if match and int(match.group(1)) in _MEANING:
        return _say(int(match.group(1)), match.group(2), match.group(3))
    return None


def _say(code: int, message: str, path: str | None) -> str:
    where = f" writing {path}" if path else ""
    fix = {
        errno.ENOSPC: "free space there or point the output elsewhere",
        errno.EDQUOT: "free space there or point the output elsewhere",
    }.get(code, "make the output's folder writable or point the output elsewhere")
    return f"{_MEANING[code]}{where} ({message.strip()}); {fix}"


def describe_failure(error: BaseException) -> str:
    """The failure of a run, output-side faults in words first."""
    fault = output_fault(error)
    if fault is not None:
        return f"writing the output failed: {fault}"
    if type(error).__name__ in ("RunFailed", "LockLost"):
        return str(error)
    return f"the pipeline failed: {type(error).__name__}: {error}"


def finished_kept(results: Partition) -> str:
    """A note on the finished results a failed run leaves for the next one ("" when none)."""
    kept = tree_bytes(results.finished)
    if not kept:
        return ""
    return (
        f"\nthe finished results ({kept:,} bytes in {results.finished}) are kept: the next run "
        "of this job and date reuses them (`--fresh` ignores them)"
    )


def check_output(partition: Partition, field: str) -> None:
    """Raise ValueError when a local output (the spec's `field`) cannot be a directory this
    process writes: the path, or a folder above it, is a file, or the nearest existing folder
    is not writable."""
    if not is_local(partition.path):
        return
    path = os.path.abspath(local_path(partition.path))
    fix = f"set {field} elsewhere"
    if os.path.lexists(path) and not os.path.isdir(path):
        raise ValueError(
            f"{field} {partition.path!r} is a file, not a directory: a run writes its output "
            f"directory there; move the file away or {fix}"
        )
    existing = os.path.dirname(path)
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(
            f"{field} {partition.path!r}: {existing} is a file, not a directory; move it away "
            f"or {fix}"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(
            f"{field} {partition.path!r}: cannot write in {existing} (permission denied); "
            f"make it writable or {fix}"
        )
