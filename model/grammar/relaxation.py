"""Relaxations: the tightest superset of a JSON Schema that the grammar engine accepts.

`relax(schema, error, attempt)` makes one step towards a schema that compiles, from the engine's
refusal `error`: a fix for the refusals it names (drop the keyword it does not implement, fold
overlapping patternProperties, ...), else a search for the fewest, deepest subschemas to loosen.
Each change is a superset of what it replaces, so a valid output is never blocked, and is
recorded as a `Relaxation` (path, change, reason). model/constraint.py drives the steps.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from flashbeam.model.grammar.refs import Parts, json_path, subschemas

_ANNOTATIONS = {"title", "description", "default", "examples", "$comment", "$id", "$anchor",
                "$schema", "readOnly", "writeOnly", "deprecated", "$defs",
                "definitions"}  # fmt: skip


class Attempt(Protocol):
    """Compiles a candidate schema: `attempt(schema)[0]` is the error ('' when it compiles)."""

    timed_out: bool

    def __call__(self, schema: Any) -> tuple[str, str, Any]: ...

    def fails(self, schema: Any) -> bool: ...


@dataclass(frozen=True)
class Relaxation:
    """One change that made the schema compile: where, what changed, and the engine's reason."""

    path: str
    change: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.change} ({self.reason})"


Fix = tuple[Any, list[Relaxation]]


def relax(schema: Any, error: str, attempt: Attempt) -> Fix | None:
    """One relaxation step for the refusal `error`: (the relaxed schema, its changes), or None
    when nothing looser than the whole schema compiles."""
    for fixer in _FIXERS:
        fixed = fixer(schema, error, attempt)
        if fixed is not None and fixed[1]:
            return fixed
    return _loosen(schema, error, attempt)


# ---- fixes for the refusals the grammar engine names ------------------------------------------


def _drop_unimplemented(schema: Any, error: str, attempt: Attempt) -> Fix | None:
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

    return edit_with_paths(schema, lambda n: bool(keys & set(n)), drop), changes


def _drop_property_counts(schema: Any, error: str, attempt: Attempt) -> Fix | None:
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

    return edit_with_paths(schema, optional_keys, drop), changes


def _unlink_recursive_siblings(schema: Any, error: str, attempt: Attempt) -> Fix | None:
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

    return edit_with_paths(schema, intersects, unlink), changes


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


def _fold_overlapping_patterns(schema: Any, error: str, attempt: Attempt) -> Fix | None:
    if "are not disjoint" not in error:
        return None
    reason = first_line(error)
    changes = []

    def named(node: dict) -> bool:
        patterns = node.get("patternProperties")
        return isinstance(patterns, dict) and sum(f"/{p}/" in error for p in patterns) >= 2

    def fold(node: dict, parts: Parts) -> None:
        _fold_patterns(node)
        change = "patternProperties folded into additionalProperties"
        changes.append(Relaxation(json_path(parts), change, reason))

    return edit_with_paths(schema, named, fold), changes


def _drop_bad_patterns(schema: Any, error: str, attempt: Attempt) -> Fix | None:
    """Regexes the engine cannot compile (look-around, back-references): each is tried alone,
    and those that fail are dropped (`pattern`) or folded (`patternProperties`)."""
    if "regex" not in error.lower():
        return None
    patterns = {p for _, node in nodes_where(schema, lambda n: True) for p in _patterns_of(node)}
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

    return edit_with_paths(schema, uses_bad, drop), changes


def _patterns_of(node: dict) -> list[str]:
    found = [node["pattern"]] if isinstance(node.get("pattern"), str) else []
    patterns = node.get("patternProperties")
    return found + (list(patterns) if isinstance(patterns, dict) else [])


def _narrow_intersections(schema: Any, error: str, attempt: Attempt) -> Fix | None:
    """`schema too large`: intersections (allOf, the product of the anyOfs inside) grew past
    the engine's bound. The largest allOf keeps its first branch, until the schema compiles."""
    if "schema too large" not in error:
        return None
    candidates = sorted(
        nodes_where(schema, lambda n: isinstance(n.get("allOf"), list) and len(n["allOf"]) > 1),
        key=lambda pn: -len(json.dumps(pn[1])),
    )
    current, changes = schema, []
    for parts, _ in candidates:
        try:
            node = _at(current, parts)
        except (LookupError, TypeError):  # inside a branch an earlier step dropped
            continue
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


def _loosen(schema: Any, error: str, attempt: Attempt) -> Fix | None:
    """Replace the fewest, deepest subschemas by `_loose` ones until the schema compiles:
    loosen a node's children; if that compiles, restore each child that still compiles whole
    and descend into the others; if it does not, the node itself is loosened."""
    if not isinstance(schema, dict):
        return None
    reason = first_line(error)
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
            change = f"replaced by {json.dumps(_loose(original))}"
            changes.append(Relaxation(json_path(parts), change, reason))
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


def nodes_where(schema: Any, keep: Callable[[dict], bool]) -> list[tuple[Parts, dict]]:
    if not isinstance(schema, dict):
        return []
    out, stack = [], [((), schema)]
    while stack:
        parts, node = stack.pop()
        if keep(node):
            out.append((parts, node))
        stack.extend(((*parts, *sub), child) for sub, child in subschemas(node))
    return out


def edit(schema: Any, where: Callable[[dict], bool], change: Callable[[dict], Any]) -> Any:
    return edit_with_paths(schema, where, lambda node, parts: change(node))


def edit_with_paths(
    schema: Any, where: Callable[[dict], bool], change: Callable[[dict, Parts], Any]
) -> Any:
    """A copy of `schema` with `change(node, path)` applied to every subschema `where` holds."""
    schema = copy.deepcopy(schema)
    for parts, node in nodes_where(schema, where):
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


def has_keyword(schema: Any, keyword: str) -> bool:
    return bool(nodes_where(schema, lambda n: keyword in n))


def first_line(text: str, limit: int = 200) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "unknown error"
    return line if len(line) <= limit else line[: limit - 3] + "..."
