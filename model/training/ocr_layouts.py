"""Receipts, invoices and contracts for `ocr`, written line by line as OCR reads them.

Each renderer draws the facts of one document (a business, its goods, taxes, payment) and writes
its lines in one of many arrangements: a value beside its label, on the line below it, or a
totals block that lists its labels before its values; the business name under a greeting or a
title, with its registration number beside it or below; amounts with or without the currency.
"""

from __future__ import annotations

import datetime as dt
import random

from flashbeam.model.training.common import random_date
from flashbeam.model.training.ocr_docs import Country, OcrDoc, Style, format_amount
from flashbeam.model.training.ocr_text import (
    COUNTRY_GOODS,
    FIRMS,
    FOOTERS,
    GOODS,
    GREETINGS,
    NAME_WORDS,
    PEOPLE,
    PLACES,
    PRICE_SCALE,
    SERVICES,
    STREET_WORDS,
    STREETS,
    TRADES,
)

_words = str.split
UPPER_NAMES = {"MY": 0.85, "SG": 0.6, "IN": 0.55, "ID": 0.8, "UK": 0.35, "US": 0.45}
MAX_NAME_WORDS = 8  # a name longer than this is no single span for grounded decoding


# ---- businesses, places and numbers --------------------------------------------------------------


def business_name(rng: random.Random, c: Country, trade: bool = True) -> str:
    """A shop's name (`trade`) or a firm's, with the country's legal form now and then."""
    words = NAME_WORDS[c.code]
    if c.code == "MY":
        words = words + NAME_WORDS["MY_CHINESE"] * 2 + NAME_WORDS["MY_INDIAN"]
    base = rng.choice(words)
    if rng.random() < 0.4 and c.code in ("MY", "ID", "IN"):
        base = f"{base} {rng.choice(words)}"
    if trade:
        kind, first = rng.choice(TRADES[c.code])
    else:
        kind, first = rng.choice(FIRMS[c.code]), False
    name = f"{kind} {base}" if first else f"{base} {kind}"
    if c.code == "ID" and not first and rng.random() < 0.6:
        name = f"{rng.choice(['PT', 'CV', 'PT.'])} {name}"
    suffix_p = 0.35 if trade else 0.85
    if rng.random() < suffix_p:
        name = f"{name} {rng.choice(c.suffixes)}"
    if trade and rng.random() < 0.15:  # the branch, in brackets after the name
        name = f"{name} ({rng.choice(PLACES[c.code])[0]})"
    name = " ".join(name.split()).replace(" ,", ",")
    upper = UPPER_NAMES.get(c.code, 0.3)
    if rng.random() < upper:
        name = name.upper()
    words = name.split()
    return " ".join(words[:MAX_NAME_WORDS])


def registration(rng: random.Random, c: Country) -> str | None:
    """A company registration or tax number line, as the country writes it."""
    n = rng.randint(100000, 999999)
    letter = rng.choice("ABCDEFHKMPTUVWX")
    digits = rng.randint  # every form below is drawn, in this order, whatever the country
    forms = {
        "MY": [
            f"({n}-{letter})", f"(CO. NO. {n}-{letter})", f"Co. Reg. No: {n}-{letter}",
            f"(JM{n}{digits(0, 9)}-{letter})", f"({digits(10**11, 10**12 - 1)})",
            f"COMPANY NO: {n}-{letter}",
        ],
        "SG": [
            f"UEN: {digits(199000000, 202399999)}{letter}", f"Co. Reg. No. {n}{letter}",
            f"GST Reg No: M{digits(2, 9)}-{n}{digits(0, 9)}-{digits(1, 9)}",
        ],
        "IN": [
            f"GSTIN: {digits(10, 37)}AAB{letter}{n % 10000:04d}{letter}1Z{digits(1, 9)}",
            f"CIN: U{digits(10000, 99999)}MH2015PTC{n}", f"FSSAI No. {digits(10**13, 10**14 - 1)}",
        ],
        "DE": [
            f"USt-IdNr. DE{digits(10**8, 10**9 - 1)}",
            f"Steuer-Nr. {digits(10, 99)}/{n}/{digits(10000, 99999)}", f"HRB {digits(1000, 99999)}",
        ],
        "UK": [
            f"VAT Reg No. GB {digits(100, 999)} {digits(1000, 9999)} {digits(10, 99)}",
            f"Company No. {digits(10**7, 10**8 - 1):08d}",
        ],
        "US": [f"Tax ID {digits(10, 99)}-{digits(10**6, 10**7 - 1)}"],
        "ID": [
            f"NPWP: {digits(10, 99)}.{digits(100, 999)}.{digits(100, 999)}.{digits(1, 9)}"
            f"-{digits(100, 999)}.000"
        ],
    }.get(c.code, [f"TVA/IVA/BTW {c.code}{digits(10**8, 10**9 - 1)}", f"Reg. {n}"])  # fmt: skip
    return rng.choice(forms)


