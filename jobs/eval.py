"""`flashbeam eval JOB.yaml`: run the job and score its results against gold records.

The gold is a JSONL file of `{"id": ..., <field>: <value>, ...}` beside the input (for
`data/business_docs.jsonl`, `data/business_docs.gold.jsonl`) or given with `gold=`. Scoring is
`flashbeam.jobs.scoring.field_accuracy`: field-level exact match, with the schema's
`x-match` marks (`set`, `ignore`). Free-text results (OpenAI batch jobs without a task schema)
are parsed as JSON before scoring.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from .parquet_files import read_parquet
from .run import JobOutcome, Plan
from .scoring import field_accuracy
from .show import METADATA_COLUMNS
from .spec import JobError


def gold_path_for(plan: Plan) -> Path:
    """`<input>.gold.jsonl` beside a single input file."""
    path = Path(plan.input_path)
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    return path.with_name(f"{stem}.gold{path.suffix or '.jsonl'}")


def read_gold(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise JobError(
            f"{path}: no gold file; put `<input name>.gold.jsonl` beside the input or pass --gold"
        )
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise JobError(f"{path}:{number}: not valid JSON: {e.msg}") from None
        if not isinstance(row, dict) or "id" not in row:
            raise JobError(f"{path}:{number}: each gold line is an object with an 'id'")
        rows.append(row)
    return rows


def predictions(outcome: JobOutcome) -> dict[str, Any]:
    """{id: output} from the results files: the schema's fields, or the text of free-text rows."""
    plan = outcome.plan
    out: dict[str, Any] = {}
    for f in outcome.manifest["files"]:
        if f["table"] != "results":
            continue
        rows = read_parquet(plan.results.file(f["name"], staged=False)).to_pylist()
        prefix = plan.config.output.metadata_prefix
        for row in rows:
            values = {
                k: _json_value(v)
                for k, v in row.items()
                if k != prefix + "id" and k.removeprefix(prefix) not in METADATA_COLUMNS
            }
            free_text = plan.config.task.schema is None
            out[str(row[prefix + "id"])] = values.get("text") if free_text else values
    return out


def score(outcome: JobOutcome, gold_path: Path) -> dict[str, Any]:
    """The eval report: field accuracy plus the run's counts."""
    gold = read_gold(gold_path)
    preds = predictions(outcome)
    accuracy = field_accuracy(preds, gold, outcome.plan.config.task.schema)
    m = outcome.manifest
    valid = sum(1 for g in gold if str(g["id"]) in preds)
    return {
        "job": m["job"],
        "gold": str(gold_path),
        "model": m["model"]["model"],
        **accuracy,
        "valid_rows": valid,
        "valid_fraction": valid / len(gold) if gold else 0.0,
        "results": m["counts"]["results"],
        "errors": m["counts"]["errors"],
        "duration_s": m["duration_s"],
        "tokens": m["tokens"],
        "cache_hit_ratio": m["cache_hit_ratio"],
    }


def _json_value(value: Any) -> Any:
    """A Parquet value back as the JSON value the model wrote (dates as YYYY-MM-DD)."""
    if isinstance(value, dt.datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    return value
