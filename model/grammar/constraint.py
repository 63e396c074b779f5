"""Constraint levels: how much of a JSON Schema the grammar enforces, chosen per schema.

- **exact**: the grammar enforces the whole schema.
- **relaxed**: the grammar engine refuses part of the schema, so the grammar enforces the
  tightest superset it accepts: only the refused keywords are dropped (`not`, `if`/`then`/`else`,
  `minProperties` beside optional keys, ...), or only the offending subschema is replaced by a
  looser one (its `type`, or `{}`). Each change is recorded as a `Relaxation`.
- **none**: any JSON value, when nothing tighter compiles within the bound.

Whatever the level, outputs are validated against the full schema afterwards (schemas.validate);
a level only says how much of that the decoding already guarantees.

Compilation is bounded: all attempts of a schema run against one deadline (`budget_s`, see
plan_bounded), a large schema's in a worker thread whose build is abandoned at the deadline; the
schema then drops to `none` with the reason recorded.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import llguidance

from flashbeam.model.grammar.relaxation import (
    Relaxation,
    edit,
    first_line,
    has_keyword,
    nodes_where,
    relax,
)

__all__ = [
    "GRAMMAR_OPTIONS",
    "LEVELS",
    "ConstraintPlan",
    "Relaxation",
    "none_plan",
    "plan_bounded",
    "plan_constraint",
    "plan_without_tokenizer",
]

LEVELS = ("exact", "relaxed", "none")
# No free whitespace (a weak model can emit it forever) and compact separators, the form the
# embedded model is trained to write; oneOf is compiled as anyOf (validation checks the rest).
GRAMMAR_OPTIONS = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":",
                   "coerce_one_of": True}  # fmt: skip
ANY_JSON: dict[str, Any] = {}
INLINE_BYTES = 8 << 10  # schemas up to this size (JSON text) compile in the caller's thread
_MAX_ROUNDS = 32  # fixes tried per schema before giving up on the relaxed level


@dataclass(frozen=True)
class ConstraintPlan:
    """The level a schema is enforced at and the schema the grammar enforces there.

    `exact_error` is why exact failed ('' at exact); `reason` is why the level is `none`.
    `payload` is what the check returned for the final grammar (the compiled matcher).
    """

    level: str
    schema: Any
    grammar: str
    relaxations: tuple[Relaxation, ...] = ()
    warnings: tuple[str, ...] = ()
    exact_error: str = ""
    reason: str = ""
    payload: Any = field(default=None, repr=False, compare=False)

    @property
    def relaxed(self) -> tuple[str, ...]:
        return tuple(str(r) for r in self.relaxations)

    def exact_refusal(self, name: str) -> str:
        """The refusal for a schema that must be enforced exactly but cannot be."""
        return (
            f'schema "{name}" cannot be used for constrained decoding: '
            f"{self.exact_error or self.reason}. Simplify the schema, or run unconstrained with "
            "validation and retries."
        )


# A check builds a grammar: ('' or the engine's error, what it built).
Check = Callable[[str], tuple[str, Any]]


class _Attempts:
    """Compiles candidate schemas until one deadline; past it every attempt reports the bound."""

    def __init__(self, check: Check, budget_s: float):
        self.check = check
        self.budget_s = budget_s
        self.deadline = time.monotonic() + budget_s
        self.timed_out = False

    def __call__(self, schema: Any) -> tuple[str, str, Any]:
        """(error or '', grammar, payload) for `schema`."""
        if self.timed_out or self.deadline <= time.monotonic():
            self.timed_out = True
            return self.timeout_reason, "", None
        try:
            grammar = llguidance.LLMatcher.grammar_from_json_schema(
                schema, overrides=GRAMMAR_OPTIONS
            )
        except ValueError as e:
            return f"not a JSON schema object: {e}", "", None
        error, payload = self.check(grammar)
        return error.strip(), grammar, payload

    @property
    def timeout_reason(self) -> str:
        return timeout_reason(self.budget_s)

    def fails(self, schema: Any) -> bool:
        return bool(self(schema)[0])


def timeout_reason(budget_s: float) -> str:
    return f"grammar compilation exceeded the {budget_s:g} s bound per schema"


def plan_constraint(
    schema: Any, check: Check, *, budget_s: float, max_bytes: int, size: int | None = None
) -> ConstraintPlan:
    """The tightest level `schema` (refs bundled, see schema_refs) compiles at, with `check`
    building each candidate grammar; no new attempt starts past `budget_s` (plan_bounded also
    stops waiting for one that runs past it). `size` is the schema's JSON length if known."""
    attempt = _Attempts(check, budget_s)
    size = len(json.dumps(schema, ensure_ascii=False)) if size is None else size
    if size > max_bytes:
        reason = f"the schema is {size} bytes, over the {max_bytes}-byte bound for grammars"
        return none_plan(check, reason, reason)
    warnings = ["oneOf is constrained as anyOf; validation checks exclusivity"] * has_keyword(
        schema, "oneOf"
    )
    schema, (error, grammar, payload) = _compile_plain_formats(schema, attempt, warnings)
    if not error:
        return ConstraintPlan("exact", schema, grammar, (), tuple(warnings), payload=payload)
    exact_error, current, relaxations = error, schema, []
    for _ in range(_MAX_ROUNDS):
        if attempt.timed_out:
            break
        fixed = relax(current, error, attempt)
        if fixed is None:
            break
        current, changes = fixed
        relaxations += changes
        current, (error, grammar, payload) = _compile_plain_formats(current, attempt, warnings)
        if not error:
            return ConstraintPlan(
                "relaxed", current, grammar, tuple(relaxations), tuple(warnings), exact_error,
                payload=payload,
            )  # fmt: skip
    return none_plan(check, exact_error, error)


