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

import copy
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import llguidance

from .schema_refs import Parts, json_path, subschemas

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
_ANNOTATIONS = {"title", "description", "default", "examples", "$comment", "$id", "$anchor",
                "$schema", "readOnly", "writeOnly", "deprecated", "$defs",
                "definitions"}  # fmt: skip
_MAX_ROUNDS = 32  # fixes tried per schema before giving up on the relaxed level


class CompileTimeout(RuntimeError):
    """A grammar compilation that did not finish within its bound."""


@dataclass(frozen=True)
class Relaxation:
    """One change that made the schema compile: where, what changed, and the engine's reason."""

    path: str
    change: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.change} ({self.reason})"


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
        try:
            grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=self.options)
        except ValueError as e:
            return f"not a JSON schema object: {e}", "", None
        remaining = self.deadline - time.monotonic()
        if remaining <= 0 or self.timed_out:
            self.timed_out = True
            return self.timeout_reason, grammar, None
        try:
            error, payload = self.check(grammar, remaining)
        except CompileTimeout:
            self.timed_out = True
            return self.timeout_reason, grammar, None
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
    warnings = ["oneOf is constrained as anyOf; validation checks exclusivity"] * _has_keyword(
        schema, "oneOf"
    )
    schema, (error, grammar, payload) = _compile_plain_formats(schema, attempt, warnings)
    if not error:
        return ConstraintPlan("exact", schema, grammar, (), tuple(warnings), payload=payload)
    exact_error, current, relaxations = error, schema, []
    for _ in range(_MAX_ROUNDS):
        if attempt.timed_out:
            break
        fixed = _fix(current, error, attempt) or _loosen(current, error, attempt)
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
        "none", ANY_JSON, grammar, (), (), exact_error, _first_line(reason), payload
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

        if fmt is None or not _nodes_where(schema, named):
            return schema, result
        warnings.append(f'format "{fmt}" is not constrained; validation checks it')
        schema = _edit(schema, named, lambda n: n.pop("format"))


# ---- fixes for the refusals the grammar engine names ------------------------------------------

Fix = tuple[Any, list[Relaxation]]


def _fix(schema: Any, error: str, attempt: _Attempts) -> Fix | None:
    for fixer in _FIXERS:
        fixed = fixer(schema, error, attempt)
        if fixed is not None and fixed[1]:
            return fixed
    return None


def _drop_unimplemented(schema: Any, error: str, attempt: _Attempts) -> Fix | None:
    found = re.match(r"Unimplemented keys: (\[.*\])", error)
    if not found:
        return None
    keys = set(json.loads(found.group(1)))
    changes = []

    def drop(node: dict, parts: Parts) -> None:
        for key in sorted(keys & set(node)):
            node.pop(key)
            reason = f"the grammar engine does not implement {key!r}"
            changes.append(Relaxation(json_path(parts), f"dropped {key!r}", reason))

    return _edit_with_paths(schema, lambda n: bool(keys & set(n)), drop), changes


def _drop_property_counts(schema: Any, error: str, attempt: _Attempts) -> Fix | None:
    if "min/maxProperties only supported" not in error:
        return None
    reason = "min/maxProperties with optional properties"
    changes = []

    def optional_keys(node: dict) -> bool:
        props = node.get("properties")
        optional = set(props or {}) - set(node.get("required") or [])
        return bool(optional) and ("minProperties" in node or "maxProperties" in node)

    def drop(node: dict, parts: Parts) -> None:
        for key in ("minProperties", "maxProperties"):
            if key in node:
                node.pop(key)
                changes.append(Relaxation(json_path(parts), f"dropped {key!r}", reason))

    return _edit_with_paths(schema, optional_keys, drop), changes