def address(rng: random.Random, c: Country, upper: bool) -> list[str]:
    place = rng.choice(PLACES[c.code])
    street = rng.choice(STREETS[c.code]).format(
        w=rng.choice(STREET_WORDS[c.code]), n=rng.randint(1, 180), m=rng.randint(1, 12),
        k=rng.randint(1, 9), n2=rng.randint(10, 99), place=place[0],
    )  # fmt: skip
    if c.code == "MY":
        lines = [f"NO. {rng.randint(1, 99)}, {street},", f"{place[1]} {place[0]}, {place[2]}."]
    elif c.code == "SG":
        lines = [street, f"Singapore {place[1]}{rng.randint(100, 999)}"]
    elif c.code == "IN":
        lines = [f"{street},", f"{place[0]} - {place[1]}, {place[2]}"]
    elif c.code == "US":
        lines = [street, f"{place[0]}, {place[1]} {place[2]}"]
    elif c.code == "UK":
        lines = [street, f"{place[0]} {place[1]}"]
    else:
        lines = [street, f"{place[1]} {place[0]}"]
    if rng.random() < 0.2:
        lines = [", ".join(line.rstrip(",.") for line in lines)]
    return [line.upper() for line in lines] if upper else lines


def phone(rng: random.Random, c: Country) -> str:
    digits = {
        "MY": f"0{rng.randint(3, 9)}-{rng.randint(100, 999)} {rng.randint(1000, 9999)}",
        "SG": f"{rng.randint(6000, 6999)} {rng.randint(1000, 9999)}",
        "IN": f"{rng.randint(70000, 99999)} {rng.randint(10000, 99999)}",
        "US": f"({rng.randint(200, 989)}) {rng.randint(200, 999)}-{rng.randint(1000, 9999)}",
        "UK": f"0{rng.randint(1000, 1999)} {rng.randint(100000, 999999)}",
    }.get(c.code, f"0{rng.randint(10, 99)} {rng.randint(100, 999)} {rng.randint(100, 999)}")
    return f"{rng.choice(['Tel', 'TEL', 'Tel.', 'Ph', 'Phone', 'H/P', 'Tel No'])}: {digits}"


def doc_number(rng: random.Random, kind: str, year: int) -> str:
    n = rng.randint(1, 999999)
    letters = "".join(rng.choice("ABCDEFGHJKLMNPRSTUVW") for _ in range(rng.randint(1, 3)))
    forms = [
        f"{n:06d}", f"{n % 100000}", f"{letters}{n:06d}", f"{letters}-{n:05d}",
        f"{rng.randint(1, 99):02d}-{n:06d}", f"{letters}{year % 100}-{n % 10000:04d}",
        f"{letters}/{year}/{n % 1000:03d}", f"{rng.randint(1000, 9999)}-{n % 10000:04d}",
        f"{year}{n:06d}", f"T{rng.randint(1, 9):03d}-{year}-{n % 100000:05d}",
    ]  # fmt: skip
    if kind != "receipt":
        forms += [
            f"INV-{year}-{n % 10000:04d}",
            f"{letters}/{year % 100}-{year % 100 + 1}/{n % 1000:03d}",
        ]
    return rng.choice(forms)


