"""The three renderers of `ocr`: a receipt, an invoice and a contract as OCR lines."""

from __future__ import annotations

import datetime as dt
import random
import textwrap

from flashbeam.model.training.common import random_date
from flashbeam.model.training.ocr_docs import Country, OcrDoc, Style
from flashbeam.model.training.ocr_layouts import (
    address,
    broken,
    business_name,
    column_header,
    doc_number,
    footers,
    goods,
    header,
    in_words,
    issue_and_due,
    pair,
    person,
    register,
    registration,
    render_amount_lines,
    round_to,
    services,
    tendered,
)
from flashbeam.model.training.ocr_text import CARD_FOR, LABELS

FOOD = ("food_my", "food_in", "food_eu", "food_id", "cafe_en")


# ---- receipts ------------------------------------------------------------------------------------


@register("receipt")
def receipt(rng: random.Random, c: Country, s: Style) -> OcrDoc:
    doc = OcrDoc("receipt", c, s)
    top = header(rng, c, s, doc, trade=True)
    title = s.label("receipt_title") if rng.random() < 0.6 else None
    if title and rng.random() < 0.15:
        top.insert(0, title)
        title = None
    doc.add(*top, title)
    doc.issue = random_date(rng, 2016, 2025)
    doc.number = doc_number(rng, "receipt", doc.issue.year) if rng.random() < 0.85 else None
    if rng.random() < 0.1:
        doc.customer = person(rng, c)
    kind, items = goods(rng, c, rng.randint(1, 6))
    food = kind in FOOD
    doc.add(*meta_lines(rng, s, doc, table=food and rng.random() < 0.4))
    doc.add(*item_lines(rng, s, doc, items))
    if rng.random() < 0.3:
        doc.add(f"{s.label('count')}: {sum(q for _, q, _ in items)}")
    service = food and rng.random() < 0.3
    doc.add(*totals(rng, s, doc, sum(q * p for _, q, p in items), service))
    doc.add(*footers(s, rng.choice([0, 1, 1, 2, 3])))
    return doc


def meta_lines(rng: random.Random, s: Style, doc: OcrDoc, table: bool) -> list[str]:
    """Number, date and time, cashier, table, member: each beside its label or below it."""
    time = f"{rng.randint(7, 22):02d}:{rng.randint(0, 59):02d}"
    if rng.random() < 0.3:
        time += f":{rng.randint(0, 59):02d}"
    date = s.date(doc.issue)
    entries: list[list[str]] = []
    if doc.number:
        entries.append(pair(s, s.label("number"), doc.number))
    form = rng.random()
    if form < 0.35:
        entries.append(pair(s, s.label("date"), f"{date} {time}"))
    elif form < 0.55:
        entries.append([f"{date} {time}"])
    elif form < 0.8:
        entries.append([f"{s.label('date')}: {date} {s.label('time')}: {time}"])
    else:
        entries.append(pair(s, s.label("date"), date) + pair(s, s.label("time"), time))
    if rng.random() < 0.45:
        who = rng.choice(["01", "02", "ADMIN", "AMIRA", "JASON", "KAREN", "RAVI", "003", "M1"])
        entries.append(pair(s, s.label("cashier"), who))
    if table:
        entries.append([f"{s.label('table')}: {rng.randint(1, 40)} Pax: {rng.randint(1, 8)}"])
    if doc.customer:
        entries.append(pair(s, s.label("member"), doc.customer))
    if rng.random() < 0.4:
        rng.shuffle(entries)
    return [line for entry in entries for line in entry]


def item_lines(
    rng: random.Random, s: Style, doc: OcrDoc, items: list[tuple[str, int, int]]
) -> list[str]:
    """The bought goods in one of the layouts tills print (and OCR breaks up)."""
    layout = rng.choice(["line", "qty_first", "two_line", "table", "at", "barcode"])
    code = rng.choice(["", "", "", " SR", " ZR", " A", " B", " T", " *"])
    lines = []
    if layout == "table" or (s.currency == "unit" and rng.random() < 0.5):
        words = rng.choice(["Item Qty Price Amount", "DESCRIPTION QTY U/PRICE AMOUNT",
                            "Description Qty Total", "QTY ITEM AMT"])  # fmt: skip
        lines.append(column_header(s, doc, words))
    for desc, q, unit in items:
        amount, each = s.amount(q * unit), s.amount(unit)
        upper = desc.upper() if rng.random() < 0.5 else desc
        lines += {
            "line": [f"{upper}{f' x{q}' if q > 1 else ''} {amount}{code}"],
            "qty_first": [f"{q} {upper} {amount}{code}"],
            "two_line": [upper, f"{q} x {each} {amount}{code}"],
            "table": [f"{upper} {q} {each} {amount}{code}"],
            "at": [f"{upper} {q} @ {each}", f"{amount}{code}"],
            "barcode": [str(rng.randint(10**12, 10**13 - 1)), upper, f"{q} {each} {amount}"],
        }[layout]
    return lines


