"""Partitions: a re-run replaces the whole directory; a failed run leaves the old one as it was;
what dead runs left is put back or removed. Local directories and an object store (`memfs://`,
no directories, no rename)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flashbeam.jobs.partition import FINISHED, MANIFEST, SUCCESS, Partition

from .memfs import BLOBS


def _stage(partition: Partition, files: dict[str, bytes]) -> None:
    partition.prepare()
    for name, data in files.items():
        partition.write(name, data)


def test_local_commit_replaces_and_abort_keeps(tmp_path):
    target = str(tmp_path / "out" / "job" / "2026-01-02")
    first = Partition.for_path(target, "run1")
    assert first.staging == str(tmp_path / "out" / "job" / ".2026-01-02.staging" / "run-run1")
    _stage(first, {"results-00000-of-00002.parquet": b"a", "results-00001-of-00002.parquet": b"b"})
    assert not os.path.exists(target)  # nothing visible before the commit
    first.commit(b"{}")
    assert sorted(os.listdir(target)) == sorted(
        [SUCCESS, MANIFEST, "results-00000-of-00002.parquet", "results-00001-of-00002.parquet"]
    )
    second = Partition.for_path(target, "run2")
    _stage(second, {"results-00000-of-00001.parquet": b"c"})
    second.commit(b'{"run": 2}')
    assert sorted(os.listdir(target)) == [SUCCESS, MANIFEST, "results-00000-of-00001.parquet"]
    assert (Path(target) / MANIFEST).read_text() == '{"run": 2}'

    failed = Partition.for_path(target, "run3")
    _stage(failed, {"results-00000-of-00001.parquet": b"half"})
    failed.abort()
    assert sorted(os.listdir(target)) == [SUCCESS, MANIFEST, "results-00000-of-00001.parquet"]
    assert (Path(target) / "results-00000-of-00001.parquet").read_bytes() == b"c"
    assert sorted(os.listdir(tmp_path / "out" / "job")) == ["2026-01-02"]  # no leftovers


def test_commit_without_manifest_is_for_an_errors_directory(tmp_path):
    p = Partition.for_path(str(tmp_path / "errs"), "r")
    _stage(p, {"errors-00000-of-00001.parquet": b"e"})
    p.commit(None)
    assert os.listdir(tmp_path / "errs") == ["errors-00000-of-00001.parquet"]


@pytest.fixture
def memfs():
    BLOBS.clear()
    yield "memfs://bucket/out"
    BLOBS.clear()


def test_object_store_commit_replaces_and_writes_success_last(memfs):
    target = f"{memfs}/2026-01-02"
    BLOBS.update({f"{target}/results-old.parquet": b"old", f"{target}/{SUCCESS}": b""})
    p = Partition.for_path(target, "r1")
    assert p.staging == f"{memfs}/.2026-01-02.staging/run-r1"
    _stage(p, {"results-00000-of-00001.parquet": b"new", "errors-00000-of-00001.parquet": b""})
    assert p.staged_files() == ["errors-00000-of-00001.parquet", "results-00000-of-00001.parquet"]
    p.commit(b"{}")
    assert sorted(BLOBS) == sorted(
        f"{target}/{n}"
        for n in [
            SUCCESS,
            MANIFEST,
            "errors-00000-of-00001.parquet",
            "results-00000-of-00001.parquet",
        ]
    )
    assert list(BLOBS)[-1] == f"{target}/{SUCCESS}"  # written after everything else


def test_object_store_abort_keeps_the_partition(memfs):
    target = f"{memfs}/2026-01-02"
    BLOBS.update({f"{target}/results-a.parquet": b"a", f"{target}/{SUCCESS}": b""})
    p = Partition.for_path(target, "r2")
    _stage(p, {"results-00000-of-00001.parquet": b"half"})
    p.abort()
    assert sorted(BLOBS) == [f"{target}/{SUCCESS}", f"{target}/results-a.parquet"]


def test_dead_runs_are_cleared_and_finished_results_kept_until_success(tmp_path):
    root = tmp_path / "out"
    target = str(root / "2026-01-02")
    dead = Partition.for_path(target, "dead")
    _stage(dead, {"results-00000-of-00001.parquet": b"x" * 10})
    os.makedirs(dead.finished)
    Path(dead.finished, "dead-w-000001.jsonl").write_bytes(b"{}\n")
    (root / ".2026-01-02.staging-old").mkdir()  # an older version's staging directory
    (root / ".2026-01-02.staging-old" / "beam-temp-x").write_bytes(b"y" * 5)

    run = Partition.for_path(target, "next")
    assert [p.rsplit("/", 1)[-1] for p in run.dead_runs()] == [
        "run-dead",
        ".2026-01-02.staging-old",
    ]
    assert run.staging_bytes() == 18
    assert run.clear_dead_runs() == (2, 15)
    assert os.listdir(run.area) == [FINISHED]  # the finished results stay for this run
    _stage(run, {"results-00000-of-00001.parquet": b"new"})
    run.abort()  # a failure keeps them for the next one
    assert os.listdir(run.finished) == ["dead-w-000001.jsonl"]
    last = Partition.for_path(target, "last")
    _stage(last, {"results-00000-of-00001.parquet": b"new"})
    last.commit(b"{}")
    assert sorted(os.listdir(root)) == ["2026-01-02"]  # success: nothing but the partition


def test_a_partition_renamed_aside_by_a_dead_run_is_put_back(tmp_path):
    target = tmp_path / "2026-01-02"
    aside = tmp_path / ".2026-01-02.replaced-dead"
    aside.mkdir()
    (aside / SUCCESS).write_bytes(b"")
    run = Partition.for_path(str(target), "next")
    assert run.recover() == str(aside)
    assert os.listdir(target) == [SUCCESS] and not aside.exists()
    assert run.recover() is None  # the partition is there: nothing to put back


def test_an_empty_staging_area_goes_with_a_failed_run(tmp_path):
    run = Partition.for_path(str(tmp_path / "errs"), "r")
    _stage(run, {"errors-00000-of-00001.parquet": b"e"})
    run.abort()
    assert os.listdir(tmp_path) == []


def test_object_store_dead_runs_and_finished_results(memfs):
    target = f"{memfs}/2026-01-02"
    BLOBS.update({
        f"{memfs}/.2026-01-02.staging/run-dead/results-00000-of-00001.parquet": b"half",
        f"{memfs}/.2026-01-02.staging/finished/dead-w-000001.jsonl": b"{}",
        f"{memfs}/2026-01-03/{SUCCESS}": b"",  # another date: not this partition's
    })  # fmt: skip
    run = Partition.for_path(target, "next")
    assert run.dead_runs() == [f"{memfs}/.2026-01-02.staging/run-dead"]
    assert run.clear_dead_runs() == (1, 4)
    _stage(run, {"results-00000-of-00001.parquet": b"new"})
    run.commit(b"{}")
    assert sorted(BLOBS) == sorted(
        [f"{memfs}/2026-01-03/{SUCCESS}"]
        + [f"{target}/{n}" for n in (SUCCESS, MANIFEST, "results-00000-of-00001.parquet")]
    )
