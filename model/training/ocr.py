"""Synthetic documents that look like OCR output of real ones, with their gold fields.

Receipts, invoices and contracts from thirteen countries as an OCR engine writes them: one text
line per box, so a label and its value may stand on two lines and a totals block may list its
labels before its values; labels in the country's languages with characters misread (`T0TAL`,
`CA5H`); long legal names (`SDN BHD`, `PTE. LTD.`, `GmbH & Co. KG`, a branch in brackets) under
greetings and slogans that are not the business; totals beside subtotals, taxes, service
charges, rounding, the cash handed over and the change; dates in the country's order; amounts
with the country's separators and currency marks (`RM`, `S$`, `₹`, `Rs.`, `€`, `CHF`, `Rp`), or
none at all.

The gold follows the extraction instruction: the vendor as its name line writes it (a
registration number in brackets left out), the amount due as the total (after tax and
rounding; never the cash tendered or the change), the currency's ISO code when the document
writes a currency mark and null when it writes none, dates in ISO form. `Example.sources` points
each copied answer character at where the document writes it (pointer supervision in training).

    examples = synthetic.generate("extract_ocr", 100, seed=3)
"""

from __future__ import annotations

import datetime as dt
import random
import re
from typing import Any

from flashbeam.model.training import ocr_documents  # noqa: F401 - registers the renderers
from flashbeam.model.training.business_docs import FIELDS
from flashbeam.model.training.common import (
    EXTRACT_INSTRUCTION,
    Example,
    dumps,
    messages_for,
    random_date,
    string_sources,
    weighted_choice,
)
from flashbeam.model.training.ocr_docs import (
    KIND_WEIGHTS,
    Country,
    OcrDoc,
    Style,
    country,
    format_amount,
    format_date,
    make_style,
)
from flashbeam.model.training.ocr_layouts import RENDER
from flashbeam.model.training.ocr_text import COUNTRY_WEIGHTS

__all__ = [
    "Country",
    "OcrDoc",
    "Style",
    "country",
    "draw_document",
    "extraction_example",
    "format_amount",
    "format_date",
]


def draw_country(rng: random.Random) -> Country:
    return country(weighted_choice(rng, COUNTRY_WEIGHTS))


def draw_document(rng: random.Random) -> OcrDoc:
    """One OCR-style document of a drawn kind (receipt, invoice, contract) and country."""
    kind = weighted_choice(rng, KIND_WEIGHTS)
    c = draw_country(rng)
    doc = RENDER[kind](rng, c, make_style(rng, c, kind))
    doc.issue = doc.issue or random_date(rng, 2016, 2025)
    return doc


def extraction_example(rng: random.Random) -> Example:
    """One OCR-style document (`draw_document`) with its gold and sources."""
    doc = draw_document(rng)
    text, gold = doc.text, doc.gold()
    target = dumps(gold)
    template = f"ocr_{doc.kind}_{doc.country.code.lower()}"
    ex = Example("", "extract_ocr", template, messages_for(EXTRACT_INSTRUCTION, text), target, gold)
    ex.text = text
    ex.sources = ocr_sources(doc, gold, target)
    return ex


def ocr_sources(doc: OcrDoc, gold: dict[str, Any], target: str) -> dict[int, list[int]]:
    """For each character of `target` a value copies: the positions in the document of the
    character it copies, at every place the document writes the value (see `format_date` for
    dates; an amount's digits point at the written digits and its point at the written decimal
    separator; a currency code's letters at the currency marks)."""
    text = doc.text
    out: dict[int, list[int]] = {}
    for key in FIELDS[1:]:
        value = gold[key]
        if value is None:
            continue
        at = target.find(f'"{key}":{dumps(value)}')
        start = at + len(key) + 3 + (1 if isinstance(value, str) else 0)
        if key in ("issue_date", "due_date"):
            day = doc.issue if key == "issue_date" else doc.due
            pairs = _date_pairs(text, day, doc.style.date_form)
        elif key == "total_amount":
            pairs = _amount_pairs(text, doc, value.raw)
        elif key == "currency":
            pairs = [
                (i, pos) for mark in doc.marks for pos in _mark_at(text, mark) for i in range(3)
            ]
        else:
            pairs = string_sources(text, value)
        for i, pos in pairs:
            out.setdefault(start + i, []).append(pos)
    return out


def _date_pairs(text: str, day: dt.date, form: str) -> list[tuple[int, int]]:
    written, pairs = format_date(day, form)
    return [(i, at + pos) for at in _number_at(text, written) for i, pos in pairs]


def _amount_pairs(text: str, doc: OcrDoc, raw: str) -> list[tuple[int, int]]:
    written = format_amount(doc.total, doc.country, doc.style.group)[0]
    digits_raw = [i for i, ch in enumerate(raw) if ch.isdigit()]
    point = raw.find(".")
    pairs = []
    for at in _number_at(text, written):
        digits = [at + i for i, ch in enumerate(written) if ch.isdigit()]
        pairs += list(zip(digits_raw, digits))
        if point >= 0:
            pairs.append((point, at + written.rfind(doc.country.point)))
    return pairs


def _number_at(text: str, written: str) -> list[int]:
    """Where `written` (an amount or a date) stands in `text` as a whole number: not inside
    longer digits, though a currency may touch it ("RM31.70", "Rs.28.00")."""
    pattern = r"(?<![\d,])(?<!\d\.)" + re.escape(written) + r"(?![\d]|[.,]\d)"
    return [m.start() for m in re.finditer(pattern, text)]


def _mark_at(text: str, mark: str) -> list[int]:
    """Where a currency mark is written: a mark of letters not inside a word (digits may touch
    it: "RM31.70"), a symbol anywhere."""
    mark = mark.strip()
    edge = r"(?<![A-Za-z])" if mark[:1].isalpha() else ""
    tail = r"(?![A-Za-z])" if mark[-1:].isalpha() else ""
    return [m.start() for m in re.finditer(edge + re.escape(mark) + tail, text)]