def _unlink_recursive_siblings(schema: Any, error: str, attempt: _Attempts) -> Fix | None:
    """A recursive ref next to other assertions (or inside an allOf) needs an intersection the
    engine cannot build: the node keeps the ref alone, a superset of what it was."""
    found = re.match(r"circular references with sibling keys are not supported: (\S+)", error)
    if not found:
        return None
    pointer = "#" + found.group(1).partition("#")[2]
    reason = "a recursive $ref with sibling keywords"
    changes = []

    def intersects(node: dict) -> bool:
        if node.get("$ref") == pointer:
            return bool(set(node) - _ANNOTATIONS - {"$ref"})
        branches = node.get("allOf")
        return isinstance(branches, list) and any(
            isinstance(b, dict) and b.get("$ref") == pointer for b in branches
        )

    def unlink(node: dict, parts: Parts) -> None:
        dropped = sorted(set(node) - _ANNOTATIONS - {"$ref"})
        for key in dropped:
            node.pop(key)
        node["$ref"] = pointer
        changes.append(
            Relaxation(json_path(parts), f"kept only the $ref, dropped {dropped}", reason)
        )

    return _edit_with_paths(schema, intersects, unlink), changes


def _fold_patterns(node: dict) -> None:
    """patternProperties -> additionalProperties that accepts what any pattern accepted (or
    what additionalProperties did): a superset, since every pattern key is still allowed."""
    branches = [s for s in node.pop("patternProperties").values()]
    extra = node.get("additionalProperties", True)
    if extra is True or extra == {} or any(b is True or b == {} for b in branches):
        node.pop("additionalProperties", None)
        return
    options = [b for b in branches if b is not False] + ([extra] if extra is not False else [])
    node["additionalProperties"] = {"anyOf": options} if options else False


def _fold_overlapping_patterns(schema: Any, error: str, attempt: _Attempts) -> Fix | None:
    if "are not disjoint" not in error:
        return None
    reason = _first_line(error)
    changes = []

    def named(node: dict) -> bool:
        patterns = node.get("patternProperties")
        return isinstance(patterns, dict) and sum(f"/{p}/" in error for p in patterns) >= 2

    def fold(node: dict, parts: Parts) -> None:
        _fold_patterns(node)
        change = "patternProperties folded into additionalProperties"
        changes.append(Relaxation(json_path(parts), change, reason))

    return _edit_with_paths(schema, named, fold), changes


def _drop_bad_patterns(schema: Any, error: str, attempt: _Attempts) -> Fix | None:
    """Regexes the engine cannot compile (look-around, back-references): each is tried alone,
    and those that fail are dropped (`pattern`) or folded (`patternProperties`)."""
    if "regex" not in error.lower():
        return None
    patterns = {p for _, node in _nodes_where(schema, lambda n: True) for p in _patterns_of(node)}
    bad = {p for p in patterns if attempt.fails({"type": "string", "pattern": p})}
    if not bad:
        return None
    changes = []

    def uses_bad(node: dict) -> bool:
        return bool(bad & set(_patterns_of(node)))

    def drop(node: dict, parts: Parts) -> None:
        if node.get("pattern") in bad:
            reason = f"regex {node['pattern']!r} is not supported by the grammar engine"
            node.pop("pattern")
            changes.append(Relaxation(json_path(parts), "dropped 'pattern'", reason))
        if bad & set(node.get("patternProperties") or {}):
            reason = "a patternProperties regex is not supported by the grammar engine"
            _fold_patterns(node)
            change = "patternProperties folded into additionalProperties"
            changes.append(Relaxation(json_path(parts), change, reason))

    return _edit_with_paths(schema, uses_bad, drop), changes


def _patterns_of(node: dict) -> list[str]:
    found = [node["pattern"]] if isinstance(node.get("pattern"), str) else []
    patterns = node.get("patternProperties")
    return found + (list(patterns) if isinstance(patterns, dict) else [])


def _narrow_intersections(schema: Any, error: str, attempt: _Attempts) -> Fix | None:
    """`schema too large`: intersections (allOf, the product of the anyOfs inside) grew past
    the engine's bound. The largest allOf keeps its first branch, until the schema compiles."""
    if "schema too large" not in error:
        return None
    candidates = sorted(
        _nodes_where(schema, lambda n: isinstance(n.get("allOf"), list) and len(n["allOf"]) > 1),
        key=lambda pn: -len(json.dumps(pn[1])),
    )
    current, changes = schema, []
    for parts, node in candidates:
        current = _replace(current, parts, {**node, "allOf": node["allOf"][:1]})
        change = f"allOf kept its first of {len(node['allOf'])} branches"
        changes.append(Relaxation(json_path(parts), change, "schema intersections too large"))
        if "schema too large" not in attempt(current)[0] or attempt.timed_out:
            break
    return (current, changes) if changes else None


