"""Reading the job's Parquet files (results, errors) on any Beam filesystem, safely at exit.

Arrow's I/O and CPU threads can still hold buffers of a Python file object after a read has
returned. If the interpreter exits first, the thread dies taking the GIL and the finished
process aborts ("terminate called without an active exception", status 134;
apache/arrow#50482). So a local file is opened by Arrow itself, never through a Python file
object; a file on another filesystem (gs://, s3://, hdfs://) goes through Beam's file objects,
and a whole-file read copies it into Arrow's memory first.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from .partition import is_local, local_path


@contextmanager
def open_parquet(path: str) -> Iterator[pq.ParquetFile]:
    """A Parquet file, closed on leaving the `with` block."""
    if is_local(path):
        with pq.ParquetFile(local_path(path)) as parquet:
            yield parquet
    else:
        with FileSystems.open(path) as f, pq.ParquetFile(f) as parquet:
            yield parquet


def parquet_rows(path: str) -> int:
    """Rows of a Parquet file, from its footer."""
    with open_parquet(path) as parquet:
        return parquet.metadata.num_rows


def read_parquet(path: str) -> pa.Table:
    """A Parquet file, whole."""
    if is_local(path):
        with open_parquet(path) as parquet:
            return parquet.read()
    with FileSystems.open(path) as f:
        data = pa.BufferOutputStream()
        data.write(f.read())
    return pq.read_table(pa.BufferReader(data.getvalue()))