def plan_bounded(
    schema: Any,
    check: Check,
    *,
    budget_s: float,
    max_bytes: int,
    then: Callable[[ConstraintPlan], Any] | None = None,
) -> tuple[ConstraintPlan, Any]:
    """`plan_constraint` in a worker thread, waited for at most `budget_s` seconds, then
    `then(plan)` in the same thread within what is left of it. Returns the plan (the `none`
    plan when it was not ready in time) and what `then` returned (None if it was not done).

    A build still running at the deadline is abandoned: llguidance builds grammars without
    holding the GIL, so the caller goes on, and its own fuel and size limits end the build.
    Schemas of at most INLINE_BYTES run in the caller's thread: their single builds take
    milliseconds (llguidance compiles lazily and bounds its lexer by fuel), and the deadline is
    still checked before every attempt."""
    box: dict[str, Any] = {}
    size = len(json.dumps(schema, ensure_ascii=False))

    def work() -> None:
        try:
            box["plan"] = plan_constraint(
                schema, check, budget_s=budget_s, max_bytes=max_bytes, size=size
            )
            if then is not None:
                box["then"] = then(box["plan"])
        except BaseException as e:  # noqa: BLE001 - re-raised by the waiting caller
            box["error"] = e

    if size <= INLINE_BYTES:
        work()  # small schemas build in milliseconds: a thread would cost more than the build
    else:
        thread = threading.Thread(target=work, name="grammar-compile", daemon=True)
        thread.start()
        thread.join(budget_s)
    if "error" in box:
        raise box["error"]
    if "plan" not in box:
        reason = timeout_reason(budget_s)
        return none_plan(check, reason, reason), None
    return box["plan"], box.get("then")


def plan_without_tokenizer(
    schema: Any, *, budget_s: float = 5.0, max_bytes: int = 1 << 20
) -> ConstraintPlan:
    """The level of `schema` as the grammar engine alone judges it (no vocabulary): what
    `flashbeam validate` reports before a model is loaded."""
    limits = llguidance.LLParserLimits()

    def check(grammar: str) -> tuple[str, Any]:
        validate = llguidance.LLMatcher.validate_grammar_with_warnings
        is_error, messages = validate(grammar, None, limits=limits)
        return (messages[0] if is_error and messages else ""), None

    return plan_bounded(schema, check, budget_s=budget_s, max_bytes=max_bytes)[0]


def none_plan(check: Check, exact_error: str, reason: str) -> ConstraintPlan:
    """Plain JSON: any value (its grammar is small and always compiles)."""
    any_json = dict(ANY_JSON)
    grammar = llguidance.LLMatcher.grammar_from_json_schema(any_json, overrides=GRAMMAR_OPTIONS)
    error, payload = check(grammar)
    if error:
        raise RuntimeError(f"the grammar for any JSON value does not compile: {error}")
    return ConstraintPlan(
        "none", any_json, grammar, (), (), exact_error, first_line(reason), payload
    )


_UNKNOWN_FORMAT = re.compile(r"^Unknown format: (.+)$")


def _compile_plain_formats(
    schema: Any, attempt: _Attempts, warnings: list[str]
) -> tuple[Any, tuple[str, str, Any]]:
    """Compile `schema`; an unknown `format` is an annotation (JSON Schema 2020-12), so it is
    dropped (strings are generated plain, validation still checks the formats it knows) without
    changing the level. Returns the schema compiled and the attempt's result."""
    while True:
        result = attempt(schema)
        found = _UNKNOWN_FORMAT.match(result[0])
        fmt = found.group(1).strip() if found else None

        def named(node: dict, fmt: str | None = fmt) -> bool:
            return node.get("format") == fmt

        if fmt is None or not nodes_where(schema, named):
            return schema, result
        warnings.append(f'format "{fmt}" is not constrained; validation checks it')
        schema = edit(schema, named, lambda n: n.pop("format"))
