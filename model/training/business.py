"""Synthetic invoices, receipts and contracts with their extracted fields (see `synthetic`).

A `BizDoc` holds the facts of one document (the gold fields plus the details a real document
carries: line items, taxes, addresses, reference numbers); a template renders it as text through
a `Ctx`, which fixes the document's label wordings, separators, date and money styles, casing and
label typos. Gold values are exactly what the text states: names as written, dates in ISO form,
amounts as numbers (written with the document's digits), currencies as ISO codes, and null for
whatever the document leaves out.
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any, NamedTuple

# Templates register themselves on import.
from flashbeam.model.training import business_templates  # noqa: F401 - registers the layouts
from flashbeam.model.training.business_docs import (
    FIELDS,
    TARGET_WORDS,
    BizDoc,
    Ctx,
    Template,
    assemble,
    make_doc,
    templates_for,
)
from flashbeam.model.training.common import (
    CURRENCY_SYMBOLS,
    EXTRACT_INSTRUCTION,
    Example,
    date_sources,
    dumps,
    messages_for,
    money_surface_forms,
    string_sources,
    written_forms,
)


class Rendered(NamedTuple):
    text: str
    gold: dict[str, Any]
    template: str
    doc: BizDoc


def business_doc(
    rng: random.Random,
    split: str = "train",
    tmpl: Template | None = None,
    filler_scale: float = 1.0,
) -> Rendered:
    """One document from a template of the split (or the template given), with its gold.
    `filler_scale` < 1 shortens the boilerplate (training mixes in shorter documents)."""
    tmpl = tmpl or rng.choice(templates_for(split))
    doc = make_doc(rng, tmpl.kind, tmpl.profile)
    ctx = Ctx(rng, doc)
    blocks = tmpl.render(ctx)
    lo, hi = TARGET_WORDS[tmpl.kind]
    text = assemble(ctx, blocks, tmpl.filler, target=int(rng.randint(lo, hi) * filler_scale))
    if doc.has_total != (doc.total_written is not None):
        raise AssertionError(f"template {tmpl.name} did not write the total it should")
    return Rendered(text, doc.gold(), tmpl.name, doc)


def extraction_example(
    rng: random.Random, split: str = "train", filler_scale: float = 1.0
) -> Example:
    """A document in the user turn, its compact gold JSON as the target; `sources` maps the
    target's copied characters to where the document writes them (`copy_sources`)."""
    text, gold, name, doc = business_doc(rng, split, filler_scale=filler_scale)
    target = dumps(gold)
    ex = Example("", "extract", name, messages_for(EXTRACT_INSTRUCTION, text), target, gold, text)
    ex.sources = copy_sources(text, gold, target, doc)
    return ex


def copy_sources(text: str, gold: dict[str, Any], target: str, doc: BizDoc) -> dict[int, list[int]]:
    """For each character of `target` (the compact gold JSON) that a value copies from the
    document: the positions in `text` of the character it copies, one per place the document
    writes the value. Training points an attention head at them (`train.pointer_loss`).

    Names and numbers map character for character; an amount's digits map to the written digits
    (group separators skipped, the decimal point to the written one); an ISO date's year, month
    and day map to where the written date has them (a month name for both month digits); the
    currency code to the code or symbol written with the total. The document type and nulls
    have no source.
    """
    out: dict[int, list[int]] = {}
    # where the total is written (with its currency): the amount's and the currency's sources
    money = written_forms(text, money_surface_forms(doc.total, doc.currency))
    for key in FIELDS[1:]:
        value = gold.get(key)
        if value is None:
            continue
        written = dumps(value)
        at = target.find(f'"{key}":{written}')
        if at < 0:
            continue
        start = at + len(key) + 3 + (1 if isinstance(value, str) else 0)
        if key in ("issue_date", "due_date"):
            pairs = date_sources(text, dt.date.fromisoformat(value))
        elif key == "total_amount":
            pairs = _amount_sources(money, value.raw)
        elif key == "currency":
            pairs = _currency_sources(money, doc.currency)
        else:
            pairs = string_sources(text, value)
        for i, pos in pairs:
            out.setdefault(start + i, []).append(pos)
    return out


def _currency_sources(money: list[tuple[int, str]], currency: str) -> list[tuple[int, int]]:
    """(index in the ISO code, text position) pairs: in each written total (start, form), its
    code letter for letter, or its symbol ("$", "€") for every letter."""
    pairs = []
    for at, form in money:
        code = form.find(currency)
        if code >= 0:
            pairs += [(i, at + code + i) for i in range(len(currency))]
        elif (symbol := form.find(CURRENCY_SYMBOLS.get(currency, "\0"))) >= 0:
            pairs += [(i, at + symbol) for i in range(len(currency))]
    return pairs


def _amount_sources(money: list[tuple[int, str]], raw: str) -> list[tuple[int, int]]:
    """(index in the JSON number, text position) pairs for each written total (start, form):
    digits to digits in order, the decimal point to the written decimal separator."""
    pairs = []
    whole = raw.split(".")[0]
    for at, form in money:
        digits = [i for i, c in enumerate(form) if c.isdigit()]
        if len(digits) != sum(c.isdigit() for c in raw):
            continue
        k = 0
        for i, c in enumerate(raw):
            if c.isdigit():
                pairs.append((i, at + digits[k]))
                k += 1
            elif k == len(whole) and k < len(digits):
                pairs.append((i, at + digits[k] - 1))
    return pairs
