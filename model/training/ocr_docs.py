"""OCR-style documents before layout: a country's conventions (`Country`: date orders, decimal
marks, currency marks), the writing style one document draws (`Style`), the document's
facts (`OcrDoc`) and how dates and amounts are written. The layouts are in `ocr_layouts` and
`ocr_documents`; `ocr` draws examples from them.
"""

from __future__ import annotations

import datetime as dt
import random
import re
from dataclasses import dataclass, field
from typing import Any

from flashbeam.model.training.common import (
    MONTHS,
    Num,
)
from flashbeam.model.training.ocr_text import COUNTRIES, LABELS

KIND_WEIGHTS = {"receipt": 70, "invoice": 20, "contract": 10}


@dataclass(frozen=True)
class Country:
    """How one country's documents write money, dates and labels (`ocr_text`)."""

    code: str
    currency: str
    prefix: tuple[str, ...]
    suffix: tuple[str, ...]
    unit: tuple[str, ...]
    iso: str
    group: str  # thousands separator, or "lakh" for Indian grouping
    point: str
    decimals: int
    dates: tuple[str, ...]
    languages: tuple[str, ...]
    taxes: tuple[tuple[str, float], ...]
    rounding: int  # cash totals round to this many minor units (0: none)
    suffixes: tuple[str, ...]


def country(code: str) -> Country:
    c = COUNTRIES[code]
    return Country(
        code,
        c["currency"],
        tuple(c["prefix"]),
        tuple(c["suffix"]),
        tuple(c["unit"]),
        c["code"],
        *c["money"],
        tuple(c["dates"]),
        tuple(c["languages"]),
        tuple(c["taxes"]),
        c["rounding"],
        tuple(c["suffixes"]),
    )


# layout name -> forms; {d}/{m} unpadded, {dd}/{mm} padded, {yy} two-digit year.
DATE_LAYOUTS = {
    "dmy/": ["{dd}/{mm}/{yyyy}", "{d}/{m}/{yyyy}"],
    "dmy-": ["{dd}-{mm}-{yyyy}"],
    "dmy.": ["{dd}.{mm}.{yyyy}", "{d}.{m}.{yyyy}"],
    "dmy/yy": ["{dd}/{mm}/{yy}"],
    "dmy-yy": ["{dd}-{mm}-{yy}"],
    "dmy.yy": ["{dd}.{mm}.{yy}"],
    "iso": ["{yyyy}-{mm}-{dd}"],
    "mdy/": ["{mm}/{dd}/{yyyy}", "{m}/{d}/{yyyy}"],
    "mdy/yy": ["{mm}/{dd}/{yy}"],
    "mdy-": ["{mm}-{dd}-{yyyy}"],
    "d mon y": ["{dd} {Mon} {yyyy}", "{d} {MON} {yyyy}", "{dd} {MON} {yyyy}"],
    "d-mon-y": ["{dd}-{Mon}-{yyyy}", "{dd}-{MON}-{yyyy}"],
    "d month y": ["{d} {Month} {yyyy}"],
    "mon d, y": ["{Mon} {dd}, {yyyy}", "{Month} {d}, {yyyy}"],
}


_PLACE = re.compile(r"\{(\w+)\}")


def format_date(d: dt.date, form: str) -> tuple[str, list[tuple[int, int]]]:
    """(the date written in `form`, (ISO character index, written position) pairs): the ISO
    year, month and day digits point at the written ones (a month name at its first letter, a
    one-digit day at its digit for both ISO digits, a two-digit year at the century's digits)."""
    month = MONTHS[d.month - 1]
    parts = {
        "d": str(d.day), "dd": f"{d.day:02d}", "m": str(d.month), "mm": f"{d.month:02d}",
        "yy": f"{d.year % 100:02d}", "yyyy": str(d.year), "Mon": month[:3],
              "MON": month[:3].upper(),
        "Month": month,
    }  # fmt: skip
    out, pairs, pos = [], [], 0
    for piece in _PLACE.split(form):
        value = parts.get(piece)
        if value is None:
            out.append(piece)
            pos += len(piece)
            continue
        if piece == "yyyy":
            pairs += [(i, pos + i) for i in range(4)]
        elif piece == "yy":
            pairs += [(2, pos), (3, pos + 1)]
        else:
            at = 5 if piece in ("m", "mm", "Mon", "MON", "Month") else 8
            last = pos + (len(value) - 1 if piece in ("d", "dd", "m", "mm") else 0)
            pairs += [(at, pos), (at + 1, last)]
        out.append(value)
        pos += len(value)
    return "".join(out), pairs


def _grouped(units: int, sep: str) -> str:
    s = str(units)
    if sep == "lakh" and len(s) > 3:
        head, tail = s[:-3], s[-3:]
        pairs = [head[max(0, i - 2) : i] for i in range(len(head), 0, -2)][::-1]
        return ",".join(pairs + [tail])
    sep = "," if sep == "lakh" else sep
    head = len(s) % 3 or 3
    return sep.join([s[:head]] + [s[i : i + 3] for i in range(head, len(s), 3)])


