"""Synthetic business documents before layout: the facts of an invoice, receipt or contract
(`BizDoc`), the rendering context a layout writes them through (`Ctx`: label wordings,
separators, date and money styles, casing, typos), and the registry of layout templates
(`template`; the layouts themselves are in `business_templates`).
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Templates register themselves on import.
from flashbeam.model.training.business_text import (
    BIZ_SUFFIXES,
    BOILERPLATE,
    CITIES,
    FIRST_NAMES,
    INDUSTRIES,
    LABELS,
    NOISE_LINES,
    PREFIXES,
    PROFILE_ONLY,
    SEPARATORS,
    STORES,
    STREET_KINDS,
    STREETS,
    SURNAMES,
)
from flashbeam.model.training.common import (
    CURRENCY_WEIGHTS,
    DOC_DATE_STYLES,
    MONEY_STYLES,
    ZERO_DECIMAL,
    Num,
    format_date,
    format_money,
    money_styles_for,
    random_date,
    typo,
    weighted_choice,
    word_count,
)

FIELDS = (
    "document_type",
    "vendor",
    "customer",
    "document_number",
    "issue_date",
    "due_date",
    "total_amount",
    "currency",
)


KINDS = ("invoice", "receipt", "contract")


CURRENCY_SCALE = {"JPY": 150, "INR": 80, "SEK": 10}


def person_name(rng: random.Random) -> str:
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(SURNAMES)}"


def company_name(rng: random.Random, industry: str) -> str:
    noun = rng.choice(INDUSTRIES[industry][0])
    r = rng.random()
    if r < 0.45:
        base = f"{rng.choice(PREFIXES)} {noun}"
    elif r < 0.7:
        base = f"{rng.choice(SURNAMES)} {noun}"
    elif r < 0.85:
        tail = rng.choice([" LLP", " Ltd", ""])
        return f"{rng.choice(SURNAMES)} & {rng.choice(SURNAMES)}{tail}"
    else:
        base = rng.choice(PREFIXES) + rng.choice(["", " Group", " Works", " Labs"])
    return f"{base} {rng.choice(BIZ_SUFFIXES)}" if rng.random() < 0.8 else base


def store_name(rng: random.Random, store: str) -> str:
    noun = rng.choice(STORES[store][0])
    r = rng.random()
    if r < 0.4:
        return f"{rng.choice(PREFIXES)} {noun}"
    if r < 0.65:
        return f"{rng.choice(FIRST_NAMES)}'s {noun}"
    if r < 0.85:
        return f"The {rng.choice(PREFIXES)} {noun}"
    return f"{rng.choice(PREFIXES)}{rng.choice(['Mart', 'Fresh', 'Go'])} #{rng.randint(2, 480)}"


def address(rng: random.Random) -> list[str]:
    city, postcode, country = rng.choice(CITIES)
    street = f"{rng.randint(1, 240)} {rng.choice(STREETS)} {rng.choice(STREET_KINDS)}"
    return [street, f"{postcode} {city}" if rng.random() < 0.5 else f"{city} {postcode}", country]


def doc_number(rng: random.Random, kind: str, year: int) -> str:
    n = rng.randint(1, 99999)
    forms = {
        "invoice": [
            f"INV-{year}-{n % 10000:04d}",
            f"{n:05d}",
            f"A-{n:05d}",
            f"{year}/{n % 1000:03d}",
            f"INV{n:07d}",
            f"SI-{n}",
            f"F{year}-{n % 10000:04d}",
            f"BL/{year}/{n % 1000}",
        ],
        "receipt": [
            f"{n % 10000:04d}-{rng.randint(100, 999)}-{rng.randint(1000, 9999)}",
            f"T-{n}",
            f"R{year}{n:05d}",
            f"{n % 10000}",
            f"TX{n:06d}",
        ],
        "contract": [
            f"MSA-{year}-{n % 1000:03d}",
            f"C-{n}",
            f"AGR/{year}/{n % 100}",
            f"SOW-{n % 10000:04d}",
            f"LSE-{n % 10000}",
            f"{year}-CT-{n % 1000:03d}",
        ],
    }[kind]
    return rng.choice(forms)


@dataclass
class BizDoc:
    """The facts of one business document; `gold()` is what extraction must return."""

    kind: str
    vendor: str
    customer: str | None
    number: str | None
    issue: dt.date
    due: dt.date | None
    currency: str
    items: list[tuple[str, int, int]]  # (description, quantity, unit price in cents)
    tax_rate: int = 0  # percent
    shipping: int = 0
    discount: int = 0
    tip: int = 0
    has_total: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    total_written: Num | None = None  # set by rendering: the total as the text writes it

    def price(self, cents: int) -> int:
        """A price drawn in dollar-like units, in this document's currency."""
        cents *= CURRENCY_SCALE.get(self.currency, 1)
        return round(cents, -2) if self.currency in ZERO_DECIMAL else cents

    @property
    def subtotal(self) -> int:
        return sum(q * p for _, q, p in self.items)

    @property
    def tax(self) -> int:
        cents = round((self.subtotal - self.discount) * self.tax_rate / 100)
        return round(cents, -2) if self.currency in ZERO_DECIMAL else cents

    @property
    def total(self) -> int:
        return self.subtotal - self.discount + self.shipping + self.tax + self.tip

    def gold(self) -> dict[str, Any]:
        return {
            "document_type": self.kind,
            "vendor": self.vendor,
            "customer": self.customer,
            "document_number": self.number,
            "issue_date": self.issue.isoformat(),
            "due_date": self.due.isoformat() if self.due else None,
            "total_amount": self.total_written if self.has_total else None,
            "currency": self.currency if self.has_total else None,
        }


