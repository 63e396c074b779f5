"""Grounded fields: constrain chosen fields of a JSON Schema to values the source text states.

    schema = ground_schema(task_schema, document_text, ["vendor", "total_amount", "issue_date"])

For each named field, `ground_schema` collects the values the text writes and replaces the
field's schema with an `enum` of those that the field's own schema accepts, so constrained
decoding can only copy them (and the result still validates against the original schema):

- a `"format": "date"` string: every date the text writes, in any common layout
  ("2023-04-02", "17.02.2023", "Nov 19, 2022", "31st July 2024", "14-Aug-2023"), as YYYY-MM-DD;
  a numeric date that reads both ways (03/04/2023) gives both dates;
- a number or integer: every number the text writes ("$1,486.56", "SEK 361,12", "1 024",
  Indian "1,13,400.00", "RM42.90" with its currency against it), with both readings of an
  ambiguous separator ("1,024" is 1024 or 1.024); one marked
  `"x-ground": "count"` (a number of things) only the whole numbers among them that are not
  a percentage, a time of day or part of a date;
- any other string: every run of up to `max_words` consecutive words on one line that does not
  cross a layout gap (two or more spaces, a tab, a `|`), with and without its outer punctuation;
- a string marked `"x-ground": "line"` (a title line): every whole line, and each part of one
  between layout gaps, as written, without a leading markdown mark (`## `, `- `) and without
  its outer punctuation; one marked `"x-ground": "heading"`: the lines that stand as headings
  (`text_headings`); one marked `"x-ground": "currency"`: the ISO 4217 codes the text's
  currency codes, symbols and words support (`currency.text_currencies`: `RM` is MYR, `€`
  EUR, a bare `$` any dollar), among them the ones its own `enum` lists. `"x-ground": "span"`
  is the default above. The mark only chooses the candidates of a field that is named in
  `fields`.

An object marked `"x-ground": "sentence"` (a figure's name and value, a line item's description
and amount) takes its grounded properties from one sentence of the text together: the object
becomes an `anyOf` with one alternative per sentence that states a value for each of them
(`text_sentences` says what a sentence is), so a name cannot be paired with another sentence's
number. When no sentence states them all, each property is grounded in the whole text alone.

An array marked `"x-ground": "ordered"` (a chunk's headings) takes each of its grounded values
at most once, in the order the text states them: it becomes the `enum` of the lists it may be
(up to `MAX_ORDERED` of them; beyond, its items are grounded alone).

A field is named by its property path: `vendor`, or `figures.value` for a property of the
objects in an array (array items are grounded one by one). `null` stays allowed where the field
allowed it. A field for which the text states no acceptable value is held to `null` where it
accepts null, and an array of such values to `[]` where it may be empty; one that must hold a
value keeps its original schema, and so does a field with an `enum` or `const` of its own: the
grammar already bounds it.
"""

from __future__ import annotations

import calendar
import copy
import datetime as dt
import itertools
import json
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import jsonschema

from flashbeam.schemas.currency import text_currencies, unglue_currency
from flashbeam.schemas.loading import FORMAT_CHECKER

MAX_WORDS = 8

_MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_name) if name}
_MONTHS.update({name.lower(): i for i, name in enumerate(calendar.month_abbr) if name})
_MONTHS["sept"] = 9
_MONTH = "(?P<month>" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_DAY = r"(?P<day>\d{1,2})(?:st|nd|rd|th)?"
_YEAR = r"(?P<year>\d{4})"
_SEP = r"[\s,./-]*"
_DATE_PATTERNS = [
    re.compile(r"\b(?P<year>\d{4})[-/.](?P<a>\d{1,2})[-/.](?P<b>\d{1,2})\b"),
    re.compile(r"\b(?P<a>\d{1,2})[-/.](?P<b>\d{1,2})[-/.](?P<year>\d{4}|\d{2})\b"),
    re.compile(rf"\b{_DAY}(?:\s+of)?{_SEP}{_MONTH}{_SEP}{_YEAR}\b", re.IGNORECASE),
    re.compile(rf"\b{_MONTH}{_SEP}{_DAY},?{_SEP}{_YEAR}\b", re.IGNORECASE),
    re.compile(rf"\b{_YEAR}[\s./-]{_MONTH}[\s./-]{_DAY}\b", re.IGNORECASE),
]
_NUMBERS = [
    re.compile(r"(?<![\w.,])\d+(?:[,.']\d+)*"),
    re.compile(r"(?<![\w.,])\d{1,3}(?:[ \u00a0\u202f]\d{3})+(?:[.,]\d+)?"),  # "1 024,50"
]
_NOT_COUNTS = re.compile(
    r"\d+(?:[,.]\d+)*\s?(?:%|percent\b|per cent\b)"  # a percentage
    r"|(?<![\d:])\d{1,2}:\d{2}(?::\d{2})?(?![\d:])",  # a time of day
    re.IGNORECASE,
)
_GAP = re.compile(r"\s{2,}|\t|\|")
_OUTER = "\"'()[]{}<>,;:!?*#"
_LINE_MARK = re.compile(r"^(?:#{1,6}\s+|[-*>\u2022]\s+)")
# The values of a string field's "x-ground" mark; a "currency" field may have an enum of its own.
STRING_KINDS = ("span", "line", "heading", "currency")
NUMBER_KINDS = ("number", "count")  # the values of a number field's "x-ground" mark
OBJECT_KINDS = ("sentence",)  # the values of an object's "x-ground" mark
ARRAY_KINDS = ("ordered",)  # the values of an array's "x-ground" mark
MAX_ORDERED = 256  # the most lists an "ordered" array is spelled out as (else items alone)
# Where `text_sentences` cuts: after . ! ? (and a closing quote or bracket) and whitespace, unless
# the mark ends a list number ("2. "); at a blank line; before a line that is a list item or row.
_SENTENCE_END = re.compile(
    r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))(?<!^\d\.)(?<!^\d\d\.)\s+"
    r"|\n\s*\n"
    r"|\n(?=[ \t]*(?:[-*+>\u2022|]|\d{1,2}[.)])\s)",
    re.MULTILINE,
)


def ground_schema(schema: dict[str, Any], text: str, fields: Sequence[str]) -> dict[str, Any]:
    """A copy of `schema` whose `fields` accept only values `text` states (module docstring)."""
    grounded = copy.deepcopy(schema)
    values = _Values(text)
    together = _sentence_objects(grounded, fields)
    alone = [path for path in fields if not any(path in paths for _, paths in together)]
    for node, paths in together:
        alternatives = _sentence_alternatives(node, [p.rsplit(".", 1)[-1] for p in paths], text)
        if alternatives:
            node.clear()
            node["anyOf"] = alternatives
        else:
            alone.extend(paths)
    for path in alone:
        for node in property_nodes(grounded, path, items=False):
            item = _items(node)
            if field_kind(item) is None:
                continue
            if not _ground_node(item, values):
                _none_stated(node, item)
            elif node is not item and array_kind(node) == "ordered":
                _in_text_order(node, item["enum"])
    return grounded


def _in_text_order(node: dict[str, Any], choices: list[Any]) -> None:
    """Spell out an "ordered" array of grounded values as the enum of the lists it may be: each
    choice at most once, in the order the text states them, within the array's own bounds (a
    model left to itself repeats an entry or skips the one after it). When there would be more
    than `MAX_ORDERED` such lists, the array keeps its grounded items alone."""
    values = [v for v in choices if v is not None]
    low = node.get("minItems", 0)
    high = min(node.get("maxItems", len(values)), len(values))
    if low > high or sum(math.comb(len(values), n) for n in range(low, high + 1)) > MAX_ORDERED:
        return
    lists: list[Any] = [
        list(c) for n in range(low, high + 1) for c in itertools.combinations(values, n)
    ]
    if "null" in json_types(node):
        lists.append(None)
    node.clear()
    node["enum"] = lists


def _none_stated(node: dict[str, Any], item: dict[str, Any]) -> None:
    """A grounded field the text states no acceptable value for: an array of them that may be
    empty is held empty and a field that accepts null is held null; one that must hold a value
    keeps its schema."""
    if node is not item:
        if not node.get("minItems"):
            node["maxItems"] = 0
    elif "null" in json_types(item):
        item.clear()
        item["type"] = "null"


def _ground_node(node: dict[str, Any], values: _Values) -> bool:
    """Replace `node` by the enum of the values it accepts; False (node kept) when there are
    none."""
    choices = values.for_schema(node)
    if choices:
        node.clear()
        node["enum"] = choices
    return bool(choices)


def _sentence_objects(
    schema: dict[str, Any], fields: Sequence[str]
) -> list[tuple[dict[str, Any], list[str]]]:
    """The objects marked "x-ground": "sentence" that have grounded properties, each with the
    paths of those properties."""
    found: dict[int, tuple[dict[str, Any], list[str]]] = {}
    for path in fields:
        parent, _, name = path.rpartition(".")
        if not parent:
            continue
        for node in property_nodes(schema, parent):
            if object_kind(node) and name in node.get("properties", {}):
                found.setdefault(id(node), (node, []))[1].append(path)
    return list(found.values())


