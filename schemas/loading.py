"""Load a JSON Schema (a dict, a `.json` file, a pydantic model or a built-in name) and check it.

Checking happens once, up front: the schema against its meta-schema (draft 2020-12 unless `$schema`
names another), every `$ref` resolved locally, and every `format` it uses has a checker installed.
Failures raise `SchemaError` naming where (file, JSON path) and which keyword.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import referencing.exceptions
from jsonschema.validators import validator_for
from referencing import Registry
from referencing.jsonschema import DRAFT202012, specification_with

from flashbeam.model.grammar import subschemas

BUILTIN_DIR = Path(__file__).parent / "builtin"
DEFAULT_VALIDATOR = jsonschema.Draft202012Validator
# The 2020-12 format checkers, whatever the schema's draft: a draft-04 "date" is checked too, and
# "time" is RFC 3339 (the generic FormatChecker would use draft 3's "HH:MM:SS").
FORMAT_CHECKER = jsonschema.Draft202012Validator.FORMAT_CHECKER


class SchemaError(ValueError):
    """A JSON Schema that cannot be used; the message says where and why."""


def builtin_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.json"))


def load_schema(source: Any, *, where: str | None = None) -> dict[str, Any]:
    """A checked copy of the schema in `source`: a dict, a path to a `.json` file, a pydantic
    model class, or a built-in name (`builtin_names()`). `where` labels errors (a job field)."""
    if isinstance(source, type) and hasattr(source, "model_json_schema"):
        schema, where = source.model_json_schema(), where or f"pydantic model {source.__name__}"
    elif isinstance(source, dict):
        schema = copy.deepcopy(source)
    elif isinstance(source, str | Path):
        schema, where = _read(source, where)
    else:
        raise SchemaError(
            f"{where or 'schema'}: expected a dict, a .json path, a pydantic model or a built-in "
            f"name, got {type(source).__name__}"
        )
    check_schema(schema, where=where)
    return schema


def _read(source: str | Path, where: str | None) -> tuple[Any, str]:
    path = Path(source)
    if isinstance(source, str) and source in builtin_names() and not path.exists():
        path = BUILTIN_DIR / f"{source}.json"
    elif not path.is_file():
        raise SchemaError(
            f"{where or 'schema'}: {str(source)!r} is neither a file nor a built-in schema "
            f"({', '.join(builtin_names())})"
        )
    where = f"{where}: {path}" if where else str(path)
    try:
        return json.loads(path.read_text(encoding="utf-8")), where
    except json.JSONDecodeError as e:
        raise SchemaError(f"{where}:{e.lineno}:{e.colno}: not valid JSON: {e.msg}") from e


def response_format_for(schema: dict[str, Any]) -> dict[str, Any]:
    """The engine's `response_format` for a loaded schema (named by its title)."""
    return {
        "type": "json_schema",
        "json_schema": {"name": schema.get("title", "output"), "schema": schema},
    }


def validator_class(schema: Any) -> type[jsonschema.protocols.Validator]:
    """The validator for the schema's `$schema` dialect (draft 2020-12 when it names none)."""
    dialect = schema.get("$schema") if isinstance(schema, dict) else None
    if dialect is None:
        return DEFAULT_VALIDATOR
    cls = validator_for(schema, default=None)
    if cls is None:
        raise SchemaError(f"$schema {dialect!r} is not a JSON Schema dialect this build knows")
    return cls


def check_schema(schema: Any, *, where: str | None = None) -> None:
    """Raise SchemaError unless `schema` is a valid schema whose refs and formats all resolve."""
    where = where or "schema"
    if not isinstance(schema, dict):
        raise SchemaError(f"{where}: a schema must be a JSON object, got {type(schema).__name__}")
    try:
        cls = validator_class(schema)
    except SchemaError as e:
        raise SchemaError(f"{where}: {e}") from None
    error = jsonschema.exceptions.best_match(cls(cls.META_SCHEMA).iter_errors(schema))
    if error is not None:
        keyword = next(
            (p for p in reversed(error.absolute_path) if isinstance(p, str)), error.validator
        )
        message = error.message
        if keyword == "type" and error.validator == "anyOf":
            message = f"{error.instance!r} is not a JSON Schema type (use one of {_TYPES})"
        raise SchemaError(
            f"{where}: invalid schema at {error.json_path}: keyword {keyword!r}: {message}"
        )
    _check_refs_and_formats(schema, where)


def _check_refs_and_formats(schema: dict, where: str) -> None:
    spec = specification_with(schema.get("$schema", ""), default=DRAFT202012)
    resolver = Registry().resolver_with_root(spec.create_resource(schema))
    formats = FORMAT_CHECKER.checkers
    stack: list[tuple[str, dict]] = [("$", schema)]
    while stack:
        path, node = stack.pop()
        ref = node.get("$ref")
        if isinstance(ref, str):
            try:
                resolver.lookup(ref)
            except referencing.exceptions.Unresolvable:
                hint = "" if ref.startswith("#") else " (only refs within the schema resolve)"
                raise SchemaError(
                    f"{where}: $ref {ref!r} at {path} does not resolve{hint}"
                ) from None
        fmt = node.get("format")
        if isinstance(fmt, str) and fmt in _STANDARD_FORMATS and fmt not in formats:
            raise SchemaError(
                f"{where}: format {fmt!r} at {path} cannot be checked: its checker is not "
                "installed (jsonschema[format-nongpl])"
            )
        stack.extend((path + "".join(_step(p) for p in sub), s) for sub, s in subschemas(node))


_TYPES = "array, boolean, integer, null, number, object, string"
_STANDARD_FORMATS = {
    "date", "date-time", "time", "duration", "email", "idn-email", "hostname", "idn-hostname",
    "ipv4", "ipv6", "uri", "uri-reference", "iri", "iri-reference", "uuid", "uri-template",
    "json-pointer", "relative-json-pointer", "regex",
}  # fmt: skip


def _step(part: str | int) -> str:
    if isinstance(part, int):
        return f"[{part}]"
    return f".{part}" if part.isidentifier() else f"[{json.dumps(part)}]"
