"""Parquet output as a fixed set of shard files, written the same way on every runner.

    shard = shard_of(row_id, shards)                  # stable across processes and runs
    rows_written = write_shard(prefix, shard, shards, schema, rows, output)

Each row goes to shard `crc32(id) % shards`; one task writes each shard, rows sorted, to
`<prefix>-SSSSS-of-NNNNN.parquet`. A retried task (its worker died) writes the same file again
with the same rows, so a record is never lost or written twice, and no temporary directory or
side input is needed: Beam's WriteToParquet needs both, and Beam's Dask runner evaluates a side
input by recomputing everything upstream of it (the engine included).
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from .config import OutputConfig

SUFFIX = ".parquet"


def shard_count(output: OutputConfig) -> int:
    """`output.num_shards`, where 0 means one file per table."""
    return output.num_shards or 1


def shard_of(row_id: str, shards: int) -> int:
    """The shard of a row: every row of one id (all its questions) in the same file."""
    return zlib.crc32(row_id.encode("utf-8")) % shards


def shard_path(prefix: str, shard: int, shards: int) -> str:
    return f"{prefix}-{shard:05d}-of-{shards:05d}{SUFFIX}"


def row_order(id_column: str, question_column: str | None):
    """The sort key of a shard's rows: id, question, then the whole row (ids may repeat)."""

    def key(row: dict[str, Any]) -> tuple[str, int, str]:
        question = row.get(question_column) if question_column else None
        whole = json.dumps(row, sort_keys=True, default=str)
        return str(row[id_column]), -1 if question is None else question, whole

    return key


def write_shard(
    prefix: str,
    shard: int,
    shards: int,
    schema: pa.Schema,
    rows: list[dict[str, Any]],
    output: OutputConfig,
) -> tuple[str, int]:
    """Write `rows` (already in order) as one Parquet file; returns its path and row count.
    A record batch holds `output.record_batch_rows` rows; a row group closes once its batches
    reach `output.row_group_bytes`. An empty shard is still written (a file with no rows)."""
    path = shard_path(prefix, shard, shards)
    codec = None if output.codec == "none" else output.codec
    step = output.record_batch_rows
    with _opened(path) as sink, pq.ParquetWriter(sink, schema, compression=codec) as writer:
        group: list[pa.RecordBatch] = []
        for start in range(0, len(rows), step):
            group.append(pa.RecordBatch.from_pylist(rows[start : start + step], schema=schema))
            if sum(batch.nbytes for batch in group) >= output.row_group_bytes:
                _write_row_group(writer, group, schema)
                group = []
        if group:
            _write_row_group(writer, group, schema)
    return path, len(rows)


def _write_row_group(writer: pq.ParquetWriter, batches: list[pa.RecordBatch], schema) -> None:
    table = pa.Table.from_batches(batches, schema=schema)
    writer.write_table(table, row_group_size=table.num_rows)


@contextmanager
def _opened(path: str) -> Iterator[Any]:
    """A local path for Arrow to open itself (see flashbeam.jobs.parquet_files), else a file
    object of Beam's filesystem for it."""
    if "://" not in path or path.startswith("file://"):
        local = path.removeprefix("file://")
        os.makedirs(os.path.dirname(os.path.abspath(local)), exist_ok=True)
        yield local
    else:
        with FileSystems.create(path) as f:
            yield f
