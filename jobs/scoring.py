"""Field-level scoring of a job's outputs against gold records (`flashbeam eval`).

    field_accuracy(predictions, gold, schema)["field_accuracy"]

Each field of each record matches exactly or not; numbers compare as numbers (1234.50 ==
1234.5), and the schema's `x-match` marks make a field a set (`set`) or leave it unscored
(`ignore`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any


def _as_records(rows: Any) -> dict[str, Any]:
    if isinstance(rows, Mapping):
        return dict(rows)
    out = {}
    for row in rows:
        if not isinstance(row, Mapping) or "id" not in row:
            raise ValueError("rows given as a list need an 'id' key each; or pass {id: record}")
        out[str(row["id"])] = {k: v for k, v in row.items() if k != "id"}
    return out


def _canon(value: Any) -> Any:
    """Hashable form; numbers as floats, so 1234.50 == 1234.5, but true != 1."""
    if isinstance(value, bool):
        return ("bool", value)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _canon(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_canon(v) for v in value)
    return repr(value)


def _same(pred: Any, gold: Any, how: str) -> bool:
    if how == "set":
        if not isinstance(pred, list) or not isinstance(gold, list):
            return _canon(pred) == _canon(gold)
        return sorted(map(repr, map(_canon, pred))) == sorted(map(repr, map(_canon, gold)))
    p, g = _canon(pred), _canon(gold)
    if isinstance(p, float) and isinstance(g, float):
        return math.isclose(p, g, rel_tol=1e-9, abs_tol=1e-9)
    return p == g


def _set_f1(pred: Any, gold: Any) -> float:
    p = {repr(_canon(v)) for v in pred} if isinstance(pred, list) else set()
    g = {repr(_canon(v)) for v in gold} if isinstance(gold, list) else set()
    if not p and not g:
        return 1.0
    hit = len(p & g)
    return 0.0 if hit == 0 else 2 * hit / (len(p) + len(g))


def field_accuracy(
    predictions: Any, gold: Any, schema: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Field-level exact match of predictions against gold.

    `predictions` and `gold` are `{id: record}` maps or lists of records with an "id" key; a
    prediction may be a JSON string, and a missing, unparsable or non-object one counts every field
    wrong. Values match exactly, except: numbers compare as numbers (1234.50 == 1234.5); a schema
    property marked `"x-match": "set"` compares as a set (order-free), with its mean F1 reported
    too; `"x-match": "ignore"` is not scored (free text such as a summary). Without a schema the
    fields are the gold records' keys.
    """
    gold_by_id = _as_records(gold)
    pred_by_id = _as_records(predictions)
    props = dict((schema or {}).get("properties", {}))
    if props:
        fields = list(props)
    else:
        fields = list(dict.fromkeys(k for rec in gold_by_id.values() for k in rec))
    how = {f: props.get(f, {}).get("x-match", "exact") for f in fields}
    scored = [f for f in fields if how[f] != "ignore"]
    hits = dict.fromkeys(scored, 0)
    f1 = {f: 0.0 for f in scored if how[f] == "set"}
    missing = exact_records = 0
    for rid, g in gold_by_id.items():
        p = pred_by_id.get(rid)
        if isinstance(p, str):
            try:
                p = json.loads(p)
            except json.JSONDecodeError:
                p = None
        if not isinstance(p, Mapping):
            missing += 1
            p = None
        all_ok = p is not None
        for f in scored:
            ok = p is not None and f in p and _same(p[f], g.get(f), how[f])
            hits[f] += ok
            all_ok &= ok
            if f in f1 and p is not None:
                f1[f] += _set_f1(p.get(f), g.get(f))
        exact_records += all_ok
    n = len(gold_by_id)
    total = n * len(scored)
    return {
        "field_accuracy": sum(hits.values()) / total if total else 0.0,
        "per_field": {f: hits[f] / n if n else 0.0 for f in scored},
        "set_f1": {f: v / n if n else 0.0 for f, v in f1.items()},
        "records": n,
        "exact_records": exact_records / n if n else 0.0,
        "missing": missing,
        "extra": len(set(pred_by_id) - set(gold_by_id)),
    }
