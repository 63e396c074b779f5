"""What every synthetic task shares: the instruction strings the jobs and training use, the
sample schemas, examples and their compact JSON, value formats (dates, money) and where an
answer's values are written in its input (the sources pointer supervision trains on).
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXTRACT_INSTRUCTION = (
    "Extract the fields of this business document (an invoice, receipt or contract) as JSON with "
    "the keys document_type, vendor, customer, document_number, issue_date, due_date, "
    "total_amount, currency. Copy names and numbers as written; dates as YYYY-MM-DD; total_amount "
    "as a number; currency as an ISO 4217 code; null when the document does not state a field."
)


REPORT_INSTRUCTION = (
    "Summarize this report as JSON with the keys title, report_type, author, report_date, "
    "section_count, people, figures, summary. people: the full names mentioned in the body; "
    "figures: the counts reported, as name and value; summary: one sentence."
)


CHUNK_INSTRUCTION = (
    "This is one part of a longer report. Summarize only this part as JSON with the keys title, "
    "report_type, author, report_date, section_headings, people, figures, key_point; null or [] "
    "for what this part does not contain."
)


REDUCE_INSTRUCTION = (
    "These are the JSON summaries of the consecutive parts of one report. Merge them into the "
    "summary of the whole report as JSON with the keys title, report_type, author, report_date, "
    "section_count, people, figures, summary."
)


SCHEMA_DIR = Path(__file__).resolve().parents[2] / "jobs" / "schemas"


DATA_DIR = Path(__file__).resolve().parents[2] / "jobs" / "data"


SPLITS = ("train", "heldout")


# Seeds of the committed sample data; training runs should use other seeds (any small integer).
SAMPLE_SEED = 8_080_808


# max_tokens that fit every target: extraction, and chunk / reduce / whole-report summaries.
EXTRACT_MAX_TOKENS = 192


SUMMARY_MAX_TOKENS = 384


def load_schema(name: str) -> dict[str, Any]:
    """A schema from jobs/schemas/ by name: "invoice", "report_summary", "report_chunk_summary"."""
    return json.loads((SCHEMA_DIR / f"{name}.json").read_text())


def messages_for(instruction: str, text: str) -> list[dict[str, str]]:
    """The chat turns of one request: the instruction as system turn, the document as user turn."""
    return [{"role": "system", "content": instruction}, {"role": "user", "content": text}]


@dataclass
class Example:
    """One generated example: the chat turns, the compact target JSON and its parsed gold."""

    id: str
    task: str
    template: str
    messages: list[dict[str, str]]
    target: str
    gold: dict[str, Any]
    text: str = ""
    # target character -> positions in `text` it copies from (pointer supervision in training;
    # filled by business.copy_sources and verbatim_sources)
    sources: dict[int, list[int]] = field(default_factory=dict)

    def to_train_row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "task": self.task,
            "template": self.template,
            "messages": self.messages,
            "target": self.target,
        }


class Num(float):
    """A float that remembers how it was written ("1234.50"): targets copy the document's digits."""

    raw: str

    def __new__(cls, raw: str) -> Num:
        obj = super().__new__(cls, raw)
        obj.raw = raw
        return obj


def dumps(obj: Any) -> str:
    """Compact JSON in insertion order; `Num` values keep their written form."""
    if isinstance(obj, Num):
        return obj.raw
    if obj is None or isinstance(obj, (bool, str)):
        return json.dumps(obj, ensure_ascii=False)
    if isinstance(obj, int):
        return str(obj)
    if isinstance(obj, float):
        return str(int(obj)) if obj.is_integer() and abs(obj) < 1e15 else repr(obj)
    if isinstance(obj, Mapping):
        return "{" + ",".join(f"{dumps(str(k))}:{dumps(v)}" for k, v in obj.items()) + "}"
    if isinstance(obj, (list, tuple)):
        return "[" + ",".join(dumps(v) for v in obj) + "]"
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(dumps(row) + "\n")
            n += 1
    return n


