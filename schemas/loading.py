"""Load a JSON Schema (a dict, a `.json` file, a pydantic model or a built-in name) and check it.

Checking happens once, up front: the schema against its meta-schema (draft 2020-12 unless `$schema`
names another), every `$ref` resolved, and every `format` it uses has a checker installed.
Failures raise `SchemaError` naming where (file, JSON path) and which keyword.

The loaded schema has its refs bundled (`flashbeam.model.grammar.refs`): JSON pointers, `$id`s and
`$anchor`s within the schema, and refs to `.json` files next to a schema file, all become
pointers into the one schema, so the grammar and the validator read the same thing. A remote ref
is an error naming it; nothing is fetched.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema.validators import validator_for

from flashbeam.model.grammar.refs import RefError, bundle_refs, json_path, subschemas
from flashbeam.schemas.patterns import pattern_error

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
    file = None
    if isinstance(source, type) and hasattr(source, "model_json_schema"):
        schema, where = source.model_json_schema(), where or f"pydantic model {source.__name__}"
    elif isinstance(source, dict):
        schema = copy.deepcopy(source)
    elif isinstance(source, str | Path):
        schema, where, file = _read(source, where)
    else:
        raise SchemaError(
            f"{where or 'schema'}: expected a dict, a .json path, a pydantic model or a built-in "
            f"name, got {type(source).__name__}"
        )
    return check_schema(schema, where=where, source=file)


def _read(source: str | Path, where: str | None) -> tuple[Any, str, Path]:
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
        return json.loads(path.read_text(encoding="utf-8")), where, path
    except json.JSONDecodeError as e:
        raise SchemaError(f"{where}:{e.lineno}:{e.colno}: not valid JSON: {e.msg}") from e


def response_format_for(schema: dict[str, Any], constraint: str = "auto") -> dict[str, Any]:
    """The engine's `response_format` for a loaded schema (named by its title); with
    `constraint="exact"` the engine refuses the schema unless its grammar enforces all of it."""
    spec = {"name": schema.get("title", "output"), "schema": schema}
    if constraint != "auto":
        spec["constraint"] = constraint
    return {"type": "json_schema", "json_schema": spec}


def validator_class(schema: Any) -> type[jsonschema.protocols.Validator]:
    """The validator for the schema's `$schema` dialect (draft 2020-12 when it names none)."""
    dialect = schema.get("$schema") if isinstance(schema, dict) else None
    if dialect is None:
        return DEFAULT_VALIDATOR
    cls = validator_for(schema, default=None)
    if cls is None:
        raise SchemaError(f"$schema {dialect!r} is not a JSON Schema dialect this build knows")
    return cls


def check_schema(schema: Any, *, where: str | None = None, source: Path | None = None) -> Any:
    """Raise SchemaError unless `schema` is a valid schema whose refs and formats all resolve;
    returns it with its refs bundled (refs to files resolve next to `source`, its file)."""
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
    try:
        schema = bundle_refs(schema, source=source, where=where)
    except RefError as e:
        raise SchemaError(str(e)) from None
    _check_formats_and_patterns(schema, where)
    return schema


def _check_formats_and_patterns(schema: dict, where: str) -> None:
    formats = FORMAT_CHECKER.checkers
    stack: list[tuple[tuple, dict]] = [((), schema)]
    while stack:
        parts, node = stack.pop()
        fmt = node.get("format")
        if isinstance(fmt, str) and fmt in _STANDARD_FORMATS and fmt not in formats:
            raise SchemaError(
                f"{where}: format {fmt!r} at {json_path(parts)} cannot be checked: its checker "
                "is not installed (jsonschema[format-nongpl])"
            )
        for regex in [node.get("pattern"), *(node.get("patternProperties") or {})]:
            why = pattern_error(regex) if isinstance(regex, str) else None
            if why:
                raise SchemaError(
                    f"{where}: pattern {regex!r} at {json_path(parts)} is not a regex outputs "
                    f"can be checked with: {why}"
                )
        stack.extend(((*parts, *sub), s) for sub, s in subschemas(node))


_TYPES = "array, boolean, integer, null, number, object, string"
_STANDARD_FORMATS = {
    "date", "date-time", "time", "duration", "email", "idn-email", "hostname", "idn-hostname",
    "ipv4", "ipv6", "uri", "uri-reference", "iri", "iri-reference", "uuid", "uri-template",
    "json-pointer", "relative-json-pointer", "regex",
}  # fmt: skip