# ---- how a value stands beside its label ---------------------------------------------------------


def pair(s: Style, label: str, value: str, split: bool | None = None) -> list[str]:
    """A label and its value: on one line, or the label's box above the value's."""
    rng = s.rng
    if split is None:
        split = rng.random() < 0.2
    sep = rng.choice([": ", " : ", " ", ": ", " ", ": "])
    if not split:
        return [f"{label}{sep}{value}"]
    head = f"{label}{sep.strip()}" if rng.random() < 0.6 else label
    return [head, value]


def broken(s: Style, label: str) -> list[str]:
    """A label as OCR boxes may give it: whole, or its words on lines of their own."""
    words = label.split()
    if len(words) > 1 and s.rng.random() < 0.15:
        return words
    return [label]


def maybe_greeting(s: Style, lines: list[str]) -> None:
    """A greeting or slogan line: OCR reads it as a line like the name's."""
    pool = GREETINGS.get(s.language, GREETINGS["en"]) + GREETINGS["en"][:4]
    text = s.rng.choice(pool).format(year=s.rng.randint(1965, 2012))
    lines.append(text.upper() if s.rng.random() < 0.5 else text)


def header(rng: random.Random, c: Country, s: Style, doc: OcrDoc, trade: bool) -> list[str]:
    """The top of a document: greeting, name (registration beside or below), address, contact."""
    doc.vendor = business_name(rng, c, trade)
    lines: list[str] = []
    if rng.random() < 0.3:
        maybe_greeting(s, lines)
    reg = registration(rng, c) if rng.random() < 0.7 else None
    name = doc.vendor
    if reg and reg.startswith("(") and rng.random() < 0.35:
        name, reg = f"{name} {reg}", None
    lines.append(name)
    if rng.random() < 0.1:
        maybe_greeting(s, lines)
    if reg and rng.random() < 0.5:
        lines.append(reg)
        reg = None
    upper = doc.vendor.isupper()
    lines += address(rng, c, upper)[: rng.choice([1, 2, 2, 3])]
    if rng.random() < 0.7:
        lines.append(phone(rng, c))
    if reg:
        lines.append(reg)
    return lines


def footers(s: Style, n: int) -> list[str]:
    pool = FOOTERS.get(s.language, FOOTERS["en"])
    picked = s.rng.sample(pool, min(n, len(pool)))
    return [s.misread(line.upper() if s.rng.random() < 0.4 else line) for line in picked]


def unit_header(s: Style, words: str) -> str:
    """A column header that names the currency as the unit of its amounts ("Amount(RM)")."""
    return f"{words}({s.mark})" if s.rng.random() < 0.5 else f"{words} ({s.mark})"


def column_header(s: Style, doc: OcrDoc, words: str) -> str:
    """A table's header line; where the document writes its currency as the amounts' unit, the
    last column names it ("Price Amount(RM)")."""
    if s.currency == "unit":
        head, _, last = words.rpartition(" ")
        words = f"{head} {unit_header(s, last)}"
        doc.marks.append(s.mark)
    return words


# ---- amounts -------------------------------------------------------------------------------------


def price(rng: random.Random, c: Country, lo: int, hi: int) -> int:
    """A unit price in minor units between lo and hi of the country's main unit."""
    scale = PRICE_SCALE.get(c.code, 1)
    if c.decimals == 0:
        return rng.randint(lo * scale, max(lo + 1, hi) * scale) // 500 * 500 + 500
    cents = rng.randint(lo * 100 + 10, hi * 100)
    return cents // 10 * 10 if rng.random() < 0.7 else cents


