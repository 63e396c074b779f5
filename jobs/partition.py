"""Output partitions that a re-run replaces whole: write to a staging area, then finalize.

Beside the partition directory `<leaf>`, a run keeps everything unfinished in one staging area,
`.<leaf>.staging/`:

    .<leaf>.staging/run-<run id>/   the files this run writes (Parquet, Beam's temporary files)
    .<leaf>.staging/finished/       results made durable as the job goes (`pipelines.resume`),
                                    which a re-run after a crash reuses

On success the manifest and `_SUCCESS` are written, the run's directory takes the partition's
place and the staging area is removed: only the partition is left. On failure the run's
directory is deleted, the previous partition stays as it was, and `finished/` is kept for the
next run. The next run (holding the output's lock, `jobs.lock`, so no live run owns them)
removes what dead runs left: their `run-*` directories and staging directories of older
versions (`.<leaf>.staging-*`); a partition that a run died in the middle of replacing is put
back first (see `recover`).

- Local paths: the old partition is renamed aside and the run's directory renamed into place
  (two renames on one filesystem), so readers see the old or the new partition, never a mix.
- Other Beam filesystems (gs://, s3://, hdfs://) have no directory rename: `_SUCCESS` of the old
  partition is deleted first, then its files, then the new files are moved in and `_SUCCESS` is
  written last. Readers must wait for `_SUCCESS`, the usual contract on object stores.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from dataclasses import dataclass

from apache_beam.io.filesystems import FileSystems

SUCCESS = "_SUCCESS"
MANIFEST = "manifest.json"
FINISHED = "finished"
_RUN = "run-"
_REPLACED = ".replaced-"
_OLD_STAGING = ".staging-"  # earlier versions: one staging directory per run, beside it


def is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def local_path(path: str) -> str:
    return path[len("file://") :] if path.startswith("file://") else path


@dataclass
class Partition:
    """One output directory of a run, its staging area and this run's directory in it."""

    path: str
    run_id: str

    @classmethod
    def for_path(cls, path: str, run_id: str | None = None) -> Partition:
        path = path.rstrip("/")
        if not path:
            raise ValueError("an output path is empty")
        return cls(path, run_id or uuid.uuid4().hex[:12])

    @property
    def parent(self) -> str:
        return self.path.rsplit("/", 1)[0] if "/" in self.path else "."

    @property
    def leaf(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def area(self) -> str:
        """The staging area: everything of unfinished runs of this partition."""
        return f"{self.parent}/.{self.leaf}.staging"

    @property
    def staging(self) -> str:
        """This run's directory: the files that become the partition."""
        return f"{self.area}/{_RUN}{self.run_id}"

    @property
    def finished(self) -> str:
        """Results made durable as the job goes, kept across failed runs."""
        return f"{self.area}/{FINISHED}"

    @property
    def lock(self) -> str:
        return f"{self.parent}/.{self.leaf}.lock"

    def file(self, name: str, staged: bool = True) -> str:
        return FileSystems.join(self.staging if staged else self.path, name)

    def prepare(self) -> None:
        """Create this run's directory (and the partition's parents)."""
        if is_local(self.path):
            os.makedirs(local_path(self.staging), exist_ok=False)
        else:
            FileSystems.mkdirs(self.staging)

    def staged_files(self) -> list[str]:
        """Names of the files in this run's directory, sorted."""
        if is_local(self.path):
            root = local_path(self.staging)
            return sorted(n for n in os.listdir(root) if os.path.isfile(os.path.join(root, n)))
        found = FileSystems.match([self.staging.rstrip("/") + "/*"])[0].metadata_list
        return sorted(m.path.rsplit("/", 1)[-1] for m in found)

    def write(self, name: str, data: bytes) -> None:
        with FileSystems.create(self.file(name)) as f:
            f.write(data)

    def commit(self, manifest: bytes | None) -> None:
        """Make the staged files the partition; `manifest` and `_SUCCESS` go in last. The
        staging area (finished results included) is removed afterwards."""
        if is_local(self.path):
            self._commit_local(manifest)
        else:
            self._commit_remote(manifest)
        remove_tree(self.area)

    def abort(self) -> None:
        """Delete this run's directory; the partition and the finished results are untouched
        (a staging area left with nothing in it goes too)."""
        remove_tree(self.staging)
        if is_local(self.area):
            for empty in (self.finished, self.area):
                with contextlib.suppress(OSError):
                    os.rmdir(local_path(empty))

    # ---- what earlier runs left ---------------------------------------------------------------

    def recover(self) -> str | None:
        """Put back a partition that a run died in the middle of replacing (renamed aside, the
        new one not yet in place); returns the directory it was restored from."""
        if not is_local(self.path) or os.path.exists(local_path(self.path)):
            return None
        aside = [p for p in self._beside(_REPLACED) if os.path.isdir(local_path(p))]
        if not aside:
            return None
        newest = max(aside, key=lambda p: os.path.getmtime(local_path(p)))
        os.rename(local_path(newest), local_path(self.path))
        return newest

    def dead_runs(self) -> list[str]:
        """What runs that are gone left behind: their run directories in the staging area,
        partitions they renamed aside, and staging directories of older versions."""
        runs = [p for p in _entries(self.area, _RUN) if p != self.staging]
        return runs + self._beside(_REPLACED) + self._beside(_OLD_STAGING)

    def clear_dead_runs(self) -> tuple[int, int]:
        """Remove `dead_runs()`; returns how many directories and bytes. Call it holding the
        output's lock."""
        left = self.dead_runs()
        freed = 0
        for path in left:
            freed += tree_bytes(path)
            remove_tree(path)
        return len(left), freed

    def discard_finished(self) -> int:
        """Forget the results earlier runs made durable (`--fresh`); returns the bytes freed."""
        freed = tree_bytes(self.finished)
        remove_tree(self.finished)
        return freed

    def staging_bytes(self) -> int:
        """Bytes in the staging area and in what dead runs left beside the partition."""
        beside = self._beside(_REPLACED) + self._beside(_OLD_STAGING)
        return tree_bytes(self.area) + sum(tree_bytes(p) for p in beside)

    def _beside(self, marker: str) -> list[str]:
        return _entries(self.parent, f".{self.leaf}{marker}")

    # ---- finalizing ---------------------------------------------------------------------------

    def _commit_local(self, manifest: bytes | None) -> None:
        if manifest is not None:
            self.write(MANIFEST, manifest)
            self.write(SUCCESS, b"")
        target, staging = local_path(self.path), local_path(self.staging)
        aside = f"{local_path(self.parent)}/.{self.leaf}{_REPLACED}{self.run_id}"
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


def remove_tree(path: str) -> None:
    """Delete a directory (local) or every object under a prefix (other filesystems)."""
    if is_local(path):
        shutil.rmtree(local_path(path), ignore_errors=True)
        return
    found = FileSystems.match([path.rstrip("/") + "/**"])[0].metadata_list
    if found:
        FileSystems.delete([m.path for m in found])


def tree_bytes(path: str) -> int:
    """Bytes of the files under a directory (or prefix); 0 when there is none."""
    if is_local(path):
        total = 0
        for root, _, names in os.walk(local_path(path)):
            for name in names:
                with contextlib.suppress(FileNotFoundError):
                    total += os.lstat(os.path.join(root, name)).st_size
        return total
    return sum(m.size_in_bytes for m in _match(path.rstrip("/") + "/**"))


def _entries(parent: str, head: str) -> list[str]:
    """The directories (prefixes, on object stores) directly in `parent` whose names start
    with `head`."""
    if is_local(parent):
        try:
            names = os.listdir(local_path(parent))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [f"{parent}/{name}" for name in sorted(names) if name.startswith(head)]
    found = _match(f"{parent}/{head}*/**")
    return sorted({f"{parent}/" + m.path[len(parent) + 1 :].split("/", 1)[0] for m in found})


def _match(pattern: str) -> list:
    try:
        return FileSystems.match([pattern])[0].metadata_list
    except Exception:  # noqa: BLE001 - Beam raises BeamIOError for a prefix with nothing under it
        return []
