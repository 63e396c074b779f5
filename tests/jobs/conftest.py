"""Shared fixtures: a random-weight tiny checkpoint, small copies of the example jobs' inputs,
a helper that runs the `flashbeam` command in this process, and checks of an output partition."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from flashbeam.cli import main
from flashbeam.model.checkpoint.random_init import write_random_checkpoint
from flashbeam.model.network.config import tiny_config

REPO = Path(__file__).resolve().parents[2]
JOBS = REPO / "jobs"
DATA = JOBS / "data"
TINY_SCHEMA = (
    'task.schema={"type": "object", "properties": {"ok": {"type": "boolean"}}, '
    '"required": ["ok"], "additionalProperties": false}'
)
# The example jobs ground fields of their own schemas, which the tiny one lacks.
NOT_GROUNDED = "task.grounded=[]"


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> str:
    config = tiny_config(
        "tiny", max_position_embeddings=4096, original_max_position_embeddings=1024
    )
    return str(write_random_checkpoint(tmp_path_factory.mktemp("tiny-ckpt"), config, seed=0))


def sample_rows(name: str, n: int) -> list[dict]:
    with open(DATA / name, encoding="utf-8") as f:
        return [json.loads(line) for line in f][:n]


def write_jsonl(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


@pytest.fixture
def docs(tmp_path) -> Path:
    """Two short business documents (and their gold beside them)."""
    rows = [{**r, "text": r["text"][:300]} for r in sample_rows("business_docs.jsonl", 2)]
    write_jsonl(tmp_path / "in" / "docs.gold.jsonl", sample_rows("business_docs.gold.jsonl", 2))
    return write_jsonl(tmp_path / "in" / "docs.jsonl", rows)


@pytest.fixture
def flashbeam(capsys, monkeypatch, tmp_path):
    """Run `flashbeam ARGS` in this process from `tmp_path`; returns (exit code, stdout, stderr)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "160")

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def manifest_of(partition: Path) -> dict:
    return json.loads((partition / "manifest.json").read_text())


def rows_of(partition: Path, table: str) -> list[dict]:
    rows = []
    for path in sorted(partition.glob(f"{table}-*.parquet")):
        rows.extend(pq.read_table(path).to_pylist())
    return rows


def assert_reconciles(partition: Path) -> dict:
    """The manifest's counts equal the rows in the files, and every item is in one of them."""
    m = manifest_of(partition)
    results, errors = rows_of(partition, "results"), rows_of(partition, "errors")
    assert m["reconciled"] is True
    assert (m["counts"]["results"], m["counts"]["errors"]) == (len(results), len(errors))
    assert m["counts"]["items_in"] == len(results) + len(errors)
    listed = {f["name"]: f["rows"] for f in m["files"]}
    assert listed == {p.name: pq.ParquetFile(p).metadata.num_rows
                      for p in partition.glob("*.parquet")}  # fmt: skip
    assert (partition / "_SUCCESS").exists()
    assert not [p for p in partition.parent.iterdir() if p.name.startswith(".")]  # no staging
    return m