def format_amount(minor: int, c: Country, group: bool = True) -> tuple[str, str]:
    """(the amount as the country writes it, its JSON number with the same digits): minor units
    are hundredths, or whole units for a currency without decimals."""
    sign = "-" if minor < 0 else ""
    minor = abs(minor)
    if c.decimals == 0:
        return sign + (_grouped(minor, c.group) if group else str(minor)), sign + str(minor)
    units, frac = divmod(minor, 100)
    whole = _grouped(units, c.group) if group else str(units)
    return f"{sign}{whole}{c.point}{frac:02d}", f"{sign}{units}.{frac:02d}"


@dataclass
class Style:
    """The look of one document: its language, label wordings, currency marks, OCR noise."""

    rng: random.Random
    country: Country
    language: str
    noise: float  # chance that a label character the OCR often misreads is misread
    # "none", or where a currency mark goes: before amounts, after them, as a column unit.
    currency: str
    mark: str  # the mark as written ("RM", "S$", " €") or ""
    marked_all: bool  # every amount carries the mark, not only the totals
    group: bool  # thousands separators on
    date_form: str
    labels: dict[str, str] = field(default_factory=dict)

    def label(self, key: str) -> str:
        """This document's wording for `key`, chosen once, then misread now and then."""
        if key not in self.labels:
            words = LABELS[self.language].get(key) or LABELS["en"][key]
            self.labels[key] = self.rng.choice(words)
        return self.misread(self.labels[key])

    def misread(self, text: str) -> str:
        """OCR slips in a label or footer: O/0, S/5, I/1, l/1, B/8, G/6 swapped."""
        if not self.noise:
            return text
        return "".join(
            _MISREAD.get(ch, ch) if self.rng.random() < self.noise else ch for ch in text
        )

    def amount(self, minor: int, marked: bool | None = None) -> str:
        """An amount as this document writes it, with the currency mark where it goes."""
        text, _ = format_amount(minor, self.country, self.group)
        if marked is None:
            marked = self.marked_all
        if not marked or self.currency not in ("prefix", "suffix"):
            return text
        if self.currency == "prefix":
            sign = "-" if text.startswith("-") else ""
            return f"{sign}{self.mark}{text.lstrip('-')}"
        return f"{text}{self.mark}"

    def date(self, d: dt.date) -> str:
        return format_date(d, self.date_form)[0]


_MISREAD = {"O": "0", "o": "0", "S": "5", "I": "1", "l": "1", "B": "8", "G": "6", "0": "O"}


def make_style(rng: random.Random, c: Country, kind: str) -> Style:
    language = rng.choice(c.languages)
    noise = rng.choice([0.0, 0.0, 0.0, 0.03, 0.08])
    marks = ["prefix"] * 4 + ["suffix"] * 3 * bool(c.suffix) + ["unit"] * 2 + ["code"]
    marks += ["none"] * (3 if kind == "receipt" else 1)
    if not c.prefix:
        marks = [m for m in marks if m != "prefix"]
    currency = rng.choice(marks)
    mark = {
        "prefix": rng.choice(c.prefix) if c.prefix else "",
        "suffix": rng.choice(c.suffix) if c.suffix else "",
        "unit": rng.choice(c.unit),
    }.get(currency, "")
    if currency == "code":  # the ISO code before or after the amounts
        currency, mark = rng.choice([("prefix", f"{c.iso} "), ("suffix", f" {c.iso}")])
    form = rng.choice(DATE_LAYOUTS[rng.choice(c.dates)])
    return Style(
        rng, c, language, noise, currency, mark, rng.random() < 0.35, rng.random() < 0.8, form
    )


@dataclass
class OcrDoc:
    """One rendered document: its OCR lines, its gold, and the written forms of its values."""

    kind: str
    country: Country
    style: Style
    lines: list[str] = field(default_factory=list)
    vendor: str = ""
    customer: str | None = None
    number: str | None = None
    issue: dt.date | None = None
    due: dt.date | None = None
    total: int | None = None  # minor units
    marks: list[str] = field(default_factory=list)  # currency marks written with amounts
    # What the totals block states, by role (subtotal, tax, rounding, paid, change ...).
    amounts: dict[str, int] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "\n".join(self.lines) + "\n"

    def add(self, *lines: str | None) -> None:
        self.lines.extend(line for line in lines if line)

    @property
    def currency(self) -> str | None:
        """The ISO code when the document writes a currency and a total, else None."""
        return self.country.currency if self.marks and self.total is not None else None

    def gold(self) -> dict[str, Any]:
        total = None
        if self.total is not None:
            total = Num(format_amount(self.total, self.country, group=False)[1])
        return {
            "document_type": self.kind,
            "vendor": self.vendor,
            "customer": self.customer,
            "document_number": self.number,
            "issue_date": self.issue.isoformat() if self.issue else None,
            "due_date": self.due.isoformat() if self.due else None,
            "total_amount": total,
            "currency": self.currency,
        }