def _items(rng: random.Random, pool: list[tuple[str, int, int, int]], n: int, doc: BizDoc) -> list:
    out = []
    for desc, lo, hi, qmax in rng.sample(pool, min(n, len(pool))):
        cents = rng.randint(lo * 100, hi * 100)
        cents = cents // 100 * 100 if rng.random() < 0.3 else cents // 5 * 5
        out.append((desc, rng.randint(1, qmax), doc.price(cents)))
    return out


MISSING = {  # kind -> probability that the document leaves the field out
    "invoice": {"customer": 0.08, "number": 0.07, "due": 0.18, "total": 0.0},
    "receipt": {"customer": 0.7, "number": 0.2, "due": 1.0, "total": 0.0},
    "contract": {"customer": 0.0, "number": 0.25, "due": 0.25, "total": 0.18},
}


def make_doc(rng: random.Random, kind: str, profile: str = "") -> BizDoc:
    """Draw the facts of one document; `profile` is a store or industry the template asks for.

    Every field is drawn, then some are left out; what was left out is kept in
    `extra["dropped"]` so tests can check the text never states it."""
    currency = weighted_choice(rng, CURRENCY_WEIGHTS)
    issue = random_date(rng)
    if kind == "receipt":
        store = profile if profile in STORES else rng.choice(sorted(set(STORES) - PROFILE_ONLY))
        doc = BizDoc(
            kind, store_name(rng, store), person_name(rng), None, issue, None, currency, []
        )
        doc.items = _items(rng, STORES[store][1], rng.randint(2, 6), doc)
        doc.tax_rate = rng.choice([0, 5, 7, 8, 10, 13, 20])
        doc.extra["store"] = store
    else:
        industry = profile if profile in INDUSTRIES else rng.choice(list(INDUSTRIES))
        other = rng.choice(list(INDUSTRIES))
        customer = company_name(rng, other) if rng.random() < 0.7 else person_name(rng)
        doc = BizDoc(kind, company_name(rng, industry), customer, None, issue, None, currency, [])
        doc.items = _items(rng, INDUSTRIES[industry][1], rng.randint(1, 5), doc)
        doc.extra["industry"] = industry
        if kind == "invoice":
            doc.tax_rate = rng.choice([0, 5, 8, 10, 19, 20, 21])
            doc.discount = int(round(doc.subtotal * 0.05, -2)) if rng.random() < 0.12 else 0
            doc.shipping = doc.price(rng.randint(5, 60) * 100) if rng.random() < 0.15 else 0
            doc.extra["terms"] = rng.choice([7, 14, 15, 30, 30, 45, 60])
            doc.due = issue + dt.timedelta(days=doc.extra["terms"])
        else:
            doc.items = doc.items[:3]
            doc.extra["months"] = rng.choice([3, 6, 12, 12, 24, 36])
            doc.due = _add_months(issue, doc.extra["months"]) - dt.timedelta(days=1)
    doc.number = doc_number(rng, kind, issue.year)
    doc.extra.update(_details(rng))
    domain = "".join(c for c in doc.vendor.split()[0].lower() if c.isalnum()) or "shop"
    doc.extra["domain"] = f"{domain}.{rng.choice(['com', 'co.uk', 'de', 'io', 'net', 'fr'])}"
    dropped: dict[str, Any] = {}
    for name, p in MISSING[kind].items():
        if rng.random() < p:
            attr = "has_total" if name == "total" else name
            dropped[name] = doc.total if name == "total" else getattr(doc, attr)
            setattr(doc, attr, False if name == "total" else None)
    doc.extra["dropped"] = dropped
    return doc


