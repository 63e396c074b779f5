"""JSON Schema -> Arrow types for every mapping, and conversions that never lose a value."""

import json
from datetime import date, datetime, timezone
from typing import Literal

import pyarrow as pa
import pydantic
import pytest

from flashbeam.schemas import ArrowConversionError, schema_to_arrow, to_arrow_rows

JSON = {b"flashbeam.encoding": b"json"}
DICT = pa.dictionary(pa.int32(), pa.string())

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "count": {"type": "integer"},
        "score": {"type": "number"},
        "ok": {"type": "boolean"},
        "status": {"enum": ["open", "paid"]},
        "level": {"enum": [1, 2, 3]},
        "kind": {"const": "invoice"},
        "note": {"type": ["string", "null"]},
        "maybe": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
        "day": {"type": "string", "format": "date"},
        "at": {"type": "string", "format": "date-time"},
        "mixed": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
        "either": {"oneOf": [{"type": "object"}, {"type": "array"}]},
        "free": {"type": "object"},
        "any": {},
        "num": {"type": ["integer", "number"]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "lines": {"type": "array", "items": {"$ref": "#/$defs/line"}},
        "tree": {"$ref": "#/$defs/node"},
    },
    "required": ["name", "count", "score", "ok", "status", "level", "kind", "note", "day", "at",
                 "tags", "lines"],
    "$defs": {
        "line": {"type": "object", "properties": {"sku": {"type": "string"},
                                                   "qty": {"type": "integer"}},
                 "required": ["sku"]},
        "node": {"type": "object", "properties": {"kids": {"type": "array",
                                                           "items": {"$ref": "#/$defs/node"}}}},
    },
}  # fmt: skip


def test_every_mapping():
    s = schema_to_arrow(SCHEMA)
    line = pa.struct([pa.field("sku", pa.string(), False), pa.field("qty", pa.int64())])
    expected = {
        "name": (pa.string(), False),
        "count": (pa.int64(), False),
        "score": (pa.float64(), False),
        "ok": (pa.bool_(), False),
        "status": (DICT, False),
        "level": (pa.int64(), False),
        "kind": (pa.string(), False),
        "note": (pa.string(), True),  # required but nullable by type
        "maybe": (pa.int64(), True),
        "day": (pa.date32(), False),
        "at": (pa.timestamp("us", tz="UTC"), False),
        "num": (pa.float64(), True),
        "tags": (pa.list_(pa.field("item", pa.string(), False)), False),
        "lines": (pa.list_(pa.field("item", line, False)), False),
    }
    for name, (dtype, nullable) in expected.items():
        assert (s.field(name).type, s.field(name).nullable) == (dtype, nullable), name
    kids = s.field("tree").type.field("kids")
    for name in ("mixed", "either", "free", "any"):
        assert s.field(name).type == pa.string() and s.field(name).metadata == JSON, name
    assert kids.type.value_field.metadata == JSON  # recursion stops at a JSON column


def test_non_object_root_is_one_value_column():
    s = schema_to_arrow({"type": "array", "items": {"type": "integer"}})
    assert s.names == ["value"] and s.field("value").type == pa.list_(
        pa.field("item", pa.int64(), False)
    )
    table = to_arrow_rows([[1, 2], []], s)
    assert table.column("value").to_pylist() == [[1, 2], []]


def test_pydantic_models_map_like_their_schema():
    class Line(pydantic.BaseModel):
        sku: str
        qty: int | None = None

    class Invoice(pydantic.BaseModel):
        vendor: str
        when: date
        status: Literal["paid", "open"]
        lines: list[Line]

    s = schema_to_arrow(Invoice)
    assert s.field("when").type == pa.date32() and s.field("status").type == DICT
    assert s.field("lines").type.value_type.field("qty").type == pa.int64()
    assert s.field("lines").type.value_type.field("qty").nullable


def test_rows_round_trip():
    s = schema_to_arrow(SCHEMA)
    row = {
        "name": "a", "count": 3.0, "score": 2, "ok": True, "status": "paid", "level": 2,
        "kind": "invoice", "note": None, "day": "2024-02-29", "at": "2024-02-29T10:00:00.5+02:00",
        "mixed": "x", "either": [1, {"b": None}], "free": {"k": "ü"}, "any": None, "num": 1,
        "tags": ["t"], "lines": [{"sku": "s", "qty": 1}, {"sku": "t"}],
        "tree": {"kids": [{"kids": []}]},
    }  # fmt: skip
    out = to_arrow_rows([row], s).to_pylist()[0]
    assert out["count"] == 3 and out["score"] == 2.0 and out["status"] == "paid"
    assert out["day"] == date(2024, 2, 29)
    assert out["at"] == datetime(2024, 2, 29, 8, 0, 0, 500000, tzinfo=timezone.utc)
    assert json.loads(out["either"]) == [1, {"b": None}] and json.loads(out["free"]) == {"k": "ü"}
    assert out["any"] is None and out["maybe"] is None
    assert out["lines"] == [{"sku": "s", "qty": 1}, {"sku": "t", "qty": None}]
    assert json.loads(out["tree"]["kids"][0]) == {"kids": []}


BASE = {"name": "a", "count": 1, "score": 1.0, "ok": True, "status": "open", "level": 1,
        "kind": "invoice", "note": None, "day": "2024-01-01", "at": "2024-01-01T00:00:00Z",
        "tags": [], "lines": []}  # fmt: skip


@pytest.mark.parametrize(
    "change, path, why",
    [
        ({"count": "3"}, "$.count", "expected an integer"),
        ({"count": 1.5}, "$.count", "expected an integer"),
        ({"count": True}, "$.count", "expected an integer"),
        ({"count": 2**63}, "$.count", "out of int64 range"),
        ({"score": 2**60 + 1}, "$.score", "float64 without rounding"),
        ({"ok": 1}, "$.ok", "expected a boolean"),
        ({"name": None}, "$.name", "non-nullable"),
        ({"extra": 1}, "$.extra", "not in the schema"),
        ({"day": "2024-02-30"}, "$.day", "expected a date"),
        ({"day": "20240101"}, "$.day", "expected a date"),
        ({"at": "2024-01-01T00:00:00"}, "$.at", "time zone"),
        ({"at": "2024-01-01T00:00:00.1234567Z"}, "$.at", "finer than microseconds"),
        ({"tags": "t"}, "$.tags", "expected an array"),
        ({"tags": ["a", 2]}, "$.tags[1]", "expected a string"),
        ({"lines": [{"sku": "a"}, {"sku": "b", "qty": "2"}]}, "$.lines[1].qty", "integer"),
        ({"lines": [{"qty": 2}]}, "$.lines[0].sku", "non-nullable"),
    ],
)
def test_values_that_do_not_fit_raise_naming_row_and_path(change, path, why):
    s = schema_to_arrow(SCHEMA)
    with pytest.raises(ArrowConversionError) as e:
        to_arrow_rows([BASE, {**BASE, **change}], s)
    message = str(e.value)
    assert message.startswith(f"row 1: field {path}: ") and why in message


def test_missing_required_field_raises():
    s = schema_to_arrow(SCHEMA)
    row = {k: v for k, v in BASE.items() if k != "count"}
    with pytest.raises(ArrowConversionError, match=r"row 0: field \$.count: missing"):
        to_arrow_rows([row], s)