def round_to(minor: int, step: int) -> int:
    return minor if step <= 1 else (minor + step // 2) // step * step


def tendered(total: int, c: Country) -> int:
    """Cash handed over: the next round sum at or above the total."""
    unit = 100 if c.decimals else 1000
    for step in (1, 5, 10, 20, 50, 100, 500, 1000):
        if step * unit >= total:
            return (total + step * unit - 1) // (step * unit) * (step * unit)
    return total


def in_words(units: int, indian: bool) -> str:
    """An amount's whole units in English words ("One Lakh Thirteen Thousand ...")."""
    ones = _words(
        "Zero One Two Three Four Five Six Seven Eight Nine Ten Eleven Twelve Thirteen Fourteen "
        "Fifteen Sixteen Seventeen Eighteen Nineteen"
    )
    tens = _words("_ _ Twenty Thirty Forty Fifty Sixty Seventy Eighty Ninety")

    def small(n: int) -> list[str]:
        out = [ones[n // 100], "Hundred"] if n >= 100 else []
        n %= 100
        if n >= 20:
            out += [tens[n // 10]] + ([ones[n % 10]] if n % 10 else [])
        elif n:
            out.append(ones[n])
        return out

    scales = [(10**7, "Crore"), (10**5, "Lakh"), (1000, "Thousand")] if indian else [
        (10**9, "Billion"), (10**6, "Million"), (1000, "Thousand")]  # fmt: skip
    words: list[str] = []
    for size, name in scales:
        if units >= size:
            words += small(units // size) if units // size < 1000 else [str(units // size)]
            words.append(name)
            units %= size
    words += small(units)
    return " ".join(words) or "Zero"


def render_amount_lines(s: Style, rows: list[tuple[list[str], str]], layout: str) -> list[str]:
    """Rows of (label boxes, amount) as one line each, label above amount, or all labels
    then all amounts (a two-column block read column by column)."""
    if layout == "column":
        return [" ".join(label) for label, _ in rows] + [amount for _, amount in rows]
    out: list[str] = []
    for label, amount in rows:
        if layout == "split" or len(label) > 1:
            out += label
            if s.currency == "prefix" and amount.startswith(s.mark) and s.rng.random() < 0.3:
                out += [s.mark.strip(), amount[len(s.mark) :].strip()]
            else:
                out.append(amount)
        else:
            out += pair(s, label[0], amount, split=False)
    return out


# The renderers live in `ocr_documents` and register themselves here.
RENDER: dict[str, object] = {}


def register(kind: str):
    def add(fn):
        RENDER[kind] = fn
        return fn

    return add


def goods(rng: random.Random, c: Country, n: int) -> tuple[str, list[tuple[str, int, int]]]:
    """(the kind of goods, n lines of them: description, quantity, unit price)."""
    kind = rng.choice(COUNTRY_GOODS[c.code])
    pool = GOODS[kind]
    items = []
    for desc, lo, hi, qmax in rng.sample(pool, min(n, len(pool))):
        items.append((desc, rng.randint(1, qmax), price(rng, c, lo, hi)))
    return kind, items


def services(rng: random.Random, c: Country, n: int) -> list[tuple[str, int, int]]:
    scale = {"IN": 60, "ID": 12000, "MY": 3}.get(c.code, 1)
    out = []
    for desc, lo, hi in rng.sample(SERVICES, n):
        unit = rng.randint(lo, hi) * scale
        minor = unit * 100 if c.decimals else unit
        out.append((desc, rng.choice([1, 1, 1, 2, 3, 4, 6, 10, 12]), minor))
    return out


def person(rng: random.Random, c: Country) -> str:
    return rng.choice(PEOPLE[c.code])


def issue_and_due(rng: random.Random, days: int | None) -> tuple[dt.date, dt.date | None]:
    issue = random_date(rng, 2016, 2025)
    return issue, issue + dt.timedelta(days=days) if days else None


def written_total(doc: OcrDoc) -> str:
    return format_amount(doc.total, doc.country, doc.style.group)[0]