MONTHS = [dt.date(2000, m, 1).strftime("%B") for m in range(1, 13)]


WEEKDAYS = [dt.date(2024, 1, d).strftime("%A") for d in range(1, 8)]  # 2024-01-01 is a Monday


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


# Every style names the order of its fields unambiguously: slashes are always month/day/year,
# dots always day.month.year, so the ISO date in the gold can be read back from the text.
DATE_STYLES: dict[str, Any] = {
    "iso": lambda d: d.isoformat(),
    "us_slash": lambda d: f"{d.month:02d}/{d.day:02d}/{d.year}",
    "us_slash_short": lambda d: f"{d.month}/{d.day}/{d.year}",
    "us_slash_yy": lambda d: f"{d.month:02d}/{d.day:02d}/{d.year % 100:02d}",
    "eu_dot": lambda d: f"{d.day:02d}.{d.month:02d}.{d.year}",
    "long_us": lambda d: f"{MONTHS[d.month - 1]} {d.day}, {d.year}",
    "long_eu": lambda d: f"{d.day} {MONTHS[d.month - 1]} {d.year}",
    "abbr_us": lambda d: f"{MONTHS[d.month - 1][:3]} {d.day}, {d.year}",
    "abbr_eu": lambda d: f"{d.day} {MONTHS[d.month - 1][:3]} {d.year}",
    "dash_abbr": lambda d: f"{d.day:02d}-{MONTHS[d.month - 1][:3]}-{d.year}",
    "upper_abbr": lambda d: f"{d.day:02d} {MONTHS[d.month - 1][:3].upper()} {d.year}",
    "ordinal_eu": lambda d: f"{_ordinal(d.day)} {MONTHS[d.month - 1]} {d.year}",
    "ordinal_us": lambda d: f"{MONTHS[d.month - 1]} {_ordinal(d.day)}, {d.year}",
    "weekday_us": lambda d: f"{WEEKDAYS[d.weekday()]}, {MONTHS[d.month - 1]} {d.day}, {d.year}",
}


DOC_DATE_STYLES = [s for s in DATE_STYLES if s not in ("us_slash_yy", "upper_abbr")]


def format_date(d: dt.date, style: str) -> str:
    return DATE_STYLES[style](d)


def date_surface_forms(d: dt.date) -> set[str]:
    """Every way the generators may write `d`."""
    return {fmt(d) for fmt in DATE_STYLES.values()}


def random_date(rng: random.Random, start: int = 2021, end: int = 2026) -> dt.date:
    first = dt.date(start, 1, 1).toordinal()
    return dt.date.fromordinal(rng.randint(first, dt.date(end, 12, 31).toordinal()))


# Symbols that name one currency only; "$" alone is always USD.
CURRENCY_SYMBOLS = {
    "USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "CAD": "C$", "AUD": "A$", "INR": "₹",
}  # fmt: skip


CURRENCY_WEIGHTS = {
    "USD": 30,
    "EUR": 24,
    "GBP": 12,
    "CAD": 6,
    "AUD": 6,
    "CHF": 6,
    "JPY": 5,
    "SEK": 5,
    "INR": 6,
}


CURRENCIES = list(CURRENCY_WEIGHTS)


ZERO_DECIMAL = {"JPY"}


def _group(units: int, sep: str) -> str:
    s = str(units)
    head = len(s) % 3 or 3
    return sep.join([s[:head]] + [s[i : i + 3] for i in range(head, len(s), 3)])


def _digits(cents: int, currency: str, group: str, point: str, trim: bool) -> tuple[str, str]:
    """(written amount, the same amount as a JSON number) for one grouping/decimal convention."""
    units, frac = divmod(cents, 100)
    if currency in ZERO_DECIMAL:
        return _group(units, group), str(units)
    if trim and frac == 0:
        return _group(units, group), str(units)
    if trim and frac % 10 == 0:
        return f"{_group(units, group)}{point}{frac // 10}", f"{units}.{frac // 10}"
    return f"{_group(units, group)}{point}{frac:02d}", f"{units}.{frac:02d}"


