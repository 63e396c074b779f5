"""`flashbeam show`: the rows of a results (or errors) Parquet file as a terminal table.

PATH is a Parquet file, a glob, or a partition directory (its `results-*.parquet`, or with
`errors=True` its `errors-*.parquet`). Results tables show the id and the output's fields; the
metadata columns (usage, latency, source ...) appear with `all_columns=True`.

This module imports neither torch nor the pipelines, so `flashbeam show` starts in a second;
`METADATA_COLUMNS` mirrors `pipelines.writers` (a test keeps them equal).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from rich.console import Group
from rich.table import Table
from rich.text import Text

from .parquet_files import open_parquet

METADATA_COLUMNS = frozenset(
    {
        "question_index", "chunk_count", "parts_failed", "valid", "attempts", "constraint",
        "finish_reason",
        "prompt_tokens", "prompt_cache_hit_tokens", "prompt_cache_miss_tokens",
        "completion_tokens", "model", "latency_s", "reasoning_content", "source", "line",
    }
)  # fmt: skip
ERROR_COLUMNS = ("id", "question_index", "stage", "reason", "line")


class ShowError(ValueError):
    """Nothing to show at the given path."""


@dataclass
class Rows:
    files: list[str]
    schema: pa.Schema
    rows: list[dict[str, Any]]  # the first `limit` rows
    total: int


def find_files(path: str, errors: bool = False) -> list[str]:
    """The Parquet files to show: the file or glob given, or a directory's table files (with
    `errors`, the errors files beside a results file)."""
    table = "errors" if errors else "results"
    if any(c in path for c in "*?["):
        pattern = path
    elif not path.endswith(".parquet"):
        pattern = FileSystems.join(path.rstrip("/"), f"{table}-*.parquet")
    elif errors and not path.rsplit("/", 1)[-1].startswith("errors-"):
        pattern = FileSystems.join(
            path.rsplit("/", 1)[0] if "/" in path else ".", "errors-*.parquet"
        )
    else:
        pattern = path
    files = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    if not files:
        raise ShowError(
            f"{path}: no {table} Parquet files there; give a .parquet file or an output "
            "directory (the job's output.path for a date)"
        )
    return files


def read_rows(files: list[str], limit: int) -> Rows:
    rows: list[dict[str, Any]] = []
    total = 0
    schema = None
    for path in files:
        with open_parquet(path) as parquet:
            schema = schema or parquet.schema_arrow
            total += parquet.metadata.num_rows
            if len(rows) < limit:
                for batch in parquet.iter_batches(batch_size=max(limit, 1)):
                    rows.extend(batch.to_pylist()[: limit - len(rows)])
                    if len(rows) >= limit:
                        break
    return Rows(files, schema, rows, total)


def columns_for(schema: pa.Schema, errors: bool, all_columns: bool) -> list[str]:
    if all_columns:
        return list(schema.names)
    if errors or {"stage", "reason"} <= set(schema.names):
        return [c for c in ERROR_COLUMNS if c in schema.names]
    return [c for c in schema.names if c not in METADATA_COLUMNS]


def render(
    rows: Rows, errors: bool = False, all_columns: bool = False, console_width: int = 120
) -> Group:
    """A title line and the rows: one table row per record when they fit the console's width,
    else one block of `field  value` rows per record (a long value folds beside its own field)."""
    columns = columns_for(rows.schema, errors, all_columns)
    if "question_index" in columns and all(r.get("question_index") is None for r in rows.rows):
        columns.remove("question_index")
    files = rows.files[0] if len(rows.files) == 1 else f"{len(rows.files)} files"
    title = Text(f"{files}: {len(rows.rows)} of {rows.total} rows", style="bold")
    if not rows.rows:
        return Group(title)
    limit = 160 if errors else 48
    cells = [[cell(r.get(c), limit) for c in columns] for r in rows.rows]
    natural = [max(len(c), *(cells[i][j].cell_len for i in range(len(cells)))) for j, c in
               enumerate(columns)]  # fmt: skip
    if sum(natural) + 3 * len(columns) + 1 <= console_width:
        table = Table(show_lines=errors)
        for c in columns:
            table.add_column(c, no_wrap=True)
        for row in cells:
            table.add_row(*row)
        return Group(title, table)
    table = Table(show_header=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for row in cells:
        for j, (column, value) in enumerate(zip(columns, row)):
            table.add_row(column, value, end_section=j == len(columns) - 1)
    return Group(title, table)


def cell(value: Any, width: int) -> Text:
    if value is None:
        return Text("null", style="dim")
    if isinstance(value, dt.date | dt.datetime):
        text = value.isoformat()
    elif isinstance(value, float):
        text = repr(value)
    elif isinstance(value, list | dict):
        text = json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))
    else:
        text = str(value)
    if len(text) > width:
        text = text[: width - 1] + "…"
    return Text(text)