def _details(rng: random.Random) -> dict[str, Any]:
    """What a document says besides its fields: addresses, phone, contact and other numbers."""
    phone = " ".join(str(rng.randint(lo, hi)) for lo, hi in [(20, 99), (1000, 9999), (1000, 9999)])
    return dict(
        vendor_address=address(rng),
        customer_address=address(rng),
        phone=f"+{rng.randint(1, 61)} {phone}",
        contact=person_name(rng),
        po=f"PO-{rng.randint(10000, 99999)}",
        customer_id=f"C{rng.randint(1000, 99999)}",
        last4=f"{rng.randint(0, 9999):04d}",
        time=f"{rng.randint(7, 21):02d}:{rng.randint(0, 59):02d}",
        vat=f"{rng.choice(['GB', 'DE', 'FR', 'NL', 'SE'])}{rng.randint(10**8, 10**9 - 1)}",
        company_no=f"{rng.randint(10**6, 10**8 - 1):08d}",
    )


def _add_months(d: dt.date, months: int) -> dt.date:
    y, m = divmod(d.month - 1 + months, 12)
    return dt.date(d.year + y, m + 1, min(d.day, 28))


class Ctx:
    """The look of one document: labels, separators, casing, typos, date and money styles."""

    def __init__(self, rng: random.Random, doc: BizDoc):
        self.rng, self.doc = rng, doc
        self.case = rng.choices(["asis", "upper", "lower"], weights=[80, 15, 5])[0]
        self.sep = rng.choice(SEPARATORS)
        self.pad = rng.random() < 0.35  # align values in kv blocks
        self.typo_p = rng.choice([0.0, 0.0, 0.04, 0.1])
        self.date_style = rng.choice(DOC_DATE_STYLES)
        styles = money_styles_for(doc.currency)
        # Comma decimals mostly where they are usual.
        usual = doc.currency in ("EUR", "SEK", "CHF")
        weights = [1.0 if MONEY_STYLES[s][1] == "." or usual else 0.25 for s in styles]
        self.money_style = rng.choices(styles, weights=weights)[0]
        self.trim = rng.random() < 0.25
        self.blank = rng.choice(["\n\n", "\n\n", "\n", "\n\n\n"])
        self._labels: dict[str, str] = {}

    def label(self, key: str, case: str | None = None) -> str:
        if key not in self._labels:
            text = self.rng.choice(LABELS[key])
            if self.rng.random() < self.typo_p:
                text = typo(text, self.rng)
            self._labels[key] = text
        text = self._labels[key]
        case = case or self.case
        return text.upper() if case == "upper" else text.lower() if case == "lower" else text

    def kv(self, key: str, value: str, width: int = 18) -> str:
        lab = self.label(key)
        if self.pad:
            return f"{(lab + ':').ljust(width)} {value}"
        return f"{lab}{self.sep}{value}"

    def date(self, d: dt.date) -> str:
        return format_date(d, self.date_style)

    def money(self, cents: int) -> str:
        return format_money(cents, self.doc.currency, self.money_style, self.trim)[0]

    def total(self) -> str:
        """The total as written; also fixes the gold number to the same digits."""
        text, num = format_money(self.doc.total, self.doc.currency, self.money_style, self.trim)
        self.doc.total_written = num
        return text

    def upper_names(self) -> None:
        """An all-caps layout writes the names in capitals too; the gold copies them as written."""
        self.doc.vendor = self.doc.vendor.upper()
        if self.doc.customer:
            self.doc.customer = self.doc.customer.upper()

    def items_table(self, style: str | None = None) -> str:
        style = style or self.rng.choice(["aligned", "pipe", "at", "dots", "semicolon"])
        d, rows = self.doc, []
        w = max(len(desc) for desc, _, _ in d.items) + 2
        if style == "pipe":
            rows = ["| Description | Qty | Unit price | Amount |", "|---|---:|---:|---:|"]
        elif style == "aligned":
            rows = [f"{'Description'.ljust(w)}{'Qty':>5}  {'Price':>14}  {'Amount':>14}"]
        for desc, q, p in d.items:
            unit, line = self.money(p), self.money(q * p)
            rows.append(
                {
                    "pipe": f"| {desc} | {q} | {unit} | {line} |",
                    "aligned": f"{desc.ljust(w)}{q:>5}  {unit:>14}  {line:>14}",
                    "at": f"{q} x {desc} @ {unit} = {line}",
                    "dots": f"{desc} ({q}) {'.' * max(3, 34 - len(desc))} {line}",
                    "semicolon": f"{desc}; {q}; {unit}; {line}",
                }[style]
            )
        return "\n".join(rows)

    def totals(self, total_key: str = "total", right: bool = False) -> list[str]:
        d, lines = self.doc, []
        parts = [("subtotal", d.subtotal, d.tax_rate or d.discount or d.shipping)]
        parts += [("discount", -d.discount, d.discount), ("shipping", d.shipping, d.shipping)]
        for key, cents, show in parts:
            if show:
                lines.append(
                    (self.label(key), self.money(cents) if cents >= 0 else "-" + self.money(-cents))
                )
        if d.tax_rate:
            lines.append((f"{self.label('tax')} ({d.tax_rate}%)", self.money(d.tax)))
        lines.append((self.label(total_key), self.total()))
        if right:
            return [f"{lab + ':':>30} {val:>16}" for lab, val in lines]
        return [f"{lab}{self.sep}{val}" for lab, val in lines]


