"""The processes of a tensor-parallel engine: started by rank 0 itself, gone when it is gone, and
a dead or hung helper is an error within a bounded time, never a hang."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
import torch.distributed as dist

from flashbeam.model.engine.ranks import RankFailure, RankGroup


def _answer(group, command):
    group.send(command)
    total = torch.tensor([float(command)])  # rank 0's share: (0 + 1) * command
    dist.all_reduce(total)
    return total.item()


def test_helpers_replay_commands_and_stop():
    import dist_entries

    group = RankGroup.start(3, dist_entries.echo, None, timeout_s=30)
    try:
        assert _answer(group, 2) == 2 * (1 + 2 + 3)
        assert _answer(group, 5) == 5 * 6
    finally:
        group.close()
    assert all(not p.is_alive() for p in group.processes)
    assert not dist.is_initialized()


def test_a_helper_that_exits_fails_the_next_call_with_its_rank():
    import dist_entries

    group = RankGroup.start(2, dist_entries.echo, None, timeout_s=30)
    try:
        group.send("exit")
        started = time.monotonic()
        with pytest.raises(RankFailure, match=r"rank 1 \(pid \d+\) exited with code 3"):
            for _ in range(50):
                _answer(group, 1)
                time.sleep(0.1)
        assert time.monotonic() - started < 20
    finally:
        group.close(grace_s=1)
    assert not group.processes[0].is_alive()


def test_a_hung_helper_is_an_error_at_the_timeout():
    import dist_entries

    group = RankGroup.start(2, dist_entries.echo, None, timeout_s=3)
    try:
        group.send("hang")
        started = time.monotonic()
        with pytest.raises(Exception):  # noqa: B017 - gloo's timeout error, wrapped or not
            try:
                _answer(group, 1)
            except Exception as e:
                raise group.guard(e) from e
        assert time.monotonic() - started < 30
    finally:
        group.close(grace_s=1)
    assert not group.processes[0].is_alive()


def test_helpers_exit_when_rank_zero_is_killed(tmp_path):
    """rank 0 killed with SIGKILL (no cleanup at all): its helpers notice and exit."""
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(os.path.join(os.path.dirname(__file__), os.pardir, "support"))!r})
        import dist_entries
        from flashbeam.model.engine.ranks import RankGroup
        group = RankGroup.start(3, dist_entries.report_pid, {str(tmp_path / "pid")!r}, timeout_s=30)
        print("ready", flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        pids = [_read_pid(tmp_path / f"pid.{r}") for r in (1, 2)]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 30  # generous: a loaded machine schedules slowly
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)
    assert not any(_alive(p) for p in pids)


def _read_pid(path, timeout_s: float = 30) -> int:
    """A helper's pid, once it has written it (helpers start their entry after `ready`)."""
    deadline = time.monotonic() + timeout_s
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return int(path.read_text())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie has exited already
        return f.read().split()[2] != "Z"
