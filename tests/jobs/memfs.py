"""An in-memory object store registered with Beam as `memfs://`: no directories, no rename,
like gs:// or s3://, so the partition code's object-store path can be tested locally.

`FULL` holds path fragments under which the store is full: a write there fails as a full disk
does (OSError ENOSPC), so a test can fill the disk where and when it means to."""

from __future__ import annotations

import errno
import io
import time

from apache_beam.io.filesystem import BeamIOError, FileMetadata, FileSystem

BLOBS: dict[str, bytes] = {}
FULL: set[str] = set()


class _Writer(io.BytesIO):
    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def write(self, data) -> int:
        if any(fragment in self.path for fragment in FULL):
            raise OSError(errno.ENOSPC, "No space left on device", self.path)
        return super().write(data)

    def close(self) -> None:
        if not self.closed:
            BLOBS[self.path] = self.getvalue()
        super().close()


class MemoryFileSystem(FileSystem):
    @classmethod
    def scheme(cls):
        return "memfs"

    def join(self, basepath, *paths):
        return "/".join([basepath.rstrip("/"), *(p.strip("/") for p in paths)])

    def split(self, path):
        head, _, tail = path.rpartition("/")
        return head, tail

    def mkdirs(self, path):
        pass

    def has_dirs(self):
        return False

    def _list(self, dir_or_prefix):
        for path in sorted(BLOBS):
            if path.startswith(dir_or_prefix):
                yield FileMetadata(path, len(BLOBS[path]), time.time())

    def create(self, path, mime_type="application/octet-stream", compression_type=None):
        return _Writer(path)

    def open(self, path, mime_type="application/octet-stream", compression_type=None):
        if path not in BLOBS:
            raise BeamIOError("no such object", {path: FileNotFoundError(path)})
        return io.BytesIO(BLOBS[path])

    def copy(self, source_file_names, destination_file_names):
        for src, dst in zip(source_file_names, destination_file_names):
            BLOBS[dst] = BLOBS[src]

    def rename(self, source_file_names, destination_file_names):
        for src, dst in zip(source_file_names, destination_file_names):
            BLOBS[dst] = BLOBS.pop(src)

    def exists(self, path):
        return path in BLOBS

    def size(self, path):
        return len(BLOBS[path])

    def last_updated(self, path):
        return time.time()

    def checksum(self, path):
        return str(len(BLOBS[path]))

    def metadata(self, path):
        return FileMetadata(path, len(BLOBS[path]), time.time())

    def delete(self, paths):
        for path in paths:
            doomed = [p for p in BLOBS if p == path or p.startswith(path.rstrip("/") + "/")]
            if not doomed:
                raise BeamIOError("delete failed", {path: FileNotFoundError(path)})
            for p in doomed:
                del BLOBS[p]
