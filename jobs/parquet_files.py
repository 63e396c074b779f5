"""Reading the job's Parquet files (results, errors) on any Beam filesystem, safely at exit.

Arrow's I/O and CPU threads can still hold buffers of a Python file object after a read has
returned. If the interpreter exits first, the thread dies taking the GIL and the finished
process aborts ("terminate called without an active exception", status 134;
apache/arrow#50482). So a local file is opened by Arrow itself, never through a Python file
object. On another filesystem (gs://, s3://, hdfs://) the bytes are read through Beam's file
objects and copied into Arrow's memory before Arrow sees them: the whole file for a whole-file
read, the footer alone for a row count. (`open_parquet` on such a file hands Arrow Beam's file
object and keeps the risk; `flashbeam show` uses it.)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from .partition import is_local, local_path

_MAGIC = b"PAR1"  # opens and closes every Parquet file


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
    if is_local(path):
        with open_parquet(path) as parquet:
            return parquet.metadata.num_rows
    return pq.read_metadata(pa.BufferReader(_remote_footer(path))).num_rows


def _remote_footer(path: str) -> pa.Buffer:
    """The file's footer (metadata, its length, the closing magic) behind an opening magic, in
    Arrow's memory: all that reading its metadata needs."""
    size = FileSystems.match([path])[0].metadata_list[0].size_in_bytes
    with FileSystems.open(path) as f:
        f.seek(max(0, size - 8))
        tail = f.read(8)
        length = int.from_bytes(tail[:4], "little")
        if size < 12 or tail[4:] != _MAGIC or length > size - 12:
            raise ValueError(f"{path}: not a Parquet file (no footer at its end)")
        f.seek(size - 8 - length)
        footer = f.read(length)
    data = pa.BufferOutputStream()
    data.write(_MAGIC + footer + tail)
    return data.getvalue()


def read_parquet(path: str) -> pa.Table:
    """A Parquet file, whole."""
    if is_local(path):
        with open_parquet(path) as parquet:
            return parquet.read()
    with FileSystems.open(path) as f:
        data = pa.BufferOutputStream()
        data.write(f.read())
    return pq.read_table(pa.BufferReader(data.getvalue()))
