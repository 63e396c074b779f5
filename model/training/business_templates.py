"""Layout templates for `business`: each renders a `BizDoc` through a `Ctx` as blocks.

A `None` block marks where boilerplate may go to bring the document to its length. Templates
registered with split "heldout" never appear in training data; they rearrange the same
vocabulary (labels, value formats) in layouts the model has not seen.
"""

from __future__ import annotations

import datetime as dt

from flashbeam.model.training.business_docs import Ctx, template


def _meta(c: Ctx, pairs: list[tuple[str, str | None]], shuffle: float = 0.3) -> list[str]:
    lines = [c.kv(key, value) for key, value in pairs if value]
    if c.rng.random() < shuffle:
        c.rng.shuffle(lines)
    return lines


def _invoice_meta(c: Ctx) -> list[str]:
    d = c.doc
    pairs = [("inv_no", d.number), ("inv_date", c.date(d.issue))]
    if d.due:
        pairs.append(("due", c.date(d.due)))
    elif c.rng.random() < 0.5:
        pairs.append(("terms", c.rng.choice(["Due on receipt", f"Net {d.extra['terms']} days"])))
    if c.rng.random() < 0.3:
        pairs.append(("po", d.extra["po"]))
    if c.rng.random() < 0.25:
        pairs.append(("cust_id", d.extra["customer_id"]))
    return _meta(c, pairs)


def _letterhead(c: Ctx, contact: bool = True) -> str:
    d = c.doc
    lines = [d.vendor, *d.extra["vendor_address"][: c.rng.choice([1, 2, 3])]]
    if contact and c.rng.random() < 0.7:
        lines.append(f"Tel {d.extra['phone']} | accounts@{d.extra['domain']}")
    return "\n".join(lines)


def _party(c: Ctx, key: str, name: str | None, addr: bool = True) -> str | None:
    if not name:
        return None
    lines = [f"{c.label(key)}:", name]
    if addr:
        lines += c.doc.extra["customer_address"][: c.rng.choice([1, 2])]
    return "\n".join(lines)


# ---- invoices ------------------------------------------------------------------------------------


@template("inv_classic", "invoice", "train")
def inv_classic(c: Ctx) -> list[str | None]:
    d = c.doc
    title = c.rng.choice(["INVOICE", "Invoice", "TAX INVOICE", "I N V O I C E"])
    extra = []
    if c.rng.random() < 0.12:
        extra.append(
            f"Delivery Date{c.sep}{c.date(d.issue - dt.timedelta(days=c.rng.choice([1, 2, 3])))}"
        )
    return [
        _letterhead(c),
        title,
        "\n".join(_invoice_meta(c) + extra),
        _party(c, "bill_to", d.customer),
        c.items_table(),
        "\n".join(c.totals(right=c.rng.random() < 0.5)),
        None,
    ]


@template("inv_kv_flat", "invoice", "train")
def inv_kv_flat(c: Ctx) -> list[str | None]:
    d = c.doc
    pairs = [("vendor", d.vendor), ("bill_to", d.customer), ("inv_no", d.number)]
    pairs += [("inv_date", c.date(d.issue)), ("due", c.date(d.due) if d.due else None)]
    lines = _meta(c, pairs, shuffle=0.6)
    items = [f"- {desc}, {q} x {c.money(p)}" for desc, q, p in d.items]
    head = c.rng.choice(["Invoice", "INVOICE DETAILS", "Invoice summary", "Bill"])
    return [head, "\n".join(lines), "Items:\n" + "\n".join(items), "\n".join(c.totals()), None]


@template("inv_email", "invoice", "train")
def inv_email(c: Ctx) -> list[str | None]:
    d, r = c.doc, c.rng
    ref = f" {d.number}" if d.number else ""
    head = [
        f"From: {d.extra['contact']} <billing@{d.extra['domain']}>",
        f"Subject: Invoice{ref} from {d.vendor}",
        f"Date: {c.date(d.issue)}",
    ]
    greet = f"Dear {d.customer}," if d.customer else "Hello,"
    what = ", ".join(desc.lower() for desc, _, _ in d.items)
    body = (
        f"Please find below our invoice{ref} dated {c.date(d.issue)} for {what}. "
        f"The total amount of {c.total()} "
        + (f"is due by {c.date(d.due)}." if d.due else "is payable on receipt.")
    )
    if r.random() < 0.5:
        body += " Please quote the invoice number when you pay."
    sign = f"Kind regards,\n{d.extra['contact']}\nAccounts Receivable, {d.vendor}"
    return ["\n".join(head), greet, body, c.items_table(r.choice(["at", "dots"])), None, sign]