# style -> (grouping, decimal point, layout); layout: sym_pre, code_pre, code_post, sym_post.
MONEY_STYLES: dict[str, tuple[str, str, str]] = {
    "sym_us": (",", ".", "sym_pre"),
    "code_pre_us": (",", ".", "code_pre"),
    "code_pre_plain": ("", ".", "code_pre"),
    "code_post_us": (",", ".", "code_post"),
    "eu_code_post": (".", ",", "code_post"),
    "eu_code_pre": (".", ",", "code_pre"),
    "eu_sym_post": (".", ",", "sym_post"),
    "space_code_post": (" ", ",", "code_post"),
    "swiss": ("'", ".", "code_pre"),
}


def money_styles_for(currency: str) -> list[str]:
    styles = []
    for name, (_, point, layout) in MONEY_STYLES.items():
        if layout.startswith("sym") and currency not in CURRENCY_SYMBOLS:
            continue
        if currency in ZERO_DECIMAL and point == ",":
            continue  # "123.400 JPY" would read as a decimal
        if name == "swiss" and currency != "CHF":
            continue
        styles.append(name)
    return styles


def format_money(cents: int, currency: str, style: str, trim: bool = False) -> tuple[str, Num]:
    """("1.234,50 EUR", Num("1234.50")). `trim` drops zero cents ("USD 1234.5", "$1,200")."""
    group, point, layout = MONEY_STYLES[style]
    # A trimmed comma decimal ("1.234,5") or bare European thousands ("1.234") would be ambiguous.
    trim = trim and point == "."
    text, raw = _digits(cents, currency, group, point, trim)
    if layout == "sym_pre":
        written = f"{CURRENCY_SYMBOLS[currency]}{text}"
    elif layout == "sym_post":
        written = f"{text} {CURRENCY_SYMBOLS[currency]}"
    elif layout == "code_pre":
        written = f"{currency} {text}"
    else:
        written = f"{text} {currency}"
    return written, Num(raw)


def money_surface_forms(cents: int, currency: str) -> set[str]:
    """Every way the generators may write this amount (with its currency)."""
    return {
        format_money(cents, currency, style, trim)[0]
        for style in money_styles_for(currency)
        for trim in (False, True)
    }


def weighted_choice(rng: random.Random, weights: Mapping[str, float]) -> str:
    keys = list(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys])[0]


def word_count(text: str) -> int:
    return len(text.split())


def typo(word: str, rng: random.Random) -> str:
    """One keyboard slip in a label (swap, drop or double a letter); values are never touched."""
    idx = [i for i, c in enumerate(word) if c.isalpha()]
    if len(idx) < 4:
        return word
    i = rng.choice(idx[1:-1])
    op = rng.randrange(3)
    if op == 0 and word[i + 1].isalpha():
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if op == 1:
        return word[:i] + word[i + 1 :]
    return word[:i] + word[i] + word[i:]


def occurrences(text: str, needle: str) -> list[int]:
    """Start positions of `needle` in `text` not inside a longer run of letters or digits."""
    found, at = [], text.find(needle)
    while at >= 0:
        end = at + len(needle)
        before = text[at - 1] if at else " "
        after = text[end] if end < len(text) else " "
        if not (before.isalnum() and needle[0].isalnum()) and not (
            after.isalnum() and needle[-1].isalnum()
        ):
            found.append(at)
        at = text.find(needle, at + 1)
    return found


def string_sources(text: str, value: str) -> list[tuple[int, int]]:
    """(index in `value`, text position) pairs: `value` copied character for character from
    every place `text` writes it (`occurrences`)."""
    return [(i, at + i) for at in occurrences(text, value) for i in range(len(value))]