def _sentence_alternatives(node: dict[str, Any], names: list[str], text: str) -> list[Any]:
    """One copy of the object `node` per sentence of `text` that states a value for each of its
    properties `names`, those properties grounded in that sentence; repeats dropped."""
    plain = {k: v for k, v in node.items() if k != "x-ground"}
    names = [name for name in names if field_kind(plain["properties"][name]) is not None]
    alternatives: dict[str, dict[str, Any]] = {}
    for sentence in text_sentences(text) if names else []:
        values = _Values(sentence)
        alternative = copy.deepcopy(plain)
        properties = alternative["properties"]
        if all(_ground_node(properties[name], values) for name in names):
            alternatives.setdefault(json.dumps(alternative, sort_keys=True), alternative)
    return list(alternatives.values())


def text_dates(text: str) -> list[str]:
    """Every date `text` writes, as YYYY-MM-DD, in order of first appearance."""
    found: dict[str, int] = {}
    for pattern in _DATE_PATTERNS:
        for m in pattern.finditer(text):
            for date in _readings(m):
                found.setdefault(date.isoformat(), m.start())
    return sorted(found, key=found.__getitem__)


def text_numbers(text: str) -> list[int | float]:
    """Every number `text` writes (each reading of an ambiguous separator), first seen first."""
    found: dict[float, int | float] = {}
    text = unglue_currency(text)
    for pattern in _NUMBERS:
        for m in pattern.finditer(text):
            for value in _number_readings(m.group()):
                found.setdefault(value, int(value) if value.is_integer() else value)
    return list(found.values())


def text_counts(text: str) -> list[int]:
    """Every whole number `text` writes as an amount (`text_numbers`' integer readings), leaving
    out percentages (`28%`, `12 percent`), times of day (`06:01`) and the parts of dates."""
    masked = list(text)
    spans = [m.span() for m in _NOT_COUNTS.finditer(text)]
    spans += [m.span() for pattern in _DATE_PATTERNS for m in pattern.finditer(text)]
    for start, end in spans:
        masked[start:end] = " " * (end - start)
    return [v for v in text_numbers("".join(masked)) if isinstance(v, int)]


def text_spans(text: str, max_words: int = MAX_WORDS) -> list[str]:
    """Every run of 1..`max_words` words on one line between layout gaps, with and without its
    outer punctuation; first seen first."""
    found: dict[str, None] = {}
    for line in text.splitlines():
        for segment in _GAP.split(line):
            words = segment.split()
            for i in range(len(words)):
                for j in range(i + 1, min(i + max_words, len(words)) + 1):
                    span = " ".join(words[i:j])
                    found.setdefault(span)
                    trimmed = span.strip(_OUTER)
                    if trimmed:
                        found.setdefault(trimmed)
                        found.setdefault(trimmed.rstrip("."))
    found.pop("", None)
    return list(found)


