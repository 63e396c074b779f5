"""Constraint levels: how much of a JSON Schema the grammar enforces, chosen per schema.

- **exact**: the grammar enforces the whole schema.
- **relaxed**: the grammar engine refuses part of the schema, so the grammar enforces the
  tightest superset it accepts: only the refused keywords are dropped (`not`, `if`/`then`/`else`,
  `minProperties` beside optional keys, ...), or only the offending subschema is replaced by a
  looser one (its `type`, or `{}`). Each change is recorded as a `Relaxation`.
- **none**: any JSON value, when nothing tighter compiles within the bound.

Whatever the level, outputs are validated against the full schema afterwards (schemas.validate);
a level only says how much of that the decoding already guarantees.

Compilation is bounded: every attempt runs against one deadline per schema (`budget_s`); an
attempt still running at the deadline is abandoned (llguidance builds grammars without holding
the GIL, so the caller goes on) and the schema drops to the next level with the reason recorded.
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

from .relaxation import Relaxation, edit, first_line, has_keyword, nodes_where, relax

__all__ = [
    "GRAMMAR_OPTIONS",
    "LEVELS",
    "CompileTimeout",
    "ConstraintPlan",
    "Relaxation",
    "plan_constraint",
    "plan_without_tokenizer",
    "run_bounded",
]

LEVELS = ("exact", "relaxed", "none")
# No free whitespace (a weak model can emit it forever) and compact separators, the form the
# embedded model is trained to write; oneOf is compiled as anyOf (validation checks the rest).
GRAMMAR_OPTIONS = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":",
                   "coerce_one_of": True}  # fmt: skip
ANY_JSON: dict[str, Any] = {}
_MAX_ROUNDS = 32  # fixes tried per schema before giving up on the relaxed level


class CompileTimeout(RuntimeError):
    """A grammar compilation that did not finish within its bound."""


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


# A check compiles a grammar within `timeout` seconds: ('' or the error, what it built).
Check = Callable[[str, float], tuple[str, Any]]


def run_bounded(fn: Callable[[], Any], timeout: float) -> Any:
    """`fn()` in a daemon thread, or CompileTimeout after `timeout` seconds (the thread is left
    to finish on its own: llguidance's own fuel and size limits end it)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller below
            box["error"] = e

    thread = threading.Thread(target=target, name="grammar-compile", daemon=True)
    thread.start()
    thread.join(max(timeout, 0.0))
    if thread.is_alive():
        raise CompileTimeout(f"grammar compilation took longer than {timeout:.3g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


class _Attempts:
    """Compiles candidate schemas against one deadline."""

    def __init__(self, check: Check, options: dict[str, Any], budget_s: float):
        self.check = check
        self.options = options
        self.budget_s = budget_s
        self.deadline = time.monotonic() + budget_s
        self.timed_out = False

    def __call__(self, schema: Any) -> tuple[str, str, Any]:
        """(error or '', grammar, payload) for `schema`."""
        if self.timed_out or self.deadline <= time.monotonic():
            self.timed_out = True
            return self.timeout_reason, "", None

        def translate() -> str:
            return llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=self.options)

        try:
            grammar = run_bounded(translate, self.deadline - time.monotonic())
            error, payload = self.check(grammar, self.deadline - time.monotonic())
        except CompileTimeout:
            self.timed_out = True
            return self.timeout_reason, "", None
        except ValueError as e:
            return f"not a JSON schema object: {e}", "", None
        return error.strip(), grammar, payload

    @property
    def timeout_reason(self) -> str:
        return f"grammar compilation exceeded the {self.budget_s:g} s bound per schema"

    def fails(self, schema: Any) -> bool:
        return bool(self(schema)[0])


def plan_constraint(
    schema: Any, check: Check, *, budget_s: float, max_bytes: int
) -> ConstraintPlan:
    """The tightest level `schema` (refs bundled, see schema_refs) compiles at, with `check`
    building each candidate grammar."""
    attempt = _Attempts(check, GRAMMAR_OPTIONS, budget_s)
    size = len(json.dumps(schema, ensure_ascii=False))
    if size > max_bytes:
        reason = f"the schema is {size} bytes, over the {max_bytes}-byte bound for grammars"
        return _none(attempt, reason, reason)
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
    return _none(attempt, exact_error, error)


def plan_without_tokenizer(
    schema: Any, *, budget_s: float = 5.0, max_bytes: int = 1 << 20
) -> ConstraintPlan:
    """The level of `schema` as the grammar engine alone judges it (no vocabulary): what
    `flashbeam validate` reports before a model is loaded."""
    limits = llguidance.LLParserLimits()

    def check(grammar: str, timeout: float) -> tuple[str, Any]:
        validate = llguidance.LLMatcher.validate_grammar_with_warnings
        is_error, messages = run_bounded(lambda: validate(grammar, None, limits=limits), timeout)
        return (messages[0] if is_error and messages else ""), None

    return plan_constraint(schema, check, budget_s=budget_s, max_bytes=max_bytes)


def _none(attempt: _Attempts, exact_error: str, reason: str) -> ConstraintPlan:
    attempt.deadline = time.monotonic() + attempt.budget_s  # plain JSON always gets its own
    attempt.timed_out = False
    error, grammar, payload = attempt(ANY_JSON)
    if error:
        raise RuntimeError(f"the grammar for any JSON value does not compile: {error}")
    return ConstraintPlan(
        "none", ANY_JSON, grammar, (), (), exact_error, first_line(reason), payload
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
