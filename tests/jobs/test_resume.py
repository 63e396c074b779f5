"""Runs killed with SIGKILL, then run again: the re-run reuses every result the killed run made
durable, computes the rest, and ends with the output a clean run gives (no duplicates, no
gaps) and nothing else beside it. A second run aimed at an output a live run is writing is
refused, naming that run.

The killed runs are `flashbeam run` in a child process that kills itself with SIGKILL at a
chosen point (`_CHILD`), so each point is hit exactly, without timing races."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from flashbeam.jobs.partition import Partition
from flashbeam.pipelines.resume import list_finished, read_finished

from .conftest import JOBS, NOT_GROUNDED, TINY_SCHEMA, assert_reconciles, rows_of

_CHILD = """
import os, signal, sys, time
from flashbeam.cli import main
from flashbeam.jobs import run
from flashbeam.jobs.partition import Partition
from flashbeam.pipelines.resume import FinishedWriter

point, args = sys.argv[1], sys.argv[2:]

def die(*_, **__):
    os.kill(os.getpid(), signal.SIGKILL)

if point == "start":  # the outputs are claimed and staged; nothing computed
    run.run_pipeline = die
elif point == "commit":  # everything computed and written to staging, not yet finalized
    Partition.commit = die
else:  # after the first durable results: say so, and wait to be killed from outside
    flush = FinishedWriter.flush
    def flush_then_wait(self):
        flush(self)
        if self.written == int(point):
            print("durable", flush=True)
            time.sleep(600)
    FinishedWriter.flush = flush_then_wait
sys.exit(main(args))
"""
DOCS = [
    {"id": f"doc-{i}", "text": f"Invoice INV-{i} from Vendor {i}, total {12 * i} USD, due soon."}
    for i in range(5)
]
# Usage and latency columns say what computing a row cost: a reused row keeps the figures of
# the run that computed it, so only these may differ from a clean run's rows.
COST_COLUMNS = {"latency_s", "prompt_cache_hit_tokens", "prompt_cache_miss_tokens"}


def _job(checkpoint: str, docs: Path, date: str) -> list[str]:
    return [
        "run", str(JOBS / "extract_invoices.yaml"), "--date", date, "--no-progress",
        "--preview", "0", "--set", f"model.path={checkpoint}", "--set", f"input.path={docs}",
        "--set", TINY_SCHEMA, "--set", NOT_GROUNDED, "--set", "task.max_tokens=8",
        "--set", "task.retry.max_attempts=1",
        # One request per engine batch: each is made durable on its own.
        "--set", "grouping.max_group_requests=1", "--set", "grouping.requests_per_call=1",
    ]  # fmt: skip


def _start(point: str, args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_CHILD), point, *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _rows(partition: Path) -> list[dict]:
    rows = rows_of(partition, "results") + rows_of(partition, "errors")
    return sorted(({k: v for k, v in r.items() if k not in COST_COLUMNS} for r in rows),
                  key=lambda r: r["id"])  # fmt: skip


def _durable(partition: Partition) -> int:
    return sum(1 for path in list_finished(partition.finished) for _ in read_finished(path))


def _assert_resumed(flashbeam, args, partition: Path, clean: list[dict]) -> tuple[dict, str]:
    """Run again in this process; the output equals the clean run's, every result made durable
    before the kill is reused, the rest is computed, and nothing but the partition is left.
    Returns the manifest and what the run said on stderr."""
    durable = _durable(Partition.for_path(str(partition)))
    code, _, err = flashbeam(*args)
    assert code == 0, err
    m = assert_reconciles(partition)  # also: nothing beside the partitions
    assert _rows(partition) == clean
    assert m["counts"]["requests_reused"] == m["counts"]["rows_reused"] == durable
    assert m["counts"]["requests"] == len(DOCS) - durable
    assert "took over the lock of run" in err and "no longer running" in err
    return m, err


def test_runs_killed_at_several_points_resume_to_the_clean_output(flashbeam, checkpoint, tmp_path):
    docs = tmp_path / "in" / "docs.jsonl"
    docs.parent.mkdir()
    docs.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    out = tmp_path / "out" / "extract_invoices"
    code, _, err = flashbeam(*_job(checkpoint, docs, "2026-01-01"))
    assert code == 0, err
    clean = _rows(out / "2026-01-01")
    assert [r["id"] for r in clean] == [d["id"] for d in DOCS]

    # Killed once its outputs were claimed: nothing to reuse, the dead run's lock and staging
    # are taken over and removed.
    args = _job(checkpoint, docs, "2026-01-02")
    child = _start("start", args, tmp_path)
    assert child.wait() == -signal.SIGKILL, child.stderr.read()
    assert (out / ".2026-01-02.lock").exists() and (out / ".2026-01-02.staging").is_dir()
    m, err = _assert_resumed(flashbeam, args, out / "2026-01-02", clean)
    assert m["counts"]["requests_reused"] == 0 and "removed what dead runs left" in err

    # Killed after two results were made durable; while it lives, a second run is refused.
    args = _job(checkpoint, docs, "2026-01-03")
    child = _start("2", args, tmp_path)
    try:
        assert child.stdout.readline().strip() == "durable", child.stderr.read()
        code, _, err = flashbeam(*args)
        assert code == 2 and f"(pid {child.pid}, started " in err
        assert "is writing this output" in err
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    m, err = _assert_resumed(flashbeam, args, out / "2026-01-03", clean)
    assert m["counts"]["requests_reused"] == 2 and "resuming: 2 file(s)" in err

    # Killed with everything computed and staged, before finalizing: nothing is computed again.
    args = _job(checkpoint, docs, "2026-01-04")
    child = _start("commit", args, tmp_path)
    assert child.wait() == -signal.SIGKILL, child.stderr.read()
    staged = Partition.for_path(str(out / "2026-01-04"))
    assert _durable(staged) == len(DOCS) and staged.staging_bytes() > 0
    m, _ = _assert_resumed(flashbeam, args, out / "2026-01-04", clean)
    assert m["counts"]["requests"] == 0
    assert sorted(os.listdir(out)) == ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"]
