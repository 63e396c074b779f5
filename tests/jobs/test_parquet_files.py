"""Reading the job's Parquet files back: whole, by footer, in batches, and exiting cleanly."""

from __future__ import annotations

import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flashbeam.jobs.parquet_files import open_parquet, parquet_rows, read_parquet

from .memfs import BLOBS


def _many_groups(tmp_path):
    path = tmp_path / "many_groups.parquet"
    pq.write_table(pa.table({"n": range(100_000)}), path, row_group_size=5_000)
    return path


def test_a_file_read_whole_by_footer_and_in_batches(tmp_path):
    path = _many_groups(tmp_path)
    for name in (str(path), f"file://{path}"):
        assert read_parquet(name).column("n").to_pylist() == list(range(100_000))
        assert parquet_rows(name) == 100_000
        with open_parquet(name) as parquet:
            first = next(parquet.iter_batches(batch_size=7))
        assert first.column("n").to_pylist() == list(range(7))


def test_a_file_on_an_object_store_is_counted_from_its_footer_and_read_whole(tmp_path):
    path = _many_groups(tmp_path)
    BLOBS.clear()
    BLOBS["memfs://bucket/out/results.parquet"] = path.read_bytes()
    BLOBS["memfs://bucket/out/notes.parquet"] = b"PAR1 these are not the bytes of a table"
    try:
        assert parquet_rows("memfs://bucket/out/results.parquet") == 100_000
        table = read_parquet("memfs://bucket/out/results.parquet")
        assert table.column("n").to_pylist() == list(range(100_000))
        with pytest.raises(ValueError, match="notes.parquet: not a Parquet file"):
            parquet_rows("memfs://bucket/out/notes.parquet")
    finally:
        BLOBS.clear()


def test_reading_leaves_the_process_free_to_exit(tmp_path):
    """`flashbeam eval`, `run` and `show` read the job's files back. Through a Python file
    object, Arrow's threads could still hold its buffers at exit and abort the finished process
    (status 134): a threaded read did so in about half the runs for this file of many row
    groups, and even `use_threads=False` now and then (the footer is read on an I/O thread).
    Each run here is a fresh process, loaded like `flashbeam eval`, that reads in all three
    ways and exits; four at once, all must exit cleanly. (A chance check: against the threaded
    read through a file object, about one run of this test in four fails.)"""
    path = _many_groups(tmp_path)
    script = (
        "import sys\n"
        "import flashbeam.jobs.eval  # what `flashbeam eval` has loaded when it exits\n"
        "from flashbeam.jobs.parquet_files import open_parquet, parquet_rows, read_parquet\n"
        "with open_parquet(sys.argv[1]) as parquet:\n"
        "    next(parquet.iter_batches(batch_size=10))\n"
        "print(parquet_rows(sys.argv[1]), read_parquet(sys.argv[1]).num_rows)\n"
    )
    runs = [
        subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]  # fmt: skip
    for run in runs:
        out, err = run.communicate(timeout=120)
        assert (run.returncode, out.strip()) == (0, "100000 100000"), err[-2000:]
