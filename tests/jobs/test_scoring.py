"""Field accuracy: what `flashbeam eval` scores a job's outputs with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flashbeam.jobs.scoring import field_accuracy

SCHEMAS = Path(__file__).resolve().parents[2] / "jobs" / "schemas"
INVOICE_FIELDS = {
    "document_type", "vendor", "customer", "document_number", "issue_date", "due_date",
    "total_amount", "currency",
}  # fmt: skip


def load_schema(name: str) -> dict:
    return json.loads((SCHEMAS / f"{name}.json").read_text())


def test_field_accuracy_exact_match_with_numbers_as_numbers():
    schema = load_schema("invoice")
    gold = [
        {"id": "a", "vendor": "Acme", "total_amount": 1234.5, "currency": "USD", "due_date": None},
        {
            "id": "b",
            "vendor": "Beta",
            "total_amount": 10,
            "currency": None,
            "due_date": "2024-01-02",
        },
    ]
    preds = {
        "a": '{"vendor":"Acme","total_amount":1234.50,"currency":"USD","due_date":null}',
        "b": {"vendor": "beta", "total_amount": 10.0, "currency": None, "due_date": "2024-01-02"},
    }
    acc = field_accuracy(preds, gold)
    assert acc["per_field"] == {
        "vendor": 0.5,
        "total_amount": 1.0,
        "currency": 1.0,
        "due_date": 1.0,
    }
    assert acc["field_accuracy"] == 7 / 8 and acc["exact_records"] == 0.5
    # With the schema, its fields are the ones scored: absent keys count wrong.
    with_schema = field_accuracy(preds, gold, schema)
    assert set(with_schema["per_field"]) == set(INVOICE_FIELDS)
    assert with_schema["per_field"]["document_type"] == 0.0


def test_field_accuracy_missing_unparsable_and_wrong_types():
    gold = {"a": {"n": 1, "flag": True}, "b": {"n": 2, "flag": False}, "c": {"n": 3, "flag": None}}
    preds = {"a": {"n": True, "flag": 1}, "b": "{not json", "z": {"n": 1}}
    acc = field_accuracy(preds, gold)
    assert acc["field_accuracy"] == 0.0
    assert acc["missing"] == 2 and acc["extra"] == 1 and acc["records"] == 3


def test_field_accuracy_sets_and_ignored_fields():
    schema = load_schema("report_summary")
    gold = {
        "title": "T",
        "people": ["A B", "C D"],
        "figures": [{"name": "x", "value": 3}],
        "summary": "one sentence",
    }
    pred = {
        "title": "T",
        "people": ["C D", "A B"],
        "figures": [{"value": 3.0, "name": "x"}],
        "summary": "something else",
    }
    acc = field_accuracy({"r": pred}, {"r": gold}, schema)
    assert "summary" not in acc["per_field"]
    assert acc["per_field"]["people"] == acc["per_field"]["figures"] == 1.0
    half = field_accuracy({"r": {**pred, "people": ["A B"]}}, {"r": gold}, schema)
    assert half["per_field"]["people"] == 0.0 and half["set_f1"]["people"] == pytest.approx(2 / 3)
    assert field_accuracy({"r": gold}, {"r": gold})["field_accuracy"] == 1.0
