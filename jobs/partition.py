"""Output partitions that a re-run replaces whole: write to a staging directory, then finalize.

A run writes into `.<leaf>.staging-<run id>` beside the partition directory. On success the
manifest and `_SUCCESS` are written and the staging directory takes the partition's place; on
failure it is deleted and the previous partition stays as it was.

- Local paths: the old partition is renamed aside and the staging directory renamed into place
  (two renames on one filesystem), so readers see the old or the new partition, never a mix.
- Other Beam filesystems (gs://, s3://, hdfs://) have no directory rename: `_SUCCESS` of the old
  partition is deleted first, then its files, then the new files are moved in and `_SUCCESS` is
  written last. Readers must wait for `_SUCCESS`, the usual contract on object stores.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass

from apache_beam.io.filesystems import FileSystems

SUCCESS = "_SUCCESS"
MANIFEST = "manifest.json"


def is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def local_path(path: str) -> str:
    return path[len("file://") :] if path.startswith("file://") else path


@dataclass
class Partition:
    """One output directory of a run and its staging directory."""

    path: str
    staging: str

    @classmethod
    def for_path(cls, path: str, run_id: str | None = None) -> Partition:
        path = path.rstrip("/")
        if not path:
            raise ValueError("an output path is empty")
        parent, leaf = path.rsplit("/", 1) if "/" in path else (".", path)
        token = run_id or uuid.uuid4().hex[:12]
        return cls(path, f"{parent}/.{leaf}.staging-{token}")

    def file(self, name: str, staged: bool = True) -> str:
        return FileSystems.join(self.staging if staged else self.path, name)

    def prepare(self) -> None:
        """Create the staging directory (and the partition's parents)."""
        if is_local(self.path):
            os.makedirs(local_path(self.staging), exist_ok=False)
        else:
            FileSystems.mkdirs(self.staging)

    def staged_files(self) -> list[str]:
        """Names of the files in the staging directory, sorted."""
        if is_local(self.path):
            root = local_path(self.staging)
            return sorted(n for n in os.listdir(root) if os.path.isfile(os.path.join(root, n)))
        found = FileSystems.match([self.staging.rstrip("/") + "/*"])[0].metadata_list
        return sorted(m.path.rsplit("/", 1)[-1] for m in found)

    def write(self, name: str, data: bytes) -> None:
        with FileSystems.create(self.file(name)) as f:
            f.write(data)

    def commit(self, manifest: bytes | None) -> None:
        """Make the staged files the partition; `manifest` and `_SUCCESS` go in last."""
        if is_local(self.path):
            self._commit_local(manifest)
        else:
            self._commit_remote(manifest)

    def abort(self) -> None:
        """Delete the staging directory; the partition is left untouched."""
        if is_local(self.path):
            shutil.rmtree(local_path(self.staging), ignore_errors=True)
            return
        staged = FileSystems.match([self.staging + "/**"])[0].metadata_list
        if staged:
            FileSystems.delete([m.path for m in staged])

    def _commit_local(self, manifest: bytes | None) -> None:
        if manifest is not None:
            self.write(MANIFEST, manifest)
            self.write(SUCCESS, b"")
        target, staging = local_path(self.path), local_path(self.staging)
        aside = staging.replace(".staging-", ".replaced-")
        replaced = os.path.exists(target)
        if replaced:
            os.rename(target, aside)
        try:
            os.rename(staging, target)
        except OSError:
            if replaced:
                os.rename(aside, target)
            raise
        if replaced:
            shutil.rmtree(aside, ignore_errors=True)

    def _commit_remote(self, manifest: bytes | None) -> None:
        old = FileSystems.match([self.path + "/*"])[0].metadata_list
        old_success = [m.path for m in old if m.path.endswith("/" + SUCCESS)]
        if old_success:
            FileSystems.delete(old_success)
        others = [m.path for m in old if not m.path.endswith("/" + SUCCESS)]
        if others:
            FileSystems.delete(others)
        names = self.staged_files()
        FileSystems.rename([self.file(n) for n in names], [self.file(n, False) for n in names])
        if manifest is not None:
            with FileSystems.create(self.file(MANIFEST, False)) as f:
                f.write(manifest)
            with FileSystems.create(self.file(SUCCESS, False)) as f:
                f.write(b"")
        self.abort()
