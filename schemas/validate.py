"""Validate model outputs against a JSON Schema, format checking on, into readable messages.

Validation always uses the full schema, whatever constraint level the grammar enforced it at.
Regexes are matched with a time bound (schemas.patterns): a pathological `pattern` makes the
output invalid with a message saying so, it never hangs the worker.
"""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

import jsonschema

from flashbeam.schemas import patterns
from flashbeam.schemas.loading import FORMAT_CHECKER, load_schema, validator_class

MAX_MESSAGES = 20
_FENCE = re.compile(r"```(?:json)?\s*\n(.*?)\n\s*```", re.DOTALL)


class SchemaValidator:
    """Validates instances against one (loaded and checked) schema.

    `errors(instance)` gives `"$.path: message"` strings, shallowest first; `check(text)` parses a
    model's text output and validates it, returning `(value, errors)`.
    """

    def __init__(self, schema: Any):
        self.schema = load_schema(schema)
        cls = _bounded_regexes(validator_class(self.schema))
        self._validator = cls(self.schema, format_checker=FORMAT_CHECKER)

    def errors(self, instance: Any) -> list[str]:
        found = sorted(self._validator.iter_errors(instance), key=lambda e: (len(e.path), e.path))
        messages = [f"{e.json_path}: {_short(e.message)}" for e in found[:MAX_MESSAGES]]
        if len(found) > MAX_MESSAGES:
            messages.append(f"... and {len(found) - MAX_MESSAGES} more")
        return messages

    def check(self, text: str) -> tuple[Any, list[str]]:
        try:
            value = parse_json_output(text)
        except ValueError as e:
            return None, [str(e)]
        return value, self.errors(value)


@cache
def _bounded_regexes(cls: type) -> type:
    """The dialect's validator with its regex keywords matched under a time bound."""
    return jsonschema.validators.extend(cls, patterns.KEYWORDS)


def parse_json_output(text: str) -> Any:
    """The JSON value in a model's output; a fenced ```json block is accepted for unconstrained
    outputs. Raises ValueError saying where parsing failed."""
    stripped = text.strip()
    try:
        return json.loads(stripped)
    except json.JSONDecodeError as e:
        fenced = _FENCE.search(stripped)
        if fenced:
            try:
                return json.loads(fenced.group(1))
            except json.JSONDecodeError:
                pass
        if not stripped:
            raise ValueError("output is empty, expected JSON") from None
        raise ValueError(f"output is not valid JSON: {e.msg} at char {e.pos}") from None


def _short(message: str, limit: int = 300) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."
