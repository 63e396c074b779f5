"""`manifest.json`: what one run read, wrote and used, and what it would have cost on the API.

`requests`, `tokens` and the cost are what this run computed; `rows_reused` and
`requests_reused` say how much came from the finished results of an earlier run of the same job
and date instead (those rows carry the usage they had when they were computed).

The counts come from two places and must agree: the pipeline's counters (`items_in`) and the
Parquet files themselves (rows per file, read from their footers). `reconciled` says they do:

    items_in == results + errors == rows in results files + rows in errors files
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from flashbeam import __version__
from flashbeam.pipelines import PipelineMetrics

from .spec import PricingSpec


@dataclass(frozen=True)
class OutputFile:
    """One Parquet file of the partition: its path relative to the partition and its rows."""

    table: str  # "results" | "errors"
    name: str
    rows: int


def hosted_cost(metrics: PipelineMetrics, pricing: PricingSpec) -> dict[str, Any]:
    """The run's tokens priced per million at the hosted API's rates (nothing was billed)."""
    miss = metrics.prompt_tokens - metrics.cached_tokens
    parts = {
        "input_cache_miss": miss * pricing.input_cache_miss / 1e6,
        "input_cache_hit": metrics.cached_tokens * pricing.input_cache_hit / 1e6,
        "output": metrics.completion_tokens * pricing.output / 1e6,
    }
    return {
        "currency": pricing.currency,
        "prices_per_million_tokens": pricing.model_dump(exclude={"currency"}),
        **{k: round(v, 8) for k, v in parts.items()},
        "total": round(sum(parts.values()), 8),
    }


def build_manifest(
    *,
    job: str,
    spec_path: str,
    date: dt.date,
    started: dt.datetime,
    duration_s: float,
    metrics: PipelineMetrics,
    files: list[OutputFile],
    locations: dict[str, str],
    input_files: list[str],
    model: dict[str, Any],
    runner: str,
    pricing: PricingSpec,
    constraints: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest of one run. `constraints` is the level of each task schema with what was
    relaxed (`pipelines.validate.constraint_report`); the requests per level come from the
    pipeline's counters."""
    results = sum(f.rows for f in files if f.table == "results")
    errors = sum(f.rows for f in files if f.table == "errors")
    return {
        "job": job,
        "spec": spec_path,
        "date": date.isoformat(),
        "started_at": started.isoformat(timespec="seconds"),
        "duration_s": round(duration_s, 3),
        "flashbeam_version": __version__,
        "runner": runner,
        "model": model,
        "input": {"files": input_files},
        "counts": {
            "records_in": metrics.records_in,
            "items_in": metrics.items_in,
            "results": results,
            "errors": errors,
            "chunks": metrics.chunks,
            "requests": metrics.requests,
            "retries": metrics.retries,
            "invalid_outputs": metrics.invalid_outputs,
            "engine_errors": metrics.engine_errors,
            "oom_splits": metrics.oom_splits,
            "rows_reused": metrics.rows_reused,
            "requests_reused": metrics.requests_reused,
        },
        "reconciled": metrics.items_in == results + errors
        and (metrics.results_out, metrics.errors_out) == (results, errors),
        "tokens": {
            "prompt": metrics.prompt_tokens,
            "cached": metrics.cached_tokens,
            "cache_miss": metrics.prompt_tokens - metrics.cached_tokens,
            "completion": metrics.completion_tokens,
        },
        "cache_hit_ratio": round(metrics.cache_hit_ratio, 6),
        "constraint": {
            "schemas": constraints or {},
            "requests": {
                "exact": metrics.constraint_exact,
                "relaxed": metrics.constraint_relaxed,
                "none": metrics.constraint_none,
            },
        },
        "hosted_api_cost": hosted_cost(metrics, pricing),
        "outputs": locations,
        "files": [{"table": f.table, "name": f.name, "rows": f.rows} for f in files],
    }


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
