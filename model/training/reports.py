"""Synthetic long reports (quarterly, incident, project) and their structured summaries.

A report is longer than one chunk (1,500-3,000 words), so the summarization job works
map-reduce: each chunk gives a partial summary (`CHUNK_INSTRUCTION`) and the partials are merged
(`REDUCE_INSTRUCTION`, or `merge_partials` without a model). Every factual field of the summary
can be read from exactly one place in the text, so partial summaries merge without conflicts:
title, author and date from the header; one heading per section; each person by full name; each
figure as "<count> <name>" once; the one-sentence summary as the report's "Overall, ..." line.
"""

from __future__ import annotations

import datetime as dt
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flashbeam.model.training import report_text as txt
from flashbeam.model.training.business_docs import company_name
from flashbeam.model.training.business_text import FIRST_NAMES, PREFIXES, SURNAMES
from flashbeam.model.training.common import (
    DOC_DATE_STYLES,
    MONTHS,
    format_date,
    random_date,
    word_count,
)

REPORT_KINDS = ("quarterly", "incident", "project")


REPORT_WORDS = (1600, 2800)


CHUNK_WORDS = (150, 400)  # chunk sizes seen in training; the job's budget is ~512 tokens


@dataclass
class Figure:
    name: str
    value: int
    written: (
        str  # the exact text that states it: "1,284 support tickets" or "support tickets: 1,284"
    )


@dataclass
class Report:
    kind: str
    title: str
    author: str
    date: dt.date
    date_written: str
    headings: list[str] = field(default_factory=list)  # heading text, as written, in order
    heading_lines: list[str] = field(default_factory=list)  # the heading's line in the text
    people: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    headline: str = ""
    text: str = ""
    layout: str = ""

    def gold(self) -> dict[str, Any]:
        return partial_to_final(partial_summary(self, self.text))


class _Writer:
    """Fills sentence slots for one report; {p} cycles through the people so all are named,
    and no sentence is written twice."""

    def __init__(self, rng: random.Random, slots: dict[str, str], people: list[str]):
        self.rng, self.slots, self.people, self._next = rng, slots, people, 0
        self.used: set[str] = set()

    def person(self) -> str:
        p = self.people[self._next % len(self.people)]
        self._next += 1
        return p

    def fill(self, sentence: str) -> str:
        r = self.rng
        values = dict(self.slots)
        values.update(pct=str(r.randint(2, 45)), month=r.choice(MONTHS))
        values.update(region=r.choice(txt.REGIONS), product=r.choice(txt.PRODUCTS))
        values["time"] = f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}"
        values["thing"] = r.choice(txt.THINGS)
        if "{p}" in sentence:
            values["p"] = self.person()
        return sentence.format(**values)

    def fresh(self, make: Callable[[], str], tries: int = 8) -> str | None:
        """A sentence not yet used in this report, or None."""
        for _ in range(tries):
            s = make()
            if s not in self.used:
                self.used.add(s)
                return s
        return None

    def clause_sentence(self, kind: str) -> str:
        clause = self.fill(self.rng.choice(txt.CLAUSES[kind]))
        if self.rng.random() < 0.5:
            return f"{self.fill(self.rng.choice(txt.OPENERS))} {clause}."
        return clause[0].upper() + clause[1:] + "."

    def activity_sentence(self) -> str:
        r = self.rng
        return self.fill(f"{r.choice(txt.SUBJECTS)} {r.choice(txt.ACTIONS)}{r.choice(txt.TAILS)}.")


def _figure_sentence(w: _Writer, kind: str, fig: tuple, value: int) -> tuple[str, str]:
    name, _, _, past, pp = fig
    written = f"{value:,}" if value >= 1000 and w.rng.random() < 0.8 else str(value)
    frame = w.rng.choice(txt.FIGURE_FRAMES)
    sentence = frame.format(
        v=written,
        name=name,
        past=past,
        pp=pp,
        period=txt.PERIOD[kind],
        p=w.person() if "{p}" in frame else "",
        cmp=w.rng.choice(txt.COMPARISONS),
        judgement=w.rng.choice(txt.JUDGEMENTS),
    )
    return sentence[0].upper() + sentence[1:], f"{written} {name}"