def tax_label(s: Style, name: str, rate: float) -> str:
    written = f"{rate:g}".replace(".", s.country.point)
    return s.rng.choice([f"{name} {written}%", f"{name} @ {written}%", f"{name} ({written}%)"])


def totals(rng: random.Random, s: Style, doc: OcrDoc, sub: int, service: bool) -> list[str]:
    """Subtotal, discount, service charge, tax, rounding, the total due and the payment.
    Sets `doc.total` to the amount due and notes the currency marks written."""
    c = doc.country
    discount = round(sub * rng.choice([0.05, 0.1, 0.15])) if rng.random() < 0.12 else 0
    charge = round((sub - discount) * 0.1) if service else 0
    base = sub - discount + charge
    tax_name, rate = rng.choice(c.taxes)
    inclusive = bool(rate) and rng.random() < 0.4
    halves = tax_name == "CGST+SGST"
    if not rate:
        tax = 0
    elif inclusive:
        tax = round(base * rate / (100 + rate))
    else:
        tax = round(base * rate / (200 if halves else 100)) * (2 if halves else 1)
    pre = base if inclusive else base + tax
    final = round_to(pre, c.rounding) if c.rounding and rng.random() < 0.85 else pre
    rows: list[tuple[str, str, int]] = []
    if discount or charge or (rate and not inclusive) or rng.random() < 0.4:
        rows.append(("subtotal", s.label("subtotal"), sub))
    if discount:
        rows.append(("discount", s.label("discount"), -discount))
    if charge:
        rows.append(("service", f"{s.label('service')} 10%", charge))
    if rate and not inclusive:
        names = ["CGST", "SGST"] if halves else [tax_name]
        for name in names:
            rows.append(("tax", tax_label(s, name, rate / len(names)), tax // len(names)))
    if final != pre or (c.rounding and rng.random() < 0.4):
        rows += [
            ("pre_total", s.label("pre_total"), pre),
            ("rounding", s.label("rounding"), final - pre),
        ]
    rows.append(("total", s.label("total"), final))
    if rng.random() < 0.15:
        words = LABELS[s.language].get("total") or LABELS["en"]["total"]
        rows.append(("total", s.misread(rng.choice(words)), final))
    if inclusive:
        rows.append(
            ("tax", f"{tax_label(s, tax_name, rate)} {rng.choice(['Included', 'incl.'])}", tax)
        )
    paid = payment(rng, s, final)
    rows += paid
    doc.total = final
    doc.amounts.update(subtotal=sub, discount=discount, service=charge, rounding=final - pre)
    doc.amounts.update({"tax_included" if inclusive else "tax": tax})
    doc.amounts.update({role: minor for role, _, minor in paid})
    return amount_block(rng, s, doc, rows)


def payment(rng: random.Random, s: Style, total: int) -> list[tuple[str, str, int]]:
    if rng.random() < 0.55:
        cash = tendered(total, s.country)
        return [("paid", s.label("paid"), cash), ("change", s.label("change"), cash - total)]
    card = rng.choice(CARD_FOR.get(s.language, CARD_FOR["en"]))
    return [("card", card, total)]


def amount_block(
    rng: random.Random, s: Style, doc: OcrDoc, rows: list[tuple[str, str, int]]
) -> list[str]:
    """Write the totals rows in one layout; the total due carries the currency mark (when
    the document writes one); card details and a tax summary may follow."""
    layout = rng.choice(["inline"] * 5 + ["split"] * 2 + ["column"])
    written = []
    unit_done = bool(doc.marks)
    for role, label, minor in rows:
        marked = s.marked_all or (role == "total" and rng.random() < 0.85) or rng.random() < 0.1
        if s.currency == "unit" and role == "total" and not unit_done:
            label, unit_done = f"{label} ({s.mark})", True
        written.append((broken(s, label) if layout != "column" else [label], role, minor, marked))
    if s.currency in ("prefix", "suffix") and not any(m for _, r, _, m in written if r == "total"):
        written = [(lab, r, mi, m or r == "total") for lab, r, mi, m in written]
    if s.currency != "none":
        doc.marks.append(s.mark)
    lines = render_amount_lines(s, [(lab, s.amount(mi, m)) for lab, _, mi, m in written], layout)
    if any(role == "card" for _, role, _, _ in written):
        lines.append(f"CARD NO: {'X' * 12}{rng.randint(1000, 9999)}")
        if rng.random() < 0.6:
            code = rng.choice(["APPROVAL CODE", "AUTH CODE", "APPR", "TID"])
            lines.append(f"{code}: {rng.randint(10**5, 10**8)}")
    return lines


# ---- invoices ------------------------------------------------------------------------------------


@register("invoice")
def invoice(rng: random.Random, c: Country, s: Style) -> OcrDoc:
    doc = OcrDoc("invoice", c, s)
    title = s.label("invoice_title")
    top = header(rng, c, s, doc, trade=rng.random() < 0.3)
    if rng.random() < 0.25:
        doc.add(title)
        title = None
    doc.add(*top, title)
    terms = rng.choice([None, 7, 14, 15, 30, 30, 45, 60])
    doc.issue, due = issue_and_due(rng, terms)
    doc.number = doc_number(rng, "invoice", doc.issue.year) if rng.random() < 0.95 else None
    meta = pair(s, s.label("invoice_no"), doc.number) if doc.number else []
    meta += pair(s, s.label("invoice_date"), s.date(doc.issue))
    sentence_due = due is not None and rng.random() < 0.25
    if due and not sentence_due:
        meta += pair(s, s.label("due"), s.date(due))
    elif terms:
        meta.append(f"Terms: {terms} Days")
    if rng.random() < 0.3:
        meta.append(f"PO No: PO{rng.randint(1000, 99999)}")
    bill = bill_to(rng, c, s, doc)
    doc.add(*(meta + bill if rng.random() < 0.6 else bill + meta))
    items = services(rng, c, rng.randint(1, 4))
    doc.add(*invoice_items(rng, s, doc, items))
    doc.add(*invoice_totals(rng, s, doc, sum(q * p for _, q, p in items)))
    if sentence_due:
        doc.add(f"Please pay by {s.date(due)}.")
    doc.due = due
    if rng.random() < 0.4:
        account = " ".join(str(rng.randint(1000, 9999)) for _ in range(3))
        doc.add(f"Bank A/C No. {account}")
    if rng.random() < 0.3:
        doc.add(f"For {doc.vendor}", "Authorised Signatory")
    return doc


def bill_to(rng: random.Random, c: Country, s: Style, doc: OcrDoc) -> list[str]:
    if rng.random() < 0.08:
        return []
    doc.customer = business_name(rng, c, trade=False) if rng.random() < 0.7 else person(rng, c)
    label = s.label("bill_to")
    head = [f"{label}:", doc.customer] if rng.random() < 0.7 else [f"{label}: {doc.customer}"]
    return head + address(rng, c, doc.customer.isupper())[: rng.choice([0, 1, 2])]


def invoice_items(
    rng: random.Random, s: Style, doc: OcrDoc, items: list[tuple[str, int, int]]
) -> list[str]:
    words = rng.choice(["No Description Qty Unit Price Amount", "Description Qty Rate Amount",
                        "Item Description Quantity Price Total", "Description Amount"])  # fmt: skip
    words = column_header(s, doc, words)
    lines = [words]
    for i, (desc, q, unit) in enumerate(items, 1):
        number = f"{i} " if words.startswith("No") else ""
        if words.endswith("Amount") and "Qty" not in words:
            lines.append(f"{number}{desc} {s.amount(q * unit)}")
        else:
            lines.append(f"{number}{desc} {q} {s.amount(unit)} {s.amount(q * unit)}")
    return lines


def invoice_totals(rng: random.Random, s: Style, doc: OcrDoc, sub: int) -> list[str]:
    c = doc.country
    tax_name, rate = rng.choice(c.taxes)
    halves = tax_name == "CGST+SGST"
    tax = round(sub * rate / (200 if halves else 100)) * (2 if halves else 1) if rate else 0
    doc.total = sub + tax
    doc.amounts.update(subtotal=sub, tax=tax)
    rows = [("subtotal", s.label("subtotal"), sub)]
    for name in (["CGST", "SGST"] if halves else [tax_name]) if rate else []:
        rows.append(
            ("tax", tax_label(s, name, rate / (2 if halves else 1)), tax // (2 if halves else 1))
        )
    rows.append(("total", s.label("total"), doc.total))
    if rng.random() < 0.25:
        rows.append(("total", rng.choice(["Amount Due", "Balance Due", "Total Due"]), doc.total))
    lines = amount_block(rng, s, doc, rows)
    if s.currency != "none" and s.language == "en" and rng.random() < 0.35:
        name = {"MYR": "Ringgit Malaysia", "INR": "Rupees", "SGD": "Singapore Dollars",
                "USD": "US Dollars", "GBP": "Pounds"}.get(c.currency)  # fmt: skip
        if name:
            units = doc.total // (100 if c.decimals else 1)
            words = in_words(units, c.code == "IN")
            lines.append(f"{s.label('words')}: {name} {words} Only")
    return lines


# ---- contracts -----------------------------------------------------------------------------------

CONTRACTS = [
    ("TENANCY AGREEMENT", "Landlord", "Tenant", "monthly rental"),
    ("SERVICE AGREEMENT", "Service Provider", "Client", "service fee"),
    ("MAINTENANCE CONTRACT", "Contractor", "Client", "maintenance fee"),
    ("SUPPLY AGREEMENT", "Supplier", "Buyer", "supply price"),
    ("CONSULTANCY AGREEMENT", "Consultant", "Company", "retainer"),
]


@register("contract")
def contract(rng: random.Random, c: Country, s: Style) -> OcrDoc:
    doc = OcrDoc("contract", c, s)
    title, role1, role2, fee = rng.choice(CONTRACTS)
    doc.vendor = business_name(rng, c, trade=False)
    doc.customer = business_name(rng, c, trade=False) if rng.random() < 0.6 else person(rng, c)
    months = rng.choice([6, 12, 12, 24, 36])
    doc.issue = random_date(rng, 2016, 2025)
    end = _months_later(doc.issue, months) - dt.timedelta(days=1)
    doc.number = doc_number(rng, "contract", doc.issue.year) if rng.random() < 0.7 else None
    start = s.date(doc.issue)
    reg = registration(rng, c)
    where1 = ", ".join(address(rng, c, False))
    where2 = ", ".join(address(rng, c, False))
    paragraphs = [
        rng.choice(
            [
                f"THIS AGREEMENT is made on {start}",
                f"This {title.title()} is entered into on {start}",
            ]
        ),
        f'BETWEEN {doc.vendor} ({reg}) of {where1} (the "{role1}")',
        f'AND {doc.customer} of {where2} (the "{role2}").',
    ]
    if rng.random() < 0.8:
        doc.due = end
        paragraphs.append(
            f"1. The term is {months} months commencing on {start} and expiring on {s.date(end)}."
        )
    else:
        paragraphs.append(f"1. This agreement commences on {start} and continues until terminated.")
    monthly = s.amount(rng.randint(8, 90) * 10000 * (100 if c.decimals == 0 else 1), marked=True)
    if rng.random() < 0.6:
        doc.total = rng.randint(20, 400) * 10000 * (100 if c.decimals == 0 else 1)
        paragraphs.append(
            f"2. The total contract value is {s.amount(doc.total, marked=True)} for the term."
        )
    else:
        paragraphs.append(f"2. The {fee} shall be {monthly} per month, payable in advance.")
    if s.currency in ("prefix", "suffix"):
        doc.marks.append(s.mark)
    keep = [doc.vendor, doc.customer, start, s.date(end)]
    width = rng.randint(40, 60)
    lines = [title] + ([f"Ref. No.: {doc.number}"] if doc.number else [])
    for para in paragraphs:
        lines += wrap(para, width, keep)
    lines += [f"Signed for {doc.vendor}", "________________"]
    doc.add(*lines)
    return doc


def wrap(text: str, width: int, keep: list[str]) -> list[str]:
    """Hard-wrap `text` at `width` as a scanned page does, never inside a `keep` string."""
    for value in keep:
        text = text.replace(value, value.replace(" ", "\0"))
    lines = textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False)
    return [line.replace("\0", " ") for line in lines]


def _months_later(d: dt.date, months: int) -> dt.date:
    y, m = divmod(d.month - 1 + months, 12)
    return dt.date(d.year + y, m + 1, min(d.day, 28))
