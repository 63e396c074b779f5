"""Faults on the output side: an output path that is a file, a folder that cannot be written, a
disk that fills up while the output is written. Each ends with a clear error, the previous
output untouched and no staging left; results already made durable are kept for the next
run (which reuses them), unless it runs with --fresh.

Faults in the engine (out of memory, a deadline) end as rows of a job that completes."""

from __future__ import annotations

import os
import stat
import time

import pytest
import torch

from flashbeam.jobs.partition import MANIFEST, SUCCESS
from flashbeam.model.network.transformer import Transformer

from .conftest import JOBS, NOT_GROUNDED, TINY_SCHEMA, assert_reconciles, rows_of, write_jsonl
from .memfs import BLOBS, FULL


def _job(checkpoint, docs, output: str) -> list[str]:
    return [
        "run", str(JOBS / "extract_invoices.yaml"), "--date", "2026-01-02", "--no-progress",
        "--preview", "0", "--set", f"model.path={checkpoint}", "--set", f"input.path={docs}",
        "--set", TINY_SCHEMA, "--set", NOT_GROUNDED, "--set", "task.max_tokens=8",
        "--set", f"output.path={output}",
    ]  # fmt: skip


def test_an_output_path_that_is_a_file_is_refused(flashbeam, checkpoint, docs, tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("not a directory")
    code, _, err = flashbeam(*_job(checkpoint, docs, str(taken)))
    assert code == 2 and "output.path" in err and "is a file, not a directory" in err
    code, _, err = flashbeam(*_job(checkpoint, docs, str(taken / "2026-01-02")))
    assert code == 2 and f"{taken} is a file, not a directory" in err
    assert taken.read_text() == "not a directory"
    assert sorted(os.listdir(tmp_path)) == ["in", "taken"]


@pytest.fixture
def read_only(monkeypatch):
    """Make a folder read-only; where the tests run as root (whom modes do not stop), the
    process is told what a user would be."""

    def make(path):
        path.chmod(stat.S_IRUSR | stat.S_IXUSR)
        if os.geteuid() == 0:
            real = os.access

            def access(p, mode, **kw):
                inside = os.path.abspath(p) == str(path) or str(p).startswith(f"{path}/")
                return real(p, mode, **kw) and not (inside and mode & os.W_OK)

            monkeypatch.setattr(os, "access", access)
        return path

    yield make


def test_an_output_folder_that_cannot_be_written_is_refused(
    flashbeam, checkpoint, docs, tmp_path, read_only
):
    folder = tmp_path / "outputs"
    previous = folder / "2026-01-02"
    previous.mkdir(parents=True)
    (previous / SUCCESS).write_bytes(b"")
    read_only(folder)
    try:
        code, _, err = flashbeam(*_job(checkpoint, docs, str(previous)))
    finally:
        folder.chmod(0o755)
    assert code == 2 and f"cannot write in {folder} (permission denied)" in err
    assert "make it writable or set output.path elsewhere" in err
    assert os.listdir(folder) == ["2026-01-02"] and os.listdir(previous) == [SUCCESS]


@pytest.fixture
def store():
    BLOBS.clear()
    FULL.clear()
    yield "memfs://bucket/out/2026-01-02"
    BLOBS.clear()
    FULL.clear()


def test_a_disk_that_fills_up_while_writing_the_output(flashbeam, checkpoint, docs, store):
    previous = {f"{store}/results-00000-of-00001.parquet": b"old", f"{store}/{SUCCESS}": b""}
    BLOBS.update(previous)
    job = _job(checkpoint, docs, store)
    FULL.add("/run-")  # the disk fills up once the run writes its output files
    code, _, err = flashbeam(*job)
    assert code == 1, err
    assert "the disk is full writing memfs://bucket/out/.2026-01-02.staging/run-" in err
    assert "No space left on device" in err and "free space there" in err
    assert "the finished results" in err and "are kept" in err
    assert {k: v for k, v in BLOBS.items() if k.startswith(store + "/")} == previous
    left = sorted(BLOBS)
    assert not [k for k in left if "/run-" in k or k.endswith(".lock")]  # staging, lock: gone
    assert [k for k in left if "/finished/" in k]

    FULL.clear()  # space again: the next run reuses what the failed one computed
    code, out, err = flashbeam(*job)
    assert code == 0, err
    assert "resuming: " in err and "2 rows (2 requests) from the finished results" in out
    assert sorted(BLOBS) == sorted(
        f"{store}/{n}" for n in (SUCCESS, MANIFEST, "results-00000-of-00001.parquet",
                                 "errors-00000-of-00001.parquet")
    )  # fmt: skip

    FULL.add("/run-")
    assert flashbeam(*job)[0] == 1
    FULL.clear()
    code, out, err = flashbeam(*job, "--fresh")
    assert code == 0 and "--fresh: discarded" in err and "from the finished results" not in out


SHORT = [{"id": f"s{i}", "text": f"Invoice {i} from Acme, total {9 * i} EUR."} for i in range(3)]
SLOW = {"id": "slow", "text": " ".join(f"Item {i} costs {i} EUR." for i in range(20))}
HUGE = {"id": "huge", "text": " ".join(f"Line {i}: item {i} costs {i} EUR." for i in range(60))}
# Prefill lengths with the job's instruction: the short documents' about 220 tokens, the slow
# one's about 530, the huge one's about 1,560.
SLOW_TOKENS, HUGE_TOKENS = 400, 1000


@pytest.mark.slow
def test_engine_faults_end_as_rows_and_the_job_reconciles(
    flashbeam, checkpoint, tmp_path, monkeypatch
):
    """One run meets all three: the first short document's prefill runs out of memory (that
    batch is split and retried on a fresh engine), the huge document runs out of memory even
    alone (an error row with its sizes), the slow one passes task.timeout_s (an error row).
    The job completes with error rows (exit 3) and its manifest reconciles."""
    docs = write_jsonl(tmp_path / "in" / "docs.jsonl", [*SHORT, SLOW, HUGE])
    forward_step = Transformer.forward_step
    short_prefills = []

    def faulty(self, input_ids, *args, **kwargs):
        tokens = input_ids.shape[1]
        if 1 < tokens < SLOW_TOKENS:
            short_prefills.append(tokens)
        if len(short_prefills) == 1 and 1 < tokens < SLOW_TOKENS or tokens >= HUGE_TOKENS:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        if tokens >= SLOW_TOKENS:
            time.sleep(4.0)
        return forward_step(self, input_ids, *args, **kwargs)

    monkeypatch.setattr(Transformer, "forward_step", faulty)
    job = _job(checkpoint, docs, str(tmp_path / "out" / "{date}"))
    # One request per engine call, so the slow document's deadline holds no other one up.
    job += ["--set", "grouping.max_group_requests=1", "--set", "grouping.requests_per_call=1",
            "--set", "task.timeout_s=2"]  # fmt: skip
    code, out, err = flashbeam(*job)
    assert code == 3, err
    partition = tmp_path / "out" / "2026-01-02"
    m = assert_reconciles(partition)
    assert sorted(r["id"] for r in rows_of(partition, "results")) == ["s0", "s1", "s2"]
    errors = {r["id"]: r for r in rows_of(partition, "errors")}
    assert sorted(errors) == ["huge", "slow"]
    assert all(r["stage"] == "engine" for r in errors.values())
    assert "runs out of memory even alone: its prompt is 1," in errors["huge"]["reason"]
    assert "it may generate 8 tokens" in errors["huge"]["reason"]
    assert "timed out" in errors["slow"]["reason"]
    assert "task.timeout_s = 2 s" in errors["slow"]["reason"]
    counts = m["counts"]
    assert counts["oom_splits"] == 2 and counts["engine_errors"] == 2  # the short one, the huge
    assert (counts["results"], counts["errors"]) == (3, 2)
    assert "batches split after running out of memory" in out