@template("inv_prose", "invoice", "train")
def inv_prose(c: Ctx) -> list[str | None]:
    d = c.doc
    to = f"To {d.customer}" if d.customer else "To whom it may concern"
    ref = f"Re: Invoice {d.number}" if d.number else "Re: Invoice for services rendered"
    n = len(d.items)
    p1 = (
        f"{d.vendor} hereby invoices you for the work completed in the period ending "
        f"{c.date(d.issue)}, comprising {n} line item{'s' if n > 1 else ''}."
    )
    p2 = f"The amount due is {c.total()}"
    p2 += f", to be paid no later than {c.date(d.due)}." if d.due else ", payable upon receipt."
    return [_letterhead(c, contact=False), c.date(d.issue), to, ref, p1, c.items_table(), p2, None]


@template("inv_caps_form", "invoice", "train")
def inv_caps_form(c: Ctx) -> list[str | None]:
    c.case = "upper"
    d = c.doc
    if c.rng.random() < 0.5:
        c.upper_names()
    head = f"{d.vendor}\n{' / '.join(d.extra['vendor_address'][:2]).upper()}"
    return [
        head,
        "*** TAX INVOICE ***" if c.rng.random() < 0.5 else "INVOICE",
        "\n".join(_invoice_meta(c)),
        _party(c, "bill_to", d.customer, addr=False),
        c.items_table("aligned"),
        "\n".join(c.totals(right=True)),
        None,
        "THANK YOU FOR YOUR BUSINESS",
    ]


@template("inv_markdown", "invoice", "train")
def inv_markdown(c: Ctx) -> list[str | None]:
    d = c.doc
    title = f"# Invoice {d.number}" if d.number else "# Invoice"
    pairs = [("vendor", d.vendor), ("bill_to", d.customer), ("inv_date", c.date(d.issue))]
    pairs.append(("due", c.date(d.due) if d.due else None))
    meta = [f"**{c.label(k)}:** {v}" for k, v in pairs if v]
    tot = [f"| {ln.replace(c.sep, ' | ', 1)} |" for ln in c.totals()]
    return [title, "\n".join(meta), "## Items", c.items_table("pipe"), "\n".join(tot), None]


@template("inv_compact", "invoice", "train")
def inv_compact(c: Ctx) -> list[str | None]:
    d = c.doc
    top = [f"{c.label('inv_no')} {d.number}" if d.number else "Invoice"]
    top.append(f"{c.label('inv_date')}{c.sep}{c.date(d.issue)}")
    if d.due:
        top.append(f"{c.label('due')}{c.sep}{c.date(d.due)}")
    bill = f"{c.label('bill_to')}{c.sep}{d.customer}" if d.customer else None
    return [
        d.vendor + (f" | {d.extra['vendor_address'][1]}" if c.rng.random() < 0.6 else ""),
        " | ".join(top),
        bill,
        c.items_table(c.rng.choice(["at", "semicolon"])),
        f"{c.label('total')}{c.sep}{c.total()}",
        None,
    ]


@template("inv_two_column", "invoice", "heldout")
def inv_two_column(c: Ctx) -> list[str | None]:
    d = c.doc
    left = [d.vendor, *d.extra["vendor_address"][:2]]
    right = [c.rng.choice(["INVOICE", "Invoice"]), *_invoice_meta(c)]
    rows = max(len(left), len(right))
    left += [""] * (rows - len(left))
    right += [""] * (rows - len(right))
    w = max(len(x) for x in left) + c.rng.randint(4, 10)
    head = "\n".join(f"{a.ljust(w)}{b}".rstrip() for a, b in zip(left, right))
    blocks: list[str | None] = [head]
    if d.customer:
        bill = [f"{c.label('bill_to')}:", d.customer, *d.extra["customer_address"][:2]]
        ship = [f"{c.label('ship_to')}:", *d.extra["customer_address"][:2], ""]
        w2 = max(len(x) for x in bill) + 6
        blocks.append("\n".join(f"{a.ljust(w2)}{b}".rstrip() for a, b in zip(bill, ship)))
    blocks += [c.items_table("aligned"), "\n".join(c.totals(right=True)), None]
    return blocks