def assemble(ctx: Ctx, blocks: list[str | None], filler: str, target: int) -> str:
    """Join blocks; at a `None`, paragraphs of boilerplate until the text has about `target`
    words; a few short noise lines between blocks."""
    rng, d = ctx.rng, ctx.doc
    pool = [s.format(**d.extra, vendor=d.vendor) for s in BOILERPLATE[filler]]
    rng.shuffle(pool)
    words = sum(word_count(b) for b in blocks if b)
    out: list[str] = []
    for block in blocks:
        if block is not None:
            out.append(block)
            continue
        while pool and words < target:
            para = " ".join(pool.pop() for _ in range(min(len(pool), rng.randint(1, 3))))
            words += word_count(para)
            out.append(para)
    for _ in range(rng.choice([0, 0, 1, 2])):
        line = rng.choice(NOISE_LINES).format(**d.extra)
        out.insert(rng.randint(1, len(out)), line)
    text = ctx.blank.join(b.strip("\n") for b in out if b and b.strip())
    if rng.random() < 0.3:  # trailing spaces, as in pasted text
        text = "\n".join(
            ln + " " * rng.randint(1, 3) if rng.random() < 0.2 else ln for ln in text.split("\n")
        )
    return text + "\n"


@dataclass(frozen=True)
class Template:
    name: str
    kind: str
    split: str  # "train" or "heldout"
    render: Callable[[Ctx], list[str | None]]
    profile: str = ""  # the store or industry the layout belongs to
    filler: str = ""  # the boilerplate pool, when not the kind's own


TEMPLATES: list[Template] = []


TARGET_WORDS = {"invoice": (150, 300), "receipt": (140, 230), "contract": (170, 360)}


def template(name: str, kind: str, split: str, profile: str = "", filler: str = "") -> Callable:
    def register(fn: Callable[[Ctx], list[str | None]]) -> Callable:
        TEMPLATES.append(Template(name, kind, split, fn, profile, filler or kind))
        return fn

    return register


def templates_for(split: str, kind: str | None = None) -> list[Template]:
    return [t for t in TEMPLATES if t.split == split and (kind is None or t.kind == kind)]
