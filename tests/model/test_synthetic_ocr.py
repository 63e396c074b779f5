"""The OCR-style training documents: gold the text supports, the layouts real documents have
(misread labels, a value under its label, names with legal forms under greetings, totals among
subtotals, tax, rounding and change, local currency marks), and nothing from the held-out set."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

import jsonschema
import pytest

from flashbeam.model.training import common
from flashbeam.model.training import ocr as ocr
from flashbeam.model.training import ocr_text as vocab
from flashbeam.model.training import synthetic as S
from flashbeam.schemas.currency import text_currencies
from flashbeam.schemas.grounding import text_dates, text_numbers, text_spans

DATA = Path(__file__).resolve().parents[2] / "jobs" / "data"


@pytest.fixture(scope="module")
def docs() -> list[ocr.OcrDoc]:
    return [ocr.draw_document(random.Random(f"ocr-test-{i}")) for i in range(400)]


def test_every_gold_validates_and_every_value_is_a_grounding_candidate(docs):
    schema = common.load_schema("invoice")
    check = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    for doc in docs:
        gold, text = doc.gold(), doc.text
        check.validate(json.loads(common.dumps(gold)))
        spans = set(text_spans(text))
        for key in ("vendor", "customer", "document_number"):
            assert gold[key] is None or gold[key] in spans, (key, gold[key], text)
        for key in ("issue_date", "due_date"):
            assert gold[key] is None or gold[key] in text_dates(text), (key, gold[key], text)
        if gold["total_amount"] is not None:
            assert float(gold["total_amount"]) in text_numbers(text), text
        if gold["currency"] is not None:
            assert gold["currency"] in text_currencies(text), text


def test_a_document_that_writes_no_currency_has_none_in_its_gold(docs):
    """Null, not a guess: the gold names a currency only where the text writes one."""
    nulls = [d for d in docs if d.total is not None and d.gold()["currency"] is None]
    assert len(nulls) > 40
    for doc in nulls:
        assert text_currencies(doc.text) == [], doc.text
    countries = Counter(d.country.code for d in nulls)
    assert len(countries) >= 8  # every country writes some documents without a currency


def test_local_currency_marks_name_their_iso_codes(docs):
    written = {(d.country.currency, m.strip()) for d in docs for m in d.marks}
    for code, mark in [("MYR", "RM"), ("SGD", "S$"), ("SGD", "$"), ("INR", "₹"), ("INR", "Rs."),
                       ("EUR", "€"), ("GBP", "£"), ("IDR", "Rp")]:  # fmt: skip
        assert (code, mark) in written, (code, mark)
    # A bare "$" in Singapore is Singapore dollars: the gold says so, grounding offers both.
    singapore = [d for d in docs if d.country.code == "SG" and d.style.mark.strip() == "$"]
    assert singapore and all(d.gold()["currency"] in (None, "SGD") for d in singapore)


def test_ocr_misreads_labels_but_never_the_values(docs):
    misread = [d for d in docs if d.style.noise]
    clean = [d for d in docs if not d.style.noise]
    assert len(misread) > 60
    slips = re.compile(r"[A-Za-z][01568][A-Za-z]|[A-Za-z]{2}[01568]\b")  # T0TAL, CA5H, Tota1

    def share(group: list[ocr.OcrDoc]) -> float:
        return sum(bool(slips.search(d.text)) for d in group) / len(group)

    assert share(misread) > 0.35 and share(misread) > 4 * share(clean)
    for doc in misread:
        gold = doc.gold()
        assert gold["vendor"] in doc.text
        if gold["total_amount"] is not None:
            assert float(gold["total_amount"]) in text_numbers(doc.text)


def test_labels_and_values_are_broken_over_lines_as_ocr_boxes_are(docs):
    """A value on the line below its label, and totals blocks that list every label first."""
    receipts = [d for d in docs if d.kind == "receipt"]
    below = column = 0
    for doc in receipts:
        lines = doc.text.splitlines()
        total = ocr.format_amount(doc.total, doc.country, doc.style.group)[0]
        at = next(i for i, line in enumerate(lines) if total in line)
        below += not any(ch.isalpha() for ch in lines[at].replace(doc.style.mark.strip(), ""))
        column += sum(1 for line in lines if re.fullmatch(r"-?[^\sA-Za-z]*\d[\d.,]*", line)) >= 4
    assert below > len(receipts) // 6 and column > len(receipts) // 20


def test_names_carry_legal_forms_branches_and_stand_under_greetings(docs):
    vendors = [d.vendor for d in docs]
    for forms in (["SDN BHD"], ["PTE LTD", "PTE. LTD."], ["GmbH"], ["PVT", "Private Limited"],
                  ["LLC", "Inc", "Corp", "L.L.C."], ["S.R.L.", "SRL"], ["B.V.", "BV"]):  # fmt: skip
        assert any(f.lower() in v.lower() for v in vendors for f in forms), forms
    assert sum(v.endswith(")") and "(" in v for v in vendors) > 10  # a branch in brackets
    assert all(len(v.split()) <= 8 for v in vendors)  # one span for grounded decoding
    greeted = [d for d in docs if d.lines[0] != d.vendor and not d.lines[0].startswith(d.vendor)]
    assert len(greeted) > 60  # a greeting, slogan or title stands above the name


def test_the_total_is_the_amount_due_not_a_subtotal_the_cash_or_the_change(docs):
    receipts = [d for d in docs if d.kind == "receipt"]
    for doc in receipts:
        a = doc.amounts
        assert doc.total == (
            a["subtotal"] - a["discount"] + a["service"] + a.get("tax", 0) + a["rounding"]
        )
        if "paid" in a:
            assert a["paid"] - a["change"] == doc.total and a["paid"] >= doc.total
    cash = [d for d in receipts if d.amounts.get("change")]
    assert len(cash) > 50  # handed over more than the total, and given change
    assert sum(d.amounts["subtotal"] != d.total for d in receipts) > len(receipts) // 3
    rounded = [d for d in receipts if d.amounts["rounding"]]
    assert rounded and all(d.total % d.country.rounding == 0 for d in rounded)


def test_dates_follow_the_countrys_order():
    us = ocr.format_date(ocr.dt.date(2023, 4, 5), "{mm}/{dd}/{yyyy}")
    assert us[0] == "04/05/2023"
    assert sorted(us[1]) == [(0, 6), (1, 7), (2, 8), (3, 9), (5, 0), (6, 1), (8, 3), (9, 4)]
    written, pairs = ocr.format_date(ocr.dt.date(2018, 9, 2), "{d} {MON} {yy}")
    # a one-digit day is the source of both ISO day digits, a month name of both month digits
    assert written == "2 SEP 18" and sorted(pairs) == [
        (2, 6),
        (3, 7),
        (5, 2),
        (6, 2),
        (8, 0),
        (9, 0),
    ]
    for code, layouts in ((c, vocab.COUNTRIES[c]["dates"]) for c in vocab.COUNTRIES):
        assert any(lay.startswith("mdy") for lay in layouts) == (code == "US"), code


def test_amounts_use_the_countrys_separators():
    assert ocr.format_amount(11345000, ocr.country("IN")) == ("1,13,450.00", "113450.00")
    assert ocr.format_amount(123456, ocr.country("DE")) == ("1.234,56", "1234.56")
    assert ocr.format_amount(79200, ocr.country("ID")) == ("79.200", "79200")
    assert ocr.format_amount(-5, ocr.country("MY")) == ("-0.05", "-0.05")


def test_sources_point_each_copied_character_at_the_document(docs):
    examples = S.generate("extract_ocr", 60, seed=4)
    for ex in examples:
        for i, positions in ex.sources.items():
            char = ex.target[i]
            written = {ex.text[p] for p in positions}
            assert char in written or char == "." or not char.isalpha() or ex.gold["currency"]
        vendor_at = ex.target.index(json.dumps(ex.gold["vendor"], ensure_ascii=False)) + 1
        assert vendor_at in ex.sources
    with pytest.raises(ValueError, match="no held-out layouts"):
        S.generate("extract_ocr", 1, 1, templates="heldout")


# ---- the held-out set is none of the generator's -------------------------------------------------


def _held_out() -> tuple[list[dict], list[dict]]:
    docs = [json.loads(line) for line in (DATA / "ocr_docs.jsonl").open(encoding="utf-8")]
    gold = [json.loads(line) for line in (DATA / "ocr_docs.gold.jsonl").open(encoding="utf-8")]
    return docs, gold


def test_no_vendor_or_line_of_the_held_out_set_comes_out_of_the_generator():
    docs, gold = _held_out()
    vendors = {g["vendor"] for g in gold}
    wordy = {
        line.strip()
        for d in docs
        for line in d["text"].splitlines()
        if sum(len(w) > 1 and w.isalpha() for w in line.split()) >= 4
    }
    for i in range(1500):
        text = ocr.draw_document(random.Random(f"overlap-{i}")).text
        assert not any(v in text for v in vendors), text
        assert not wordy & {line.strip() for line in text.splitlines()}, text
    names = json.dumps([vocab.NAME_WORDS, vocab.PEOPLE], ensure_ascii=False).lower()
    assert not any(v.lower() in names for v in vendors)