def _section_paragraphs(w: _Writer, kind: str, pool: list[str], words: int) -> list[list[str]]:
    """Paragraphs (lists of sentences) of about `words` words: the section's own sentences
    spread through it, the rest clause, activity and generic sentences."""
    r = w.rng
    own = r.sample(pool, len(pool))
    paras: list[list[str]] = []
    total = 0
    while total < words:
        para: list[str] = []
        for _ in range(r.randint(3, 6)):
            roll = r.random()
            if own and roll < 0.35:
                s = w.fill(own.pop())
            elif roll < 0.5:
                s = w.fresh(lambda: w.fill(r.choice(txt.GENERIC)))
            elif roll < 0.75:
                s = w.fresh(lambda: w.clause_sentence(kind))
            else:
                s = w.fresh(w.activity_sentence)
            if s:
                para.append(s)
                total += word_count(s)
        if para:
            paras.append(para)
    return paras


def _people(rng: random.Random, n: int, author: str) -> list[str]:
    names: list[str] = []
    firsts = rng.sample(FIRST_NAMES, n + 1)
    while len(names) < n:
        name = f"{firsts[len(names)]} {rng.choice(SURNAMES)}"
        if name != author and name.split()[1] != author.split()[1]:
            names.append(name)
    return names


def make_report(
    rng: random.Random,
    split: str = "train",
    layout: Layout | None = None,
    kind: str = "",
    layouts: tuple[str, ...] | None = None,
) -> Report:
    """Draw and render one report with a layout of the split (or the one given); `layouts`
    names the layouts of the split to draw from (None: all of them)."""
    layout = layout or rng.choice(layouts_of(split, layouts))
    kind = kind or rng.choice(REPORT_KINDS)
    date = random_date(rng, 2022, 2026)
    author = f"{rng.choice(FIRST_NAMES)} {rng.choice(SURNAMES)}"
    people = _people(rng, rng.randint(2, 5), author)
    slots = _slots(rng, date)
    w = _Writer(rng, slots, people)
    title = rng.choice(txt.TITLES[kind]).format(**slots)
    written = format_date(date, rng.choice(DOC_DATE_STYLES))
    report = Report(kind, title, author, date, written, layout=layout.name)

    sections = txt.SECTIONS[kind]
    chosen = [sections[0]] + sorted(
        rng.sample(sections[1:], rng.randint(4, min(8, len(sections) - 1))),
        key=sections.index,
    )
    per_section = rng.randint(*REPORT_WORDS) // len(chosen)
    bodies = [_section_paragraphs(w, kind, pool, per_section) for _, pool in chosen]
    report.headline = w.fill(rng.choice(txt.HEADLINES[kind]))
    bodies[0][0].insert(rng.randint(1, len(bodies[0][0])), report.headline)
    names = [h for h, _ in chosen]
    _add_figures(report, w, names, bodies)
    for person in people:  # everyone named at least once, somewhere after the summary
        if not any(person in s for b in bodies for para in b for s in para):
            para = rng.choice(rng.choice(bodies[1:]))
            para.insert(rng.randint(0, len(para)), rng.choice(txt.PERSON_LINES).format(p=person))
    _render(report, layout, rng, names, bodies, people)
    return report


def layouts_of(split: str, names: tuple[str, ...] | None = None) -> list[Layout]:
    """The split's layouts, in `LAYOUTS` order; only those named, when `names` is given."""
    of_split = [lay for lay in LAYOUTS if lay.split == split]
    if names is None:
        return of_split
    unknown = sorted(set(names) - {lay.name for lay in of_split})
    if unknown or not names:
        raise ValueError(
            f"report layouts {unknown or '(none)'} are not {split} layouts; choose from "
            + ", ".join(lay.name for lay in of_split)
        )
    return [lay for lay in of_split if lay.name in names]


def _slots(rng: random.Random, date: dt.date) -> dict[str, str]:
    system = rng.choice(txt.SYSTEMS)
    quarter = (date.month - 1) // 3  # the last full quarter before the report
    incident = date - dt.timedelta(days=rng.randint(2, 12))
    return {
        "team": rng.choice(txt.TEAMS),
        "company": company_name(rng, "consulting").split(" ")[0],
        "system": system,
        "System": system.title(),
        "cause": rng.choice(txt.CAUSES),
        "codename": rng.choice(PREFIXES),
        "goal": rng.choice(txt.GOALS),
        "q": str(quarter or 4),
        "year": str(date.year if quarter else date.year - 1),
        "ref": f"INC-{rng.randint(1000, 9999)}",
        "month": rng.choice(MONTHS),
        "incident_date": format_date(incident, rng.choice(DOC_DATE_STYLES)),
    }


