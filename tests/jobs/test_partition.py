"""Partitions: a re-run replaces the whole directory; a failed run leaves the old one as it was.
Local directories and an object store (`memfs://`, no directories, no rename)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flashbeam.jobs.partition import MANIFEST, SUCCESS, Partition

from .memfs import BLOBS


def _stage(partition: Partition, files: dict[str, bytes]) -> None:
    partition.prepare()
    for name, data in files.items():
        partition.write(name, data)


def test_local_commit_replaces_and_abort_keeps(tmp_path):
    target = str(tmp_path / "out" / "job" / "2026-01-02")
    first = Partition.for_path(target, "run1")
    assert first.staging == str(tmp_path / "out" / "job" / ".2026-01-02.staging-run1")
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
    assert p.staging == f"{memfs}/.2026-01-02.staging-r1"
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
