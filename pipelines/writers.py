"""The two output tables: results (typed from the job's JSON Schema, plus metadata columns) and
errors (a fixed schema: which record, which step, why, and the original input).

Results columns: `id`, `question_index` (jobs with several questions), the schema's properties
(free-text jobs: `text`), then `chunk_count`, `parts_failed`, `valid`, `attempts`, `constraint`
(how much of the schema the grammar enforced: exact, relaxed or none; null for free text),
`finish_reason`, the token usage (`prompt_tokens`, `prompt_cache_hit_tokens`,
`prompt_cache_miss_tokens`, `completion_tokens`, summed over attempts, parts and reduce rounds),
`model`, `latency_s` (wall time of the engine calls the item took part in), `reasoning_content`,
`source` and `line`.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from flashbeam.schemas import schema_to_arrow, to_arrow_row

from .config import TaskConfig
from .records import ErrorRow, ItemResult, ItemStats

_USAGE_FIELDS = [
    pa.field("prompt_tokens", pa.int64(), False),
    pa.field("prompt_cache_hit_tokens", pa.int64(), False),
    pa.field("prompt_cache_miss_tokens", pa.int64(), False),
    pa.field("completion_tokens", pa.int64(), False),
]
_METADATA_FIELDS = [
    pa.field("chunk_count", pa.int32(), False),
    pa.field("parts_failed", pa.int32(), False),
    pa.field("valid", pa.bool_(), False),
    pa.field("attempts", pa.int32(), False),
    pa.field("constraint", pa.string()),
    pa.field("finish_reason", pa.string(), False),
    *_USAGE_FIELDS,
    pa.field("model", pa.string(), False),
    pa.field("latency_s", pa.float64(), False),
    pa.field("reasoning_content", pa.string()),
    pa.field("source", pa.string(), False),
    pa.field("line", pa.int64()),
]
ERRORS_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), False),
        pa.field("question_index", pa.int32()),
        pa.field("stage", pa.string(), False),
        pa.field("reason", pa.string(), False),
        pa.field("source", pa.string(), False),
        pa.field("line", pa.int64()),
        pa.field("input", pa.string(), False),
        pa.field("output", pa.string()),
        pa.field("finish_reason", pa.string()),
        pa.field("attempts", pa.int32(), False),
        pa.field("chunk_count", pa.int32()),
        *[f.with_nullable(True) for f in _USAGE_FIELDS],
        pa.field("model", pa.string()),
        pa.field("latency_s", pa.float64()),
    ]
)


class ResultTable:
    """The results table of one task: its Arrow schema and how an ItemResult becomes a row."""

    def __init__(self, task: TaskConfig, metadata_prefix: str = ""):
        self.values = value_schema(task)
        self.free_text = task.schema is None
        self.prefix = metadata_prefix
        self.with_question = len(task.questions or ()) > 1
        head = [pa.field(self.prefix + "id", pa.string(), False)]
        if self.with_question:
            head.append(pa.field(self.prefix + "question_index", pa.int32(), False))
        tail = [f.with_name(self.prefix + f.name) for f in _METADATA_FIELDS]
        clashes = sorted({f.name for f in head + tail} & set(self.values.names))
        if clashes:
            raise ValueError(
                f"the schema's properties {clashes} have the names of metadata columns; rename "
                "them or set output.metadata_prefix (for example '_') to prefix the metadata"
            )
        self.schema = pa.schema(head + list(self.values) + tail)

    def row(self, item: ItemResult) -> dict[str, Any]:
        """The row for `item`; raises ArrowConversionError when a value does not fit its
        column (the message names the field)."""
        if self.free_text:
            values = {"text": item.text}
        else:
            values = to_arrow_row(item.value, self.values)
        p = self.prefix
        row = {p + "id": item.origin.id}
        if self.with_question:
            row[p + "question_index"] = item.question_index
        row.update(values)
        stats = item.stats
        meta = {
            "chunk_count": stats.chunk_count,
            "parts_failed": stats.parts_failed,
            "valid": item.valid,
            "attempts": stats.attempts,
            "constraint": stats.constraint,
            "finish_reason": item.finish_reason,
            **_usage_columns(stats),
            "model": item.model,
            "latency_s": stats.latency_s,
            "reasoning_content": item.reasoning_content,
            "source": item.origin.source,
            "line": item.origin.line,
        }
        row.update({p + k: v for k, v in meta.items()})
        return row


def value_schema(task: TaskConfig) -> pa.Schema:
    """The Arrow columns of the output value: from the JSON Schema, or `text` for free text."""
    if task.schema is None:
        return pa.schema([pa.field("text", pa.string(), False)])
    return schema_to_arrow(task.schema)


def error_row(error: ErrorRow) -> dict[str, Any]:
    stats = error.stats
    usage = _usage_columns(stats) if stats is not None else {}
    return {
        "id": error.id,
        "question_index": error.question_index,
        "stage": error.stage,
        "reason": error.reason,
        "source": error.source,
        "line": error.line,
        "input": error.input,
        "output": error.output,
        "finish_reason": error.finish_reason,
        "attempts": stats.attempts if stats is not None else 0,
        "chunk_count": stats.chunk_count if stats is not None else None,
        **{f.name: usage.get(f.name) for f in _USAGE_FIELDS},
        "model": error.model,
        "latency_s": stats.latency_s if stats is not None else None,
    }


def _usage_columns(stats: ItemStats) -> dict[str, int]:
    u = stats.usage
    return {
        "prompt_tokens": u.prompt_tokens,
        "prompt_cache_hit_tokens": u.prompt_cache_hit_tokens,
        "prompt_cache_miss_tokens": u.prompt_cache_miss_tokens,
        "completion_tokens": u.completion_tokens,
    }