def _add_figures(
    report: Report, w: _Writer, names: list[str], bodies: list[list[list[str]]]
) -> None:
    """3-5 counts, each stated once: in a sentence of some section after the first, or all
    together as a bullet list in a closing section of their own."""
    rng, kind = w.rng, report.kind
    bullets = rng.random() < 0.25
    for fig in rng.sample(txt.FIGURES[kind], rng.randint(3, 5)):
        value = rng.randint(fig[1], fig[2])
        if bullets:
            written = f"{value:,}" if value >= 1000 else str(value)
            report.figures.append(Figure(fig[0], value, f"{fig[0]}: {written}"))
            continue
        sentence, surface = _figure_sentence(w, kind, fig, value)
        para = rng.choice(rng.choice(bodies[1:]))
        para.insert(rng.randint(0, len(para)), sentence)
        report.figures.append(Figure(fig[0], value, surface))
    if bullets:
        names.append(rng.choice(["Key Figures", "Key Metrics", "Figures at a Glance"]))
        bodies.append([[f"- {f.written}" for f in report.figures]])


def _render(
    report: Report,
    layout: Layout,
    rng: random.Random,
    names: list[str],
    bodies: list[list[list[str]]],
    people: list[str],
) -> None:
    header, heading = layout.render(report, rng)
    blocks = [header]
    for i, (name, paras) in enumerate(zip(names, bodies), start=1):
        line, text = heading(i, name)
        report.headings.append(text)
        report.heading_lines.append(line)
        blocks.append(line)
        sep = "\n" if paras and paras[0] and paras[0][0].startswith("- ") else " "
        blocks.extend(sep.join(p) for p in paras)
    report.text = "\n\n".join(blocks) + "\n"
    # The text must state each fact exactly once, or partial summaries could disagree.
    for needle in [report.title, report.author, report.date_written, report.headline]:
        if report.text.count(needle) != 1:
            raise AssertionError(f"{needle!r} is not stated exactly once in a {layout.name} report")
    for f in report.figures:
        if len(re.findall(rf"\b{re.escape(f.name)}\b", report.text)) != 1:
            raise AssertionError(f"figure {f.name!r} is not stated exactly once")
    report.people = [p for p in people if p in report.text]


AUTHOR_LABELS = ["Author", "Prepared by", "Written by", "Report owner", "Compiled by"]


DATE_LABELS = ["Date", "Report date", "Published", "Issued", "Date of report"]


Heading = Callable[[int, str], tuple[str, str]]  # (number, name) -> (line in text, heading text)


@dataclass(frozen=True)
class Layout:
    name: str
    split: str
    render: Callable[[Report, random.Random], tuple[str, Heading]]


def _labels(rng: random.Random) -> tuple[str, str]:
    return rng.choice(AUTHOR_LABELS), rng.choice(DATE_LABELS)


def _markdown(r: Report, rng: random.Random) -> tuple[str, Heading]:
    al, dl = _labels(rng)
    head = f"# {r.title}\n\n**{al}:** {r.author}\n**{dl}:** {r.date_written}"
    if rng.random() < 0.5:
        head += "\n**Classification:** Internal"
    numbered = rng.random() < 0.6

    def heading(i: int, name: str) -> tuple[str, str]:
        text = f"{i}. {name}" if numbered else name
        return f"## {text}", text

    return head, heading


def _plain_numbered(r: Report, rng: random.Random) -> tuple[str, Heading]:
    al, dl = _labels(rng)
    head = f"{r.title}\n{al}: {r.author}\n{dl}: {r.date_written}"
    mark = rng.choice([".", ")"])
    return head, lambda i, name: (f"{i}{mark} {name}", f"{i}{mark} {name}")


def _memo(r: Report, rng: random.Random) -> tuple[str, Heading]:
    to = rng.choice(txt.AUDIENCES)
    head = f"MEMORANDUM\n\nTO: {to}\nFROM: {r.author}\nDATE: {r.date_written}\nSUBJECT: {r.title}"
    return head, lambda i, name: (name.upper(), name.upper())


def _caps_headings(r: Report, rng: random.Random) -> tuple[str, Heading]:
    al, dl = _labels(rng)
    head = f"{r.title}\n{dl}: {r.date_written} | {al}: {r.author}"
    numbered = rng.random() < 0.5

    def heading(i: int, name: str) -> tuple[str, str]:
        text = f"{i}. {name.upper()}" if numbered else name.upper()
        return text, text

    return head, heading


def _section_word(r: Report, rng: random.Random) -> tuple[str, Heading]:
    al, dl = _labels(rng)
    head = f"{r.title}\n{'=' * len(r.title)}\n{al}: {r.author}\n{dl}: {r.date_written}"
    sep = rng.choice([": ", " - ", ". "])
    return head, lambda i, name: (f"Section {i}{sep}{name}", f"Section {i}{sep}{name}")