_FIXERS = (
    _drop_unimplemented,
    _drop_property_counts,
    _unlink_recursive_siblings,
    _fold_overlapping_patterns,
    _drop_bad_patterns,
    _narrow_intersections,
)


# ---- the general fallback: loosen the smallest subschemas that fail ---------------------------


def _loose(node: Any, root: bool = False) -> Any:
    """The loosest schema of a node's own type (`{}` when it has none); the root keeps its
    $defs, where every ref points."""
    if not isinstance(node, dict):
        return {}
    out = {"type": node["type"]} if isinstance(node.get("type"), str | list) else {}
    if root:
        out.update({k: node[k] for k in ("$defs", "definitions") if k in node})
    return out


def _loosen(schema: Any, error: str, attempt: _Attempts) -> Fix | None:
    """Replace the fewest, deepest subschemas by `_loose` ones until the schema compiles:
    loosen a node's children; if that compiles, restore each child that still compiles whole
    and descend into the others; if it does not, the node itself is loosened."""
    if not isinstance(schema, dict):
        return None
    reason = _first_line(error)
    work = _replace(copy.deepcopy(schema), (), _loose(schema, root=True))
    if attempt.fails(work):
        return None
    changes: list[Relaxation] = []

    def refine(parts: Parts, work: Any) -> Any:
        original = _at(schema, parts)
        kids = [sub for sub, _ in subschemas(original)]
        shell = copy.deepcopy(original)
        for sub in kids:
            shell = _replace(shell, sub, _loose(_at(original, sub)))
        trial = _replace(work, parts, shell)
        if attempt.timed_out or attempt.fails(trial):
            loose = _loose(original, root=parts == ())
            changes.append(Relaxation(json_path(parts), f"replaced by {json.dumps(loose)}", reason))
            return work
        work, bad = trial, []
        for sub in kids:
            child = (*parts, *sub)
            restored = _replace(work, child, copy.deepcopy(_at(schema, child)))
            if attempt.timed_out or attempt.fails(restored):
                bad.append(child)
            else:
                work = restored
        for child in bad:
            work = refine(child, work)
        return work

    work = refine((), work)
    return work, changes


# ---- walking and editing ------------------------------------------------------------------------


def _nodes_where(schema: Any, keep: Callable[[dict], bool]) -> list[tuple[Parts, dict]]:
    if not isinstance(schema, dict):
        return []
    out, stack = [], [((), schema)]
    while stack:
        parts, node = stack.pop()
        if keep(node):
            out.append((parts, node))
        stack.extend(((*parts, *sub), child) for sub, child in subschemas(node))
    return out


def _edit(schema: Any, where: Callable[[dict], bool], change: Callable[[dict], Any]) -> Any:
    return _edit_with_paths(schema, where, lambda node, parts: change(node))


def _edit_with_paths(
    schema: Any, where: Callable[[dict], bool], change: Callable[[dict, Parts], Any]
) -> Any:
    """A copy of `schema` with `change(node, path)` applied to every subschema `where` holds."""
    schema = copy.deepcopy(schema)
    for parts, node in _nodes_where(schema, where):
        change(node, parts)
    return schema


def _at(schema: Any, parts: Parts) -> Any:
    for part in parts:
        schema = schema[part]
    return schema


def _replace(schema: Any, parts: Parts, value: Any) -> Any:
    """`schema` with the node at `parts` replaced (the path's containers copied, not shared)."""
    if not parts:
        return value
    head, rest = parts[0], parts[1:]
    container = copy.copy(schema)
    container[head] = _replace(schema[head], rest, value)
    return container


def _has_keyword(schema: Any, keyword: str) -> bool:
    return bool(_nodes_where(schema, lambda n: keyword in n))


def _first_line(text: str, limit: int = 200) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "unknown error"
    return line if len(line) <= limit else line[: limit - 3] + "..."
