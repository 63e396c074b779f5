"""Schema regexes matched with a time bound, so a pathological `pattern` cannot hang validation.

jsonschema matches `pattern`, `patternProperties` and the keys `additionalProperties` weeds out
with Python's `re`, which backtracks without limit: `^(a+)+$` against 30 `a`s and a `!` takes
minutes. The validator (schemas.validate) uses these keyword functions instead: they match with
the `regex` module under `PATTERN_TIMEOUT_S` per match, and a match that runs out of time is a
validation error saying so (the output cannot be checked, so it is not valid), never a hang.
`regex` also reads `\\p{L}`-style classes, which JSON Schema's ECMA-262 regexes allow.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import regex
from jsonschema.exceptions import ValidationError

PATTERN_TIMEOUT_S = 0.25


class PatternTimeout(Exception):
    """A regex match that did not finish within PATTERN_TIMEOUT_S."""

    def __init__(self, pattern: str, text: str):
        shown = text if len(text) <= 40 else text[:37] + "..."
        super().__init__(
            f"pattern {pattern!r} did not finish matching {shown!r} within "
            f"{PATTERN_TIMEOUT_S} s (a pathological regex); the value cannot be checked"
        )


@lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> regex.Pattern:
    """The compiled regex; raises regex.error for a pattern it cannot read."""
    return regex.compile(pattern)


def pattern_error(pattern: str) -> str | None:
    """Why `pattern` cannot be used for validation, or None."""
    try:
        compile_pattern(pattern)
    except regex.error as e:
        return str(e)
    return None


def search(pattern: str, text: str) -> bool:
    """`re.search(pattern, text)` with a time bound; raises PatternTimeout past it."""
    try:
        return compile_pattern(pattern).search(text, timeout=PATTERN_TIMEOUT_S) is not None
    except TimeoutError:
        raise PatternTimeout(pattern, text) from None


def pattern(validator, patrn: str, instance: Any, schema: dict) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "string"):
        return
    try:
        if not search(patrn, instance):
            yield ValidationError(f"{instance!r} does not match {patrn!r}")
    except PatternTimeout as e:
        yield ValidationError(str(e))


def pattern_properties(validator, patterns: dict, instance: Any, schema: dict):
    if not validator.is_type(instance, "object"):
        return
    for patrn, subschema in patterns.items():
        for key, value in instance.items():
            try:
                matched = search(patrn, key)
            except PatternTimeout as e:
                yield ValidationError(str(e), path=[key])
                continue
            if matched:
                yield from validator.descend(value, subschema, path=key, schema_path=patrn)


def additional_properties(validator, extra: Any, instance: Any, schema: dict):
    if not validator.is_type(instance, "object"):
        return
    try:
        extras = sorted(_additional_keys(instance, schema), key=str)
    except PatternTimeout as e:
        yield ValidationError(str(e))
        return
    if validator.is_type(extra, "object"):
        for key in extras:
            yield from validator.descend(instance[key], extra, path=key)
    elif not extra and extras:
        joined = ", ".join(repr(k) for k in extras)
        if "patternProperties" in schema:
            verb = "does" if len(extras) == 1 else "do"
            regexes = ", ".join(repr(p) for p in sorted(schema["patternProperties"]))
            yield ValidationError(f"{joined} {verb} not match any of the regexes: {regexes}")
        else:
            verb = "was" if len(extras) == 1 else "were"
            yield ValidationError(
                f"Additional properties are not allowed ({joined} {verb} unexpected)"
            )


def _additional_keys(instance: dict, schema: dict) -> Iterator[str]:
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    for key in instance:
        if key not in properties and not any(search(p, key) for p in patterns):
            yield key


KEYWORDS = {
    "pattern": pattern,
    "patternProperties": pattern_properties,
    "additionalProperties": additional_properties,
}