def written_forms(text: str, forms: set[str]) -> list[tuple[int, str]]:
    """Occurrences (start, form) of any of `forms`, longest first, none inside another."""
    taken: list[tuple[int, int]] = []
    out = []
    for form in sorted(forms, key=len, reverse=True):
        for at in occurrences(text, form):
            if any(a <= at and at + len(form) <= b for a, b in taken):
                continue
            taken.append((at, at + len(form)))
            out.append((at, form))
    return out


def date_sources(text: str, d: dt.date) -> list[tuple[int, int]]:
    """(ISO character index, text position) pairs for every place the text writes date d."""
    pairs = []
    for at, form in written_forms(text, date_surface_forms(d)):
        groups = [(m.start(), m.group()) for m in re.finditer(r"\d+", form)]
        year = next((g for g in groups if len(g[1]) == 4), None)
        rest = [g for g in groups if g is not year]
        name = MONTHS[d.month - 1][:3].lower()
        month_at = form.lower().find(name)
        if month_at >= 0 and len(rest) == 1:
            month, day = None, rest[0]
        elif len(rest) == 2:
            # numeric styles: ISO (year first) and slashes write the month first, dots the day
            month, day = rest if "/" in form or form.startswith(str(d.year)) else rest[::-1]
        else:
            continue
        if year is not None:
            pairs += [(i, at + year[0] + i) for i in range(4)]
        for iso_at, group in ((5, month), (8, day)):
            if group is None:  # a month name: both digits come from it
                pairs += [(iso_at, at + month_at), (iso_at + 1, at + month_at)]
                continue
            # a one-digit "6" is the source of both "0" and "6"
            pairs += [(iso_at, at + group[0]), (iso_at + 1, at + group[0] + len(group[1]) - 1)]
    return pairs


def verbatim_sources(text: str, gold: Any, computed: tuple[str, ...] = ()) -> dict[int, list[int]]:
    """`Example.sources` for an answer that copies its values: each character of a string or
    integer value in `dumps(gold)` -> the positions in `text` of the character it copies, for
    every place `text` writes the value (an ISO date not written as such: where its year, month
    and day are written, `date_sources`; an integer may be written with group separators).
    Values under a key named in `computed` (a count the answer works out) have no source."""
    out: dict[int, list[int]] = {}
    for start, value in _value_starts(gold, computed=computed):
        if isinstance(value, str):
            pairs = string_sources(text, value)
            if not pairs and _ISO_DATE.fullmatch(value):
                pairs = date_sources(text, dt.date.fromisoformat(value))
        else:
            digits = str(value)
            pattern = r"(?<![\d.,])" + r"[,' ]?".join(digits) + r"(?![\d]|[.,]\d)"
            pairs = []
            for m in re.finditer(pattern, text):
                where = [m.start() + i for i, c in enumerate(m.group()) if c.isdigit()]
                pairs += list(enumerate(where))
        for i, pos in pairs:
            out.setdefault(start + i, []).append(pos)
    return out


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _value_starts(obj: Any, at: int = 0, computed: tuple[str, ...] = ()) -> list[tuple[int, Any]]:
    """(position in dumps(obj) where the value's characters start, value) for every string
    (past its quote; strings JSON escapes are left out) and integer leaf of obj, except those
    under the keys in `computed`."""
    if isinstance(obj, Mapping):
        out, pos = [], at + 1
        for i, (key, value) in enumerate(obj.items()):
            pos += (i > 0) + len(dumps(str(key))) + 1
            if key not in computed:
                out += _value_starts(value, pos, computed)
            pos += len(dumps(value))
        return out
    if isinstance(obj, (list, tuple)):
        out, pos = [], at + 1
        for i, value in enumerate(obj):
            pos += i > 0
            out += _value_starts(value, pos, computed)
            pos += len(dumps(value))
        return out
    if isinstance(obj, str) and dumps(obj) == f'"{obj}"' and obj:
        return [(at + 1, obj)]
    if isinstance(obj, int) and not isinstance(obj, bool):
        return [(at, obj)]
    return []
