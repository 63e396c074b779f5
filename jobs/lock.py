"""One writer per output: a lock beside each output partition, held for the whole run.

    lock = OutputLock(partition.lock, partition.path, run_id)
    dead = lock.acquire()      # OutputBusy names the live run that holds it (host, pid, start)
    ...                        # dead: the holder whose lock was taken over, or None
    lock.release()

The lock file `.<leaf>.lock` says who holds it (run id, host, pid, start time).

- Local paths: the file is held with `flock`, which the kernel drops when the holder exits,
  however it exits (SIGKILL, a lost machine on NFS once its lease ends). A lock that can be
  taken while the file names a holder was left by a dead run: it is taken over at once.
- Object stores (and local filesystems without `flock`) cannot lock: the holder rewrites the
  file every `heartbeat_s` seconds. A lock whose heartbeat is older than `stale_after_s`, or
  whose holder is a process of this host that no longer exists, was left by a dead run. A new
  holder writes the file, waits `settle_s` and reads it back: of two runs that wrote at once,
  only the one whose write stayed goes on. The heartbeat also checks the file: a run whose lock
  was taken over (it stalled longer than `stale_after_s`) learns it and must not finalize.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass

from apache_beam.io.filesystems import FileSystems

from .partition import is_local, local_path

try:
    import fcntl
except ImportError:  # not on POSIX: the heartbeat lock only
    fcntl = None


class OutputBusy(RuntimeError):
    """Another live run holds the output's lock."""

    def __init__(self, output: str, holder: LockHolder | None):
        self.output, self.holder = output, holder
        who = holder.describe() if holder else "another run (it is writing its lock file)"
        super().__init__(
            f"{output}: {who} is writing this output; a second run would overwrite its files. "
            "Wait for it to finish or stop it (the lock of a run that died is taken over by "
            "the next run)"
        )


class LockLost(RuntimeError):
    """The lock was taken over by another run while this one held it."""


@dataclass(frozen=True)
class LockHolder:
    run_id: str
    host: str
    pid: int
    started_at: str  # ISO 8601, UTC
    process_start: int | None = None  # the pid's start time since boot, against pid reuse
    heartbeat: float | None = None  # epoch seconds of the last heartbeat (heartbeat locks)

    def describe(self) -> str:
        return f"run {self.run_id} on {self.host} (pid {self.pid}, started {self.started_at})"

    def alive_here(self) -> bool | None:
        """Whether the holder's process is running, when it ran on this host; None otherwise."""
        if self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # another user's process: it exists
        started = process_start(self.pid)
        if started is not None and self.process_start is not None:
            return started == self.process_start
        return True

    @classmethod
    def parse(cls, data: bytes) -> LockHolder | None:
        try:
            fields = json.loads(data.decode("utf-8"))
            return cls(**fields)
        except (ValueError, TypeError, UnicodeDecodeError):
            return None


def process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count from its end.
    return int(stat[stat.rindex(b")") + 2 :].split()[19])


class OutputLock:
    def __init__(
        self,
        path: str,
        output: str,
        run_id: str,
        heartbeat_s: float = 30.0,
        stale_after_s: float = 300.0,
        settle_s: float = 1.0,
    ):
        self.path, self.output, self.run_id = path, output, run_id
        self.heartbeat_s, self.stale_after_s, self.settle_s = heartbeat_s, stale_after_s, settle_s
        self.holder = LockHolder(
            run_id=run_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            process_start=process_start(os.getpid()),
        )
        self._fd: int | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self.lost_to: LockHolder | None = None

    def acquire(self) -> LockHolder | None:
        """Take the lock; returns the dead run whose lock was taken over, if any. Raises
        OutputBusy, or OSError when the lock file cannot be written."""
        if is_local(self.path) and fcntl is not None:
            os.makedirs(os.path.dirname(os.path.abspath(local_path(self.path))), exist_ok=True)
            try:
                return self._acquire_flock()
            except OSError as e:
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                    raise
        return self._acquire_heartbeat()

    def release(self) -> None:
        """Remove the lock file and let go (removed first, so no one takes a lock on it)."""
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(local_path(self.path))
            os.close(self._fd)
            self._fd = None
            return
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
            self._beat = None
            if self.lost_to is None and FileSystems.exists(self.path):
                FileSystems.delete([self.path])

    def check(self) -> None:
        """Raise LockLost if another run took the lock over."""
        if self.lost_to is not None:
            raise LockLost(
                f"{self.output}: this run stalled and {self.lost_to.describe()} took its lock "
                "over; this run's results were not finalized"
            )

    # ---- flock ----------------------------------------------------------------------------

    def _acquire_flock(self) -> LockHolder | None:
        path = local_path(self.path)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = LockHolder.parse(_read_fd(fd))
                os.close(fd)
                raise OutputBusy(self.output, holder) from None
            except OSError:
                os.close(fd)
                raise
            # A holder that was releasing unlinked the file we opened: lock the new one.
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            dead = LockHolder.parse(_read_fd(fd))
            data = _holder_bytes(self.holder)
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
            os.fsync(fd)
            self._fd = fd
            return dead

    # ---- heartbeat ------------------------------------------------------------------------

    def _acquire_heartbeat(self) -> LockHolder | None:
        current = self._read()
        if current is not None and not self._stale(current):
            raise OutputBusy(self.output, current)
        self._write()
        time.sleep(self.settle_s)
        back = self._read()
        if back is None or back.run_id != self.run_id:
            raise OutputBusy(self.output, back)
        self._beat = threading.Thread(target=self._heartbeats, name="flashbeam-lock", daemon=True)
        self._beat.start()
        return current

    def _stale(self, holder: LockHolder) -> bool:
        alive = holder.alive_here()
        if alive is not None:
            return not alive
        return holder.heartbeat is None or time.time() - holder.heartbeat > self.stale_after_s

    def _heartbeats(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            current = self._read()
            if current is not None and current.run_id != self.run_id:
                self.lost_to = current
                return
            self._write()

    def _read(self) -> LockHolder | None:
        try:
            with FileSystems.open(self.path) as f:
                return LockHolder.parse(f.read())
        except Exception:  # noqa: BLE001 - Beam raises BeamIOError (or its own) for a missing file
            return None

    def _write(self) -> None:
        holder = LockHolder(**{**asdict(self.holder), "heartbeat": time.time()})
        with FileSystems.create(self.path) as f:
            f.write(_holder_bytes(holder))


def _holder_bytes(holder: LockHolder) -> bytes:
    return (json.dumps(asdict(holder)) + "\n").encode("utf-8")


def _read_fd(fd: int) -> bytes:
    return os.pread(fd, 1 << 16, 0)