def _underlined(r: Report, rng: random.Random) -> tuple[str, Heading]:
    head = f"{r.title}\nBy {r.author}, {r.date_written}"
    return head, lambda i, name: (f"{name}\n{'-' * len(name)}", name)


# Bylines and heading styles drawn per report by the two "varied" train layouts: many surface
# forms of the same structure, so the model learns what a byline or a heading is rather than one
# spelling of it. The held-out spellings (`By <name>, <date>`, `Section N`, dash-underlined
# names) are not among them.
BYLINE_VERBS = ["Prepared by", "Written by", "Compiled by", "Submitted by", "Reported by"]


HEADING_WORDS = ["Part", "Chapter", "Topic", "Item", "Area", "Module"]


ROMAN = ["I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI", "XII"]


def _byline(r: Report, rng: random.Random) -> str:
    al, dl = _labels(rng)
    verb = rng.choice(BYLINE_VERBS)
    return rng.choice(
        [
            f"{al}: {r.author}\n{dl}: {r.date_written}",
            f"{dl}: {r.date_written}\n{al}: {r.author}",
            f"{verb} {r.author} on {r.date_written}",
            f"{verb} {r.author}\n{r.date_written}",
            f"{r.author} | {r.date_written}",
            f"{r.date_written}\n{verb} {r.author}",
            f"{al}: {r.author} ({r.date_written})",
        ]
    )


def _ordinal(i: int, style: str) -> str:
    return {"digit": str(i), "roman": ROMAN[i - 1], "letter": "ABCDEFGHIJKL"[i - 1]}[style]


def _word_numbered(r: Report, rng: random.Random) -> tuple[str, Heading]:
    """Headings like `Part II: Budget`, `Topic 3 | Budget` or `C) Budget`."""
    head = f"{r.title}\n{_byline(r, rng)}"
    word = rng.choice([*HEADING_WORDS, ""])
    style = rng.choice(["digit", "roman", "letter"])
    sep = rng.choice([": ", " - ", ". ", " | "] if word else [". ", ") "])

    def heading(i: int, name: str) -> tuple[str, str]:
        text = f"{word} {_ordinal(i, style)}{sep}{name}".strip()
        return text, text

    return head, heading


def _plain_names(r: Report, rng: random.Random) -> tuple[str, Heading]:
    """Headings that are the section's name alone: as is, bold, in capitals or with a colon."""
    head = f"{r.title}\n\n{_byline(r, rng)}"
    style = rng.choice(["plain", "bold", "caps", "colon", "hashes"])

    def heading(i: int, name: str) -> tuple[str, str]:
        text = {"caps": name.upper(), "colon": f"{name}:"}.get(style, name)
        line = {"bold": f"**{name}**", "hashes": f"### {name}"}.get(style, text)
        return line, text

    return head, heading


LAYOUTS = [
    Layout("rep_markdown", "train", _markdown),
    Layout("rep_plain_numbered", "train", _plain_numbered),
    Layout("rep_memo", "train", _memo),
    Layout("rep_caps_headings", "train", _caps_headings),
    Layout("rep_word_numbered", "train", _word_numbered),
    Layout("rep_plain_names", "train", _plain_names),
    Layout("rep_section_word", "heldout", _section_word),
    Layout("rep_underlined", "heldout", _underlined),
]


# ---- the gold summary of any piece of a report ------------------------------------------------


def partial_summary(report: Report, chunk: str) -> dict[str, Any]:
    """The gold partial summary of any piece of the report's text."""
    lines = set(chunk.split("\n"))
    has_title = report.title in chunk
    people = sorted((p for p in report.people if p in chunk), key=chunk.index)
    figures = sorted(
        (f for f in report.figures if f.written in chunk), key=lambda f: chunk.index(f.written)
    )
    headings = []
    for line, text in zip(report.heading_lines, report.headings):
        if line.split("\n")[0] in lines and (line in chunk):
            headings.append(text)
    return {
        "title": report.title if has_title else None,
        "report_type": report.kind if has_title else None,
        "author": report.author if report.author in chunk else None,
        "report_date": report.date.isoformat() if report.date_written in chunk else None,
        "section_headings": headings,
        "people": people,
        "figures": [{"name": f.name, "value": f.value} for f in figures],
        "key_point": report.headline if report.headline in chunk else None,
    }


def partial_to_final(p: dict[str, Any]) -> dict[str, Any]:
    return {
        "title": p["title"] or "",
        "report_type": p["report_type"] or "quarterly",
        "author": p["author"] or "",
        "report_date": p["report_date"] or "",
        "section_count": len(p["section_headings"]),
        "people": p["people"],
        "figures": p["figures"],
        "summary": p["key_point"] or p["title"] or "",
    }
