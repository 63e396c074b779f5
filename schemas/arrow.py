"""Arrow types from a JSON Schema, and rows converted into them without losing a value.

Mapping: object with properties -> struct; array -> list; integer -> int64; number -> float64;
boolean -> bool; string -> string (enum of strings -> dictionary<int32, string>; format date ->
date32; format date-time -> timestamp[us, UTC]); a property that is not required, or whose type
allows null, is nullable. Where the schema does not fix one type (anyOf/oneOf of several types,
free-form objects, untyped values, recursive refs) the column holds the value as a JSON string and
its field carries the metadata `flashbeam.encoding: json`. A schema whose root is not an object
maps to one column named `value`.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime, timezone
from typing import Any

import pyarrow as pa

from flashbeam.schemas.loading import load_schema

JSON_ENCODING = {b"flashbeam.encoding": b"json"}
ROOT_VALUE = {b"flashbeam.root": b"value"}
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_FRACTION = re.compile(r"\.(\d+)")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class ArrowConversionError(ValueError):
    """A value that does not fit its Arrow column; the message names the row and field path."""


def schema_to_arrow(json_schema: Any) -> pa.Schema:
    """The Arrow schema of the rows a JSON Schema describes (see the module doc for the mapping)."""
    root = load_schema(json_schema)
    field = _Mapper(root).field("value", root, required=True)
    if pa.types.is_struct(field.type) and field.metadata is None:
        return pa.schema(list(field.type))
    return pa.schema([field], metadata=ROOT_VALUE)


class _Mapper:
    def __init__(self, root: dict):
        self.root = root
        self.refs: list[str] = []  # refs being expanded, to stop at recursion

    def field(self, name: str, schema: Any, required: bool) -> pa.Field:
        dtype, nullable = self.type_of(schema)
        if dtype is None:
            return pa.field(name, pa.string(), True, metadata=JSON_ENCODING)
        return pa.field(name, dtype, nullable or not required)

    def type_of(self, schema: Any) -> tuple[pa.DataType | None, bool]:
        """(type, nullable); type None means "a JSON-string column"."""
        if not isinstance(schema, dict):
            return None, True
        if "$ref" in schema:
            return self._ref(schema)
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return self._union(schema, key)
        if isinstance(schema.get("allOf"), list) and len(schema["allOf"]) == 1:
            rest = {k: v for k, v in schema.items() if k != "allOf"}
            return self.type_of({**rest, **schema["allOf"][0]})
        if "allOf" in schema or "not" in schema:
            return None, True
        if "enum" in schema or "const" in schema:
            values = schema["enum"] if "enum" in schema else [schema["const"]]
            return _literal_type(values, dictionary="enum" in schema)
        types = schema.get("type", _implied_type(schema))
        types = [types] if isinstance(types, str) else list(types or [])
        nullable = "null" in types
        types = [t for t in types if t != "null"]
        if not types:
            return (pa.null(), True) if nullable else (None, True)
        if set(types) == {"integer", "number"}:
            types = ["number"]
        if len(types) > 1:
            return None, True
        return self._single(types[0], schema), nullable

    def _single(self, kind: str, schema: dict) -> pa.DataType | None:
        if kind == "object":
            props = schema.get("properties")
            if not props:
                return None
            required = set(schema.get("required", []))
            return pa.struct([self.field(n, s, n in required) for n, s in props.items()])
        if kind == "array":
            items = schema.get("items", {})
            if "prefixItems" in schema or not isinstance(items, dict):
                return None
            return pa.list_(self.field("item", items, required=True))
        if kind == "string":
            fmt = schema.get("format")
            return {"date": pa.date32(), "date-time": pa.timestamp("us", tz="UTC")}.get(
                fmt, pa.string()
            )
        return {"integer": pa.int64(), "number": pa.float64(), "boolean": pa.bool_()}.get(kind)

    def _ref(self, schema: dict) -> tuple[pa.DataType | None, bool]:
        ref = schema["$ref"]
        if ref in self.refs or not ref.startswith("#"):
            return None, True
        target: Any = self.root
        for part in filter(None, ref[1:].split("/")):
            part = part.replace("~1", "/").replace("~0", "~")
            target = target[int(part)] if isinstance(target, list) else target[part]
        self.refs.append(ref)
        try:
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            return self.type_of({**target, **rest} if isinstance(target, dict) else target)
        finally:
            self.refs.pop()

    def _union(self, schema: dict, key: str) -> tuple[pa.DataType | None, bool]:
        branches = schema[key]
        non_null = [b for b in branches if not (isinstance(b, dict) and b.get("type") == "null")]
        if len(non_null) != 1:
            return None, True
        rest = {k: v for k, v in schema.items() if k != key}
        dtype, nullable = self.type_of({**rest, **non_null[0]})
        return dtype, nullable or len(non_null) < len(branches)


def _implied_type(schema: dict) -> str | None:
    if "properties" in schema:
        return "object"
    if "items" in schema:
        return "array"
    return None


def _literal_type(values: list, dictionary: bool) -> tuple[pa.DataType | None, bool]:
    nullable = None in values
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, str) for v in present):
        return (pa.dictionary(pa.int32(), pa.string()) if dictionary else pa.string()), nullable
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.int64(), nullable
    if present and all(isinstance(v, bool) for v in present):
        return pa.bool_(), nullable
    return None, True


def to_arrow_rows(objects: list[Any], arrow_schema: pa.Schema) -> pa.Table:
    """A table of `objects` typed by `arrow_schema` (from `schema_to_arrow`). A value that does not
    fit its column raises ArrowConversionError naming the row and field path; nothing is coerced
    in a way that changes it."""
    rows = [to_arrow_row(obj, arrow_schema, i) for i, obj in enumerate(objects)]
    return pa.Table.from_pylist(rows, schema=arrow_schema)


def to_arrow_row(obj: Any, arrow_schema: pa.Schema, row: int = 0) -> dict[str, Any]:
    """One object as a dict of Python values that fit `arrow_schema` exactly, or raise."""
    if arrow_schema.metadata and arrow_schema.metadata.get(b"flashbeam.root") == b"value":
        obj = {"value": obj}
    return _Converter(row).struct(obj, list(arrow_schema), "$")


class _Converter:
    def __init__(self, row: int):
        self.row = row

    def fail(self, path: str, why: str, value: Any) -> ArrowConversionError:
        shown = repr(value)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        return ArrowConversionError(f"row {self.row}: field {path}: {why} (value {shown})")

    def value(self, value: Any, field: pa.Field, path: str) -> Any:
        if field.metadata and field.metadata.get(b"flashbeam.encoding") == b"json":
            return None if value is None else json.dumps(value, ensure_ascii=False)
        if value is None:
            if not field.nullable:
                raise self.fail(path, "missing or null in a non-nullable column", value)
            return None
        t = field.type
        if pa.types.is_struct(t):
            return self.struct(value, list(t), path)
        if pa.types.is_list(t):
            if not isinstance(value, list):
                raise self.fail(path, "expected an array", value)
            return [self.value(v, t.value_field, f"{path}[{i}]") for i, v in enumerate(value)]
        if pa.types.is_integer(t):
            return self.integer(value, path)
        if pa.types.is_floating(t):
            return self.number(value, path)
        if pa.types.is_boolean(t):
            if not isinstance(value, bool):
                raise self.fail(path, "expected a boolean", value)
            return value
        if pa.types.is_date32(t):
            return self.date(value, path)
        if pa.types.is_timestamp(t):
            return self.timestamp(value, path)
        if pa.types.is_null(t):
            raise self.fail(path, "expected null", value)
        if not isinstance(value, str):  # string and dictionary<string>
            raise self.fail(path, "expected a string", value)
        return value

    def struct(self, value: Any, fields: list[pa.Field], path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, "expected an object", value)
        names = {f.name for f in fields}
        extra = [k for k in value if k not in names]
        if extra:
            raise self.fail(f"{path}.{extra[0]}", "property not in the schema", value[extra[0]])
        return {f.name: self.value(value.get(f.name), f, f"{path}.{f.name}") for f in fields}

    def integer(self, value: Any, path: str) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(path, "expected an integer", value)
        if not INT64_MIN <= value <= INT64_MAX:
            raise self.fail(path, "integer out of int64 range", value)
        return value

    def number(self, value: Any, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(path, "expected a number", value)
        if isinstance(value, int) and (abs(value) > 2**53 and int(float(value)) != value):
            raise self.fail(path, "integer too large for float64 without rounding", value)
        return float(value)

    def date(self, value: Any, path: str) -> date:
        if isinstance(value, date) and not isinstance(value, datetime):
            return value
        try:
            if isinstance(value, str) and _DATE.fullmatch(value):
                return date.fromisoformat(value)
        except ValueError:
            pass
        raise self.fail(path, "expected a date YYYY-MM-DD", value)

    def timestamp(self, value: Any, path: str) -> datetime:
        if isinstance(value, str):
            fraction = _FRACTION.search(value)
            if fraction and fraction.group(1)[6:].strip("0"):
                raise self.fail(path, "date-time finer than microseconds", value)
            try:
                utc = value.endswith(("Z", "z"))
                value = datetime.fromisoformat(value[:-1] + "+00:00" if utc else value)
            except ValueError:
                raise self.fail(path, "expected an RFC 3339 date-time", value) from None
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise self.fail(path, "expected a date-time with a time zone offset", value)
        return value.astimezone(timezone.utc)
