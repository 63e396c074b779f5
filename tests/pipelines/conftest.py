"""Shared fixtures: one random-weight tiny checkpoint per session, helpers to write inputs and
read the Parquet outputs back."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from flashbeam.model.checkpoint.random_init import write_random_checkpoint
from flashbeam.model.network.config import tiny_config
from flashbeam.pipelines.config import EngineConfig

# A short context makes "prompt longer than the context" cheap to provoke.
CONTEXT = 2048
TINY_SCHEMA = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}},
    "required": ["ok"],
    "additionalProperties": False,
}


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> str:
    config = tiny_config(
        "tiny", max_position_embeddings=CONTEXT, original_max_position_embeddings=1024
    )
    return str(write_random_checkpoint(tmp_path_factory.mktemp("tiny-ckpt"), config, seed=0))


@pytest.fixture(scope="session")
def engine_config(checkpoint) -> EngineConfig:
    return EngineConfig(model=checkpoint, max_batch_tokens=1024, torch_threads=1)


@pytest.fixture(scope="session")
def tiny_schema() -> dict:
    return dict(TINY_SCHEMA)


@pytest.fixture(scope="session")
def tokenizer(checkpoint):
    from flashbeam.pipelines.sharding import tokenizer_for

    return tokenizer_for(checkpoint)


@pytest.fixture(scope="session")
def jsonl():
    return write_jsonl


@pytest.fixture(scope="session")
def parquet_rows():
    return read_rows


def write_jsonl(path: Path, rows: list) -> Path:
    """Rows are dicts (written as JSON) or raw strings/bytes (written as they are)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for row in rows:
            if isinstance(row, dict):
                row = json.dumps(row)
            f.write(row if isinstance(row, bytes) else row.encode("utf-8"))
            f.write(b"\n")
    return path


def read_rows(prefix: str) -> list[dict]:
    """All rows of the Parquet shards `<prefix>-*.parquet`."""
    rows = []
    for path in sorted(glob.glob(f"{prefix}-*.parquet")):
        rows.extend(pq.read_table(path).to_pylist())
    return rows