def text_sentences(text: str) -> list[str]:
    """The sentences of `text`: its paragraphs (parted by blank lines) cut after each `.`, `!`
    or `?` (and a closing quote or bracket) that whitespace follows, and before each line that
    starts a list item (`- `, `* `, `1. `) or table row (`| `). Another line break does not end
    one, so a hard-wrapped sentence stays whole. In order, empty ones dropped."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def text_lines(text: str) -> list[str]:
    """Every line of `text`, and each part of it between layout gaps, whole: as written, without
    a leading markdown mark (`## `, `- `, `> `), and without its outer punctuation; first seen
    first."""
    found: dict[str, None] = {}
    for line in text.splitlines():
        segments = _GAP.split(line)
        for segment in [line, *segments] if len(segments) > 1 else segments:
            whole = segment.strip()
            unmarked = _LINE_MARK.sub("", whole)
            for value in (whole, unmarked, unmarked.strip(_OUTER)):
                found.setdefault(value)
    found.pop("", None)
    return list(found)


_RULE = re.compile(r"^\s*(?:[=~_*#-]\s*){3,}$")  # an underline or a horizontal rule
_HEADING_MARK = re.compile(r"^\s*(?:#{1,6}\s+(?P<hashed>.*\S)|\*\*(?P<bold>[^*].*?)\*\*)\s*$")
_NOT_HEADING = re.compile(r"^\s*(?:[-*+>\u2022|]\s)|[.!?,;]\W*$")  # a list item or row; a sentence
HEADING_WORDS = 12


def text_headings(text: str) -> list[str]:
    """The lines of `text` that stand as headings, each once, as written without its markdown
    mark: a line marked as one (`## Name`, `**Name**`), an underlined one (`Name` over `----` or
    `====`), or a paragraph of one line (a blank line or the start before it, a blank line or
    the end after it); of at most `HEADING_WORDS` words, not a list item or table row and not
    ending like a sentence (`.`, `!`, `?`, `,`, `;`). First seen first."""
    lines = text.splitlines()

    def blank(i: int) -> bool:
        return i < 0 or i >= len(lines) or not lines[i].strip() or bool(_RULE.match(lines[i]))

    found: dict[str, None] = {}
    for i, line in enumerate(lines):
        if not line.strip() or _RULE.match(line) or _NOT_HEADING.search(line):
            continue
        marked = _HEADING_MARK.match(line)
        underlined = i + 1 < len(lines) and _RULE.match(lines[i + 1])
        if len(line.split()) <= HEADING_WORDS and (
            marked or underlined or (blank(i - 1) and blank(i + 1))
        ):
            found.setdefault(
                (marked.group("hashed") or marked.group("bold")) if marked else line.strip()
            )
    return list(found)


_SOURCES: dict[str, Callable[[str], list[Any]]] = {
    "date": text_dates,
    "number": text_numbers,
    "count": text_counts,
    "span": text_spans,
    "line": text_lines,
    "heading": text_headings,
    "currency": text_currencies,
}


class _Values:
    """The candidate values of one text, computed once per kind."""

    def __init__(self, text: str):
        self.text = text
        self._cache: dict[str, list[Any]] = {}

    def of(self, kind: str) -> list[Any]:
        if kind not in self._cache:
            self._cache[kind] = _SOURCES[kind](self.text)
        return self._cache[kind]

    def for_schema(self, node: dict[str, Any]) -> list[Any]:
        """The text's values `node` accepts, with null when it accepts null; [] for a node
        that is not a plain string or number, or already has an enum/const."""
        kind = field_kind(node)
        if kind is None:
            return []
        accepts = _acceptor(node)
        choices = [v for v in self.of(kind) if accepts(v)]
        if choices and "null" in json_types(node):
            choices.append(None)
        return choices


def field_kind(node: dict[str, Any]) -> str | None:
    """The candidates (`_SOURCES`) a grounded field takes: a `date` string's dates; a number's
    numbers, or counts when marked `"x-ground": "count"`; another string's spans, or its lines
    or headings when marked `"x-ground": "line"` or `"heading"`. None for a node that is not a
    plain string or number, or has an enum or const of its own (except a field marked
    `"x-ground": "currency"`, whose enum lists the codes it takes). A mark the field's type
    does not take is a ValueError."""
    if "const" in node or ("enum" in node and node.get("x-ground") != "currency"):
        return None
    types = json_types(node)
    if "number" in types or "integer" in types:
        return _marked(node, NUMBER_KINDS, "number")
    if "string" in types:
        return "date" if node.get("format") == "date" else _marked(node, STRING_KINDS, "string")
    return None


def _marked(node: dict[str, Any], kinds: tuple[str, ...], what: str) -> str:
    kind = node.get("x-ground", kinds[0])
    if kind not in kinds:
        raise ValueError(
            f'"x-ground": {kind!r} is not a grounding kind of a {what}; use one of '
            f"{', '.join(kinds)}"
        )
    return kind


def object_kind(node: dict[str, Any]) -> str | None:
    """How an object's grounded properties are drawn: "sentence" (all from one sentence) when
    it is marked so, None (each from the whole text) when it is not marked."""
    return _container_mark(node, OBJECT_KINDS, "an object", "its properties")


def array_kind(node: dict[str, Any]) -> str | None:
    """How an array of grounded values is drawn: "ordered" (each value at most once, in the
    text's order) when it is marked so, None (any of them, in any order) when it is not."""
    return _container_mark(node, ARRAY_KINDS, "an array", "its items")


def _container_mark(
    node: dict[str, Any], kinds: tuple[str, ...], what: str, inner: str
) -> str | None:
    kind = node.get("x-ground")
    if kind is not None and kind not in kinds:
        raise ValueError(
            f'"x-ground": {kind!r} on {what} is not a grounding kind; use one of '
            f"{', '.join(kinds)}, or mark {inner} instead"
        )
    return kind


_BOUNDS = {
    "minLength": lambda v, n: len(v) >= n,
    "maxLength": lambda v, n: len(v) <= n,
    "minimum": lambda v, n: v >= n,
    "maximum": lambda v, n: v <= n,
    "exclusiveMinimum": lambda v, n: v > n,
    "exclusiveMaximum": lambda v, n: v < n,
}
_ANNOTATIONS = {"type", "format", "title", "description", "default", "examples", "$comment"}


def _acceptor(node: dict[str, Any]) -> Callable[[Any], bool]:
    """Whether `node` accepts a value, for candidates of the node's own kind (numbers are ints
    when integral). Plain bounds are checked here, for speed over thousands of spans; a node
    with any other keyword goes to jsonschema."""
    plain = all(k in _BOUNDS or k in _ANNOTATIONS or k.startswith("x-") for k in node)
    if not plain or node.get("format") not in (None, "date"):
        return jsonschema.Draft202012Validator(node, format_checker=FORMAT_CHECKER).is_valid
    types = json_types(node)
    whole = "integer" in types and "number" not in types
    bounds = [(_BOUNDS[k], node[k]) for k in _BOUNDS if k in node]

    def accepts(value: Any) -> bool:
        if whole and isinstance(value, float):
            return False
        return all(check(value, limit) for check, limit in bounds)

    return accepts


def json_types(node: Any) -> list[str]:
    """The JSON types a schema node names ([] when it names none, or is no object)."""
    types = node.get("type") if isinstance(node, dict) else None
    return [types] if isinstance(types, str) else list(types or [])


def property_nodes(schema: dict[str, Any], path: str, items: bool = True) -> list[dict[str, Any]]:
    """The subschemas a property path ("vendor", "figures.value") names, through arrays'
    `items` (an array property's own node, not its items', with `items=False`); [] when the
    schema has no such property."""
    nodes = [schema]
    for name in path.split("."):
        nodes = [_items(n).get("properties", {}).get(name) for n in nodes]
        nodes = [n for n in nodes if isinstance(n, dict)]
    return [_items(n) for n in nodes] if items else nodes


def _items(node: dict[str, Any]) -> dict[str, Any]:
    items = node.get("items")
    return items if isinstance(items, dict) else node


def property_paths(schema: dict[str, Any], prefix: str = "") -> list[str]:
    """Every property path of `schema`, outer properties first."""
    out = []
    for name, sub in _items(schema).get("properties", {}).items():
        if isinstance(sub, dict):
            out.append(prefix + name)
            out.extend(property_paths(sub, f"{prefix}{name}."))
    return out


def _readings(m: re.Match[str]) -> list[dt.date]:
    parts = m.groupdict()
    year = int(parts["year"])
    if year < 100:
        year += 2000
    if parts.get("month"):
        candidates = [(_MONTHS[parts["month"].lower().rstrip(".")], int(parts["day"]))]
    elif m.re is _DATE_PATTERNS[0]:
        candidates = [(int(parts["a"]), int(parts["b"]))]
    else:  # day-first and month-first both occur: keep each reading that is a date
        a, b = int(parts["a"]), int(parts["b"])
        candidates = [(b, a), (a, b)]
    out = []
    for month, day in candidates:
        try:
            out.append(dt.date(year, month, day))
        except ValueError:
            continue
    return out


def _number_readings(raw: str) -> list[float]:
    """ "1,486.56" -> [1486.56]; "361,12" -> [361.12]; "1,024" -> [1024, 1.024]; "1 024" -> [1024];
    "17.02.2023" -> [17, 2, 2023]."""
    groups = re.split(r"\D", raw)
    seps = re.findall(r"\D", raw)
    if not seps:
        return [float(raw)]
    readings = []
    if _thousands(groups, seps):
        readings.append(float("".join(groups)))
    last, head = seps[-1], groups[:-1]
    if last in ".," and last not in seps[:-1] and (len(head) == 1 or _thousands(head, seps[:-1])):
        readings.append(float("".join(head) + "." + groups[-1]))
    return readings or [float(g) for g in groups]


def _thousands(groups: list[str], seps: list[str]) -> bool:
    """Whether one separator splits `groups` into thousands: 1-3 digits, then 3-digit groups;
    or by Indian commas (lakhs and crores): 1-2 digits, 2-digit groups, a last 3-digit group."""
    if len(set(seps)) != 1:
        return False
    if 1 <= len(groups[0]) <= 3 and all(len(g) == 3 for g in groups[1:]):
        return True
    indian = [len(g) for g in groups[1:-1]] == [2] * (len(groups) - 2) and len(groups[-1]) == 3
    return seps[0] == "," and len(groups) >= 3 and 1 <= len(groups[0]) <= 2 and indian
