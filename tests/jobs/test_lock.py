"""One writer per output: a live run's lock refuses a second run and names it; the lock of a run
that died is taken over. Local files (flock) and an object store (heartbeat, `memfs://`)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from flashbeam.jobs.lock import LockHolder, LockLost, OutputBusy, OutputLock

from .memfs import BLOBS


def test_a_second_lock_is_refused_until_the_first_is_released(tmp_path):
    path = str(tmp_path / "out" / ".2026-01-02.lock")
    first = OutputLock(path, "out/2026-01-02", "run-a")
    assert first.acquire() is None
    with pytest.raises(OutputBusy) as busy:
        OutputLock(path, "out/2026-01-02", "run-b").acquire()
    message = str(busy.value)
    assert f"run run-a on {socket.gethostname()} (pid {os.getpid()}, started " in message
    assert message.startswith("out/2026-01-02: ") and "Wait for it to finish" in message
    first.release()
    assert not os.path.exists(path)  # a released lock leaves nothing behind
    second = OutputLock(path, "out/2026-01-02", "run-b")
    assert second.acquire() is None
    second.release()


_HOLDER = """
import fcntl, json, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
holder = {"run_id": "killed", "host": sys.argv[2], "pid": os.getpid(),
          "started_at": "2026-01-02T03:04:05+00:00"}
os.write(fd, json.dumps(holder).encode())
print("locked", flush=True)
time.sleep(120)
"""


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path):
    """A process holds the lock file as a run does, and is killed with SIGKILL."""
    path = str(tmp_path / ".2026-01-02.lock")
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_HOLDER), path, socket.gethostname()],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputBusy, match=f"run killed on .* \\(pid {holder.pid}, started"):
            OutputLock(path, "out", "next").acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lock = OutputLock(path, "out", "next")
    dead = lock.acquire()
    assert dead is not None and (dead.run_id, dead.pid) == ("killed", holder.pid)
    with open(path) as f:
        assert json.load(f)["run_id"] == "next"
    lock.release()


@pytest.fixture
def memfs():
    BLOBS.clear()
    yield "memfs://bucket/out/.2026-01-02.lock"
    BLOBS.clear()


def _remote(path: str, run_id: str, **timing) -> OutputLock:
    timing = {"settle_s": 0.0, "heartbeat_s": 0.05, "stale_after_s": 30.0, **timing}
    return OutputLock(path, "memfs://bucket/out/2026-01-02", run_id, **timing)


def _holder(run_id: str, host: str, pid: int, heartbeat: float) -> bytes:
    fields = {"run_id": run_id, "host": host, "pid": pid,
              "started_at": "2026-01-02T03:04:05+00:00", "heartbeat": heartbeat}  # fmt: skip
    return json.dumps(fields).encode()


def test_object_store_lock_refuses_a_live_run_and_takes_over_stale_ones(memfs):
    first = _remote(memfs, "a")
    assert first.acquire() is None
    with pytest.raises(OutputBusy, match="run a on "):
        _remote(memfs, "b").acquire()
    first.release()
    assert memfs not in BLOBS

    # Another host's run whose heartbeat stopped long ago.
    BLOBS[memfs] = _holder("gone", "elsewhere", 1, time.time() - 3600)
    lock = _remote(memfs, "c")
    assert lock.acquire().run_id == "gone"
    lock.release()

    # Another host's run with a recent heartbeat is alive as far as anyone can tell.
    BLOBS[memfs] = _holder("busy", "elsewhere", 1, time.time())
    with pytest.raises(OutputBusy, match="run busy on elsewhere"):
        _remote(memfs, "d").acquire()

    # A run of this host whose process is gone is dead whatever its heartbeat says.
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)  # fmt: skip
    BLOBS[memfs] = _holder("exited", socket.gethostname(), int(finished.stdout), time.time())
    lock = _remote(memfs, "e")
    assert lock.acquire().run_id == "exited"
    lock.release()


def test_a_run_that_lost_its_lock_learns_it_before_finalizing(memfs):
    lock = _remote(memfs, "slow")
    lock.acquire()
    BLOBS[memfs] = _holder("newer", "elsewhere", 1, time.time())  # took it over
    deadline = time.time() + 10
    while lock.lost_to is None and time.time() < deadline:
        time.sleep(0.05)
    with pytest.raises(LockLost, match=r"run newer on elsewhere \(pid 1, .*took its lock over"):
        lock.check()
    lock.release()
    assert LockHolder.parse(BLOBS[memfs]).run_id == "newer"  # the newer run's lock stays