@template("inv_statement_email", "invoice", "heldout")
def inv_statement_email(c: Ctx) -> list[str | None]:
    d = c.doc
    head = f"From: {d.vendor} <noreply@{d.extra['domain']}>\nSubject: Your invoice is ready"
    hello = f"Hi {d.customer}," if d.customer else "Hi there,"
    intro = "Your latest invoice is ready. Here is a summary:"
    pairs = [("inv_no", d.number), ("inv_date", c.date(d.issue))]
    pairs.append(("due", c.date(d.due) if d.due else None))
    box = [f"  {ln}" for ln in _meta(c, pairs, shuffle=0.2)]
    box.append(f"  {c.label('total')}{c.sep}{c.total()}")
    items = "What you were billed for:\n" + "\n".join(
        f"* {desc} ({q}): {c.money(q * p)}" for desc, q, p in d.items
    )
    return [head, hello, intro, "\n".join(box), items, None, f"The {d.vendor} team"]


# ---- receipts ------------------------------------------------------------------------------------


@template("rcp_thermal", "receipt", "train")
def rcp_thermal(c: Ctx) -> list[str | None]:
    d, r = c.doc, c.rng
    c.case, width = "upper", r.choice([32, 36, 40])
    c.upper_names()
    c.date_style = r.choice(["us_slash", "us_slash_yy", "eu_dot", "upper_abbr", "iso"])
    center = [d.vendor, *(x.upper() for x in d.extra["vendor_address"][:2]), d.extra["phone"]]
    head = "\n".join(x.center(width).rstrip() for x in center)
    when = f"{c.date(d.issue)} {d.extra['time']}"
    meta = [when] + ([f"{c.label('rcp_no')} {d.number}"] if d.number else [])
    lines = [
        f"{(f'{q} ' if q > 1 else '') + desc.upper():<{width - 12}}{c.money(q * p):>12}"
        for desc, q, p in d.items
    ]
    tot = c.totals("rcp_total")
    if r.random() < 0.35:
        cash = (d.total // 1000 + 1) * 1000
        pay = [f"CASH{c.sep}{c.money(cash)}", f"CHANGE{c.sep}{c.money(cash - d.total)}"]
    else:
        pay = [f"VISA ************{d.extra['last4']}", "APPROVED"]
    if d.customer:
        pay.append(f"{c.label('rcp_customer')}: {d.customer}")
    return [head, "\n".join(meta), "\n".join(lines), "\n".join(tot), "\n".join(pay), None]


@template("rcp_online_order", "receipt", "train")
def rcp_online_order(c: Ctx) -> list[str | None]:
    d = c.doc
    name = d.customer or "customer"
    head = f"{d.vendor}\nOrder confirmation and receipt"
    p1 = f"Hi {name}, thanks for your order! Your payment has been received."
    meta = _meta(c, [("rcp_no", d.number), ("rcp_date", c.date(d.issue))], shuffle=0.5)
    lines = [f"{desc} x{q}  {c.money(q * p)}" for desc, q, p in d.items]
    pay = f"Paid with card ending {d.extra['last4']}."
    return [
        head,
        p1,
        "\n".join(meta),
        "\n".join(lines),
        "\n".join(c.totals("rcp_total")),
        pay,
        None,
    ]


@template("rcp_restaurant", "receipt", "train", profile="restaurant")
def rcp_restaurant(c: Ctx) -> list[str | None]:
    d, r = c.doc, c.rng
    d.tip = round(d.subtotal * r.choice([0, 0.1, 0.12, 0.15, 0.18]))
    server = r.choice(["Server", "Waiter", "Your host"])
    top = [d.vendor, d.extra["vendor_address"][0], ""]
    top += [f"Table {r.randint(1, 40)}   {server}: {d.extra['contact'].split()[0]}"]
    top += [f"{c.label('rcp_date')}{c.sep}{c.date(d.issue)} {d.extra['time']}"]
    if d.number:
        top.append(c.kv("rcp_no", d.number))
    if d.customer:
        top.append(c.kv("rcp_customer", d.customer))
    lines = [f"{q} {desc:<28}{c.money(q * p):>12}" for desc, q, p in d.items]
    tot = c.totals("rcp_total")
    if d.tip:
        tot.insert(-1, f"Tip{c.sep}{c.money(d.tip)}")
    return ["\n".join(top), "\n".join(lines), "\n".join(tot), None]


@template("rcp_payment_ack", "receipt", "train")
def rcp_payment_ack(c: Ctx) -> list[str | None]:
    d = c.doc
    title = f"PAYMENT RECEIPT No. {d.number}" if d.number else "PAYMENT RECEIPT"
    frm = f" from {d.customer}" if d.customer else ""
    what = " and ".join(desc.lower() for desc, _, _ in d.items[:2])
    p1 = (
        f"Received with thanks{frm} the sum of {c.total()} on {c.date(d.issue)} "
        f"in full payment for {what}."
    )
    p2 = f"Payment method: {c.rng.choice(['cash', 'bank transfer', 'card'])}."
    return [d.vendor, title, p1, p2, None, f"Signed for {d.vendor}\n{d.extra['contact']}"]


@template("rcp_kv", "receipt", "train")
def rcp_kv(c: Ctx) -> list[str | None]:
    d = c.doc
    pairs = [("vendor", d.vendor), ("rcp_no", d.number), ("rcp_date", c.date(d.issue))]
    pairs += [("rcp_customer", d.customer)]
    lines = _meta(c, pairs, shuffle=0.5)
    lines.append(c.kv("rcp_total", c.total()))
    lines.append(f"Payment{c.sep}{c.rng.choice(['Visa', 'Mastercard', 'Cash', 'Debit card'])}")
    return ["Receipt", "\n".join(lines), c.items_table(c.rng.choice(["at", "dots"])), None]


@template("rcp_ride", "receipt", "heldout", profile="ride", filler="ride")
def rcp_ride(c: Ctx) -> list[str | None]:
    d, r = c.doc, c.rng
    d.items = [("Base fare", 1, d.price(r.randint(250, 900))), ("Booking fee", 1, d.price(200))]
    d.items.insert(1, ("Distance", 1, d.price(r.randint(500, 4000))))
    d.tax_rate, d.tip = 0, d.price(r.choice([0, 0, 200, 300, 500]))
    who = f", {d.customer.split()[0]}" if d.customer else ""
    head = f"{d.vendor}\nThanks for riding with us{who}!"
    meta = [c.kv("rcp_date", f"{c.date(d.issue)}, {d.extra['time']}")]
    if d.number:
        meta.append(c.kv("rcp_no", d.number))
    if d.customer:
        meta.append(c.kv("rcp_customer", d.customer))
    trip = f"Trip: {d.extra['vendor_address'][0]} to {d.extra['customer_address'][0]}"
    trip += f"\nDistance {r.randint(2, 40)}.{r.randint(0, 9)} km, duration {r.randint(6, 75)} min"
    car = r.choice(["Toyota Prius", "Skoda Octavia", "Tesla Model 3", "Kia Niro", "VW Passat"])
    trip += f"\nDriver: {d.extra['contact'].split()[0]}, {car}"
    fare = [f"{desc}{c.sep}{c.money(p)}" for desc, _, p in d.items]
    if d.tip:
        fare.append(f"Tip{c.sep}{c.money(d.tip)}")
    fare.append(f"{c.label('rcp_total')}{c.sep}{c.total()}")
    return [head, "\n".join(meta), trip, "\n".join(fare), None]


@template("rcp_pos_mixed", "receipt", "heldout")
def rcp_pos_mixed(c: Ctx) -> list[str | None]:
    d, r = c.doc, c.rng
    head = f"{d.vendor}\n{', '.join(d.extra['vendor_address'][:2])}"
    meta = [f"{c.label('rcp_date')}{c.sep}{c.date(d.issue)}   {d.extra['time']}"]
    if d.number:
        meta.append(f"{c.label('rcp_no')}{c.sep}{d.number}")
    meta.append(f"Cashier{c.sep}{r.randint(1, 40):02d}")
    lines = []
    for desc, q, p in d.items:
        lines.append(f"{r.randint(10**11, 10**12 - 1)}  {desc}")
        lines.append(f"    {q} @ {c.money(p)}    {c.money(q * p)}")
    tot = c.totals("rcp_total")
    tendered = (d.total // 1000 + 1) * 1000
    tot += [
        f"Cash tendered{c.sep}{c.money(tendered)}",
        f"Change{c.sep}{c.money(tendered - d.total)}",
    ]
    foot = [f"{c.label('rcp_customer')}{c.sep}{d.customer}"] if d.customer else []
    return [head, "\n".join(meta), "\n".join(lines), "\n".join(tot + foot), None]


# ---- contracts -----------------------------------------------------------------------------------


def _term_sentence(c: Ctx) -> str:
    d = c.doc
    if d.due:
        return (
            f"This Agreement commences on {c.date(d.issue)} and remains in force until "
            f"{c.date(d.due)}, unless terminated earlier in accordance with its terms."
        )
    return (
        f"This Agreement commences on {c.date(d.issue)} and continues until terminated by either "
        "party with thirty days' written notice."
    )


def _fee_sentence(c: Ctx) -> str:
    d = c.doc
    if not d.has_total:
        return "Fees shall be charged at the rates set out in Schedule B, invoiced monthly."
    return (
        f"In consideration of the Services the Client shall pay a total of {c.total()}, "
        "invoiced in instalments as set out in Schedule B."
    )


@template("con_formal", "contract", "train")
def con_formal(c: Ctx) -> list[str | None]:
    d = c.doc
    kind = c.rng.choice(["SERVICES AGREEMENT", "CONSULTING AGREEMENT", "SUPPLY AGREEMENT"])
    ref = f"{c.label('con_no')} {d.number}" if d.number else None
    if d.number and c.rng.random() < 0.5:  # the number in the title, with no label
        kind, ref = f"{kind} {d.number}", None
    p = c.rng.choice(["Provider", "Supplier", "Consultant"])
    parties = (
        f'This {kind.title()} (the "Agreement") is entered into as of {c.date(d.issue)} '
        f'(the "Effective Date") by and between {d.vendor} (the "{p}") and {d.customer} '
        '(the "Client").'
    )
    services = (
        "1. Services. The "
        + p
        + " shall provide "
        + ", ".join(desc.lower() for desc, _, _ in d.items)
        + " as described in Schedule A."
    )
    return [
        kind,
        ref,
        parties,
        services,
        "2. Term. " + _term_sentence(c),
        "3. Fees. " + _fee_sentence(c),
        None,
        f"Signed for {d.vendor}: ____________\nSigned for {d.customer}: ____________",
    ]


@template("con_cover_sheet", "contract", "train")
def con_cover_sheet(c: Ctx) -> list[str | None]:
    d = c.doc
    pairs = [("con_no", d.number), ("provider", d.vendor), ("client", d.customer)]
    pairs += [("con_start", c.date(d.issue)), ("con_end", c.date(d.due) if d.due else None)]
    lines = _meta(c, pairs, shuffle=0.4)
    if d.has_total:
        lines.append(c.kv("con_value", c.total()))
    lines.append(f"Contract owner{c.sep}{d.extra['contact']}")
    scope = "Scope: " + "; ".join(desc for desc, _, _ in d.items) + "."
    return [
        c.rng.choice(["CONTRACT SUMMARY", "Contract cover sheet", "AGREEMENT OVERVIEW"]),
        "\n".join(lines),
        scope,
        None,
    ]


@template("con_lease", "contract", "train")
def con_lease(c: Ctx) -> list[str | None]:
    d, r = c.doc, c.rng
    months = d.extra["months"]
    rent = d.price(r.randint(8, 60) * 10000)
    d.items = [("Rent", months, rent)]
    premises = ", ".join(d.extra["customer_address"][:2])
    title = "RESIDENTIAL LEASE AGREEMENT" if r.random() < 0.5 else "COMMERCIAL LEASE"
    ref = c.kv("con_no", d.number) if d.number else None
    p1 = (
        f'This lease is made on {c.date(d.issue)} between {d.vendor} (the "Landlord") and '
        f'{d.customer} (the "Tenant") for the premises at {premises}.'
    )
    p2 = f"The term of the lease is {months} months, starting on {c.date(d.issue)}" + (
        f" and ending on {c.date(d.due)}." if d.due else ", renewing monthly thereafter."
    )
    p3 = f"The monthly rent is {c.money(rent)}."
    if d.has_total:
        p3 += f" Total rent for the term: {c.total()}."
    p4 = f"A security deposit of {c.money(rent * 2)} is payable on signing."
    return [title, ref, p1, p2, p3, p4, None]


@template("con_numbered_caps", "contract", "train")
def con_numbered_caps(c: Ctx) -> list[str | None]:
    d = c.doc
    head = "MASTER SERVICES AGREEMENT" + (
        f"\n{c.label('con_no', 'upper')}: {d.number}" if d.number else ""
    )
    s1 = f"1. PARTIES\n{c.kv('provider', d.vendor)}\n{c.kv('client', d.customer)}"
    s2 = [c.kv("con_start", c.date(d.issue))]
    if d.due:
        s2.append(c.kv("con_end", c.date(d.due)))
    s3 = "3. COMPENSATION\n" + (
        c.kv("con_value", c.total()) if d.has_total else "As per the rate card in Annex 2."
    )
    return [head, s1, "2. TERM\n" + "\n".join(s2), s3, "4. GENERAL", None]


@template("con_email_summary", "contract", "train")
def con_email_summary(c: Ctx) -> list[str | None]:
    d = c.doc
    in_subject = bool(d.number) and c.rng.random() < 0.5
    subject = f"Signed agreement {d.number}" if in_subject else "Signed agreement"
    head = f"From: {d.extra['contact']} <legal@{d.extra['domain']}>\nSubject: {subject}"
    p1 = (
        f"Hi team, the agreement between {d.vendor} and {d.customer} has now been signed by both "
        "parties. Key terms below."
    )
    bullets = [f"- {c.label('con_no')}: {d.number}"] if d.number and not in_subject else []
    bullets.append(f"- {c.label('con_start')}: {c.date(d.issue)}")
    if d.due:
        bullets.append(f"- {c.label('con_end')}: {c.date(d.due)}")
    if d.has_total:
        bullets.append(f"- {c.label('con_value')}: {c.total()}")
    return [head, p1, "\n".join(bullets), None, f"Thanks,\n{d.extra['contact']}"]


def _contract_letter(c: Ctx, ref: str, p1: str, p2: str, closing: str) -> list[str | None]:
    """A contract written as a letter: letterhead, date, subject line, two paragraphs, signature."""
    d = c.doc
    signature = f"{closing},\n{d.extra['contact']}\n{d.vendor}"
    return [_letterhead(c), c.date(d.issue), ref, p1, p2, None, signature]


@template("con_extension_letter", "contract", "train", filler="letter")
def con_extension_letter(c: Ctx) -> list[str | None]:
    d = c.doc
    what = c.rng.choice(["Extension of Contract", "Amendment to Agreement", "Continuation of"])
    ref = f"Subject: {what} {d.number}" if d.number else "Subject: Contract extension"
    services = ", ".join(desc.lower() for desc, _, _ in d.items)
    p1 = (
        f"Dear {d.customer}, this letter confirms that {d.vendor} will continue to provide "
        f"{services} from {c.date(d.issue)}"
        + (f" until {c.date(d.due)}." if d.due else " until either party gives notice.")
    )
    p2 = (
        f"The contract value for this period is {c.total()}."
        if d.has_total
        else "All other terms of the agreement remain unchanged."
    )
    return _contract_letter(c, ref, p1, p2, "Kind regards")


@template("con_sow", "contract", "heldout")
def con_sow(c: Ctx) -> list[str | None]:
    d = c.doc
    title = f"STATEMENT OF WORK {d.number}" if d.number else "STATEMENT OF WORK"
    # The master agreement's number is a distractor only beside the document's own.
    sub = (
        f"issued under the Master Agreement {d.extra['po'].replace('PO', 'MA')}"
        if d.number
        else ("issued under the Master Agreement between the parties")
    )
    parties = f"{c.kv('provider', d.vendor)}\n{c.kv('client', d.customer)}"
    dates = [c.kv("con_start", c.date(d.issue))]
    if d.due:
        dates.append(c.kv("con_end", c.date(d.due)))
    blocks: list[str | None] = [title, sub, parties, "\n".join(dates)]
    if d.has_total:
        rows = [
            f"| Milestone {i + 1}: {desc} | {c.money(q * p)} |"
            for i, (desc, q, p) in enumerate(d.items)
        ]
        blocks.append("| Deliverable | Fee |\n|---|---|\n" + "\n".join(rows))
        blocks.append(f"{c.label('con_value')}{c.sep}{c.total()}")
    else:
        blocks.append("Fees: time and materials at the rates in the Master Agreement.")
    return [*blocks, None]


@template("con_renewal_letter", "contract", "heldout", filler="letter")
def con_renewal_letter(c: Ctx) -> list[str | None]:
    d = c.doc
    ref = f"Re: Renewal of Agreement {d.number}" if d.number else "Re: Renewal of our agreement"
    p1 = (
        f"Dear {d.customer}, we are pleased to confirm the renewal of your service agreement with "
        f"{d.vendor}, effective {c.date(d.issue)}"
        + (f" through {c.date(d.due)}." if d.due else ", continuing until either party cancels.")
    )
    p2 = (
        f"The total fee for the renewed term is {c.total()}, payable in advance."
        if d.has_total
        else "Your current rates remain unchanged for the renewed term."
    )
    return _contract_letter(c, ref, p1, p2, "Yours sincerely")
