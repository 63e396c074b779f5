"""The summarization tasks over synthetic reports: a report cut into chunks as the pipeline cuts
it, each chunk's partial summary, the reduce step's input, and the training examples of each
step (whole report, chunk, reduce, and the map-reduce mix).
"""

from __future__ import annotations

import json
import random
import re
from typing import Any

from flashbeam.model.training.common import (
    CHUNK_INSTRUCTION,
    REDUCE_INSTRUCTION,
    REPORT_INSTRUCTION,
    Example,
    dumps,
    messages_for,
    verbatim_sources,
    word_count,
)
from flashbeam.model.training.reports import (
    CHUNK_WORDS,
    Report,
    make_report,
    partial_summary,
    partial_to_final,
)

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _is_heading(block: str) -> bool:
    lines = block.split("\n")
    return len(lines) <= 2 and word_count(lines[0]) <= 8 and not lines[0].rstrip().endswith(".")


def chunk_report(text: str, max_words: int) -> list[str]:
    """Split at paragraph breaks (then sentence breaks) into chunks of at most ~`max_words`;
    a heading stays with the paragraph after it. Facts never straddle two chunks."""
    units: list[tuple[str, bool]] = []  # (text, continues the paragraph of the unit before)
    for para in re.split(r"\n\s*\n", text.strip()):
        sentences = _SENTENCE_END.split(para) if word_count(para) > max_words else [para]
        piece: list[str] = []
        first = True
        for sentence in sentences:
            if piece and word_count(" ".join([*piece, sentence])) > max_words:
                units.append((" ".join(piece), not first))
                piece, first = [], False
            piece.append(sentence)
        units.append((" ".join(piece), not first))
    chunks: list[str] = []
    cur, words = "", 0
    for i, (unit, cont) in enumerate(units):
        n = word_count(unit)
        # A heading only starts where the paragraph after it fits too.
        need = n + word_count(units[i + 1][0]) if _is_heading(unit) and i + 1 < len(units) else n
        if cur and words + need > max_words and not _is_heading(cur.rsplit("\n\n", 1)[-1]):
            chunks.append(cur)
            cur, words = "", 0
        cur = (cur + (" " if cont else "\n\n") + unit) if cur else unit
        words += n
    if cur:
        chunks.append(cur)
    return chunks


def merge_partials(partials: list[dict[str, Any]]) -> dict[str, Any]:
    """The whole report's summary from its chunks' partial summaries, in chunk order."""

    def first(key: str) -> Any:
        return next((p[key] for p in partials if p.get(key) is not None), None)

    headings = list(dict.fromkeys(h for p in partials for h in p.get("section_headings", [])))
    people = list(dict.fromkeys(n for p in partials for n in p.get("people", [])))
    figures, seen = [], set()
    for p in partials:
        for f in p.get("figures", []):
            if (f["name"], f["value"]) not in seen:
                seen.add((f["name"], f["value"]))
                figures.append({"name": f["name"], "value": f["value"]})
    return partial_to_final(
        {
            "title": first("title"),
            "report_type": first("report_type"),
            "author": first("author"),
            "report_date": first("report_date"),
            "section_headings": headings,
            "people": people,
            "figures": figures,
            "key_point": first("key_point"),
        }
    )


def document_id(rng: random.Random) -> str:
    """An id for a report as a job's input might carry it (the pipelines name it in prompts)."""
    n = rng.randint(1, 9999)
    return rng.choice(
        [f"report-{n}", f"RPT-{rng.randint(2021, 2026)}-{n:03d}", f"doc-{n:04d}", f"r{n}",
         "".join(rng.choice("0123456789abcdef") for _ in range(8))]
    )  # fmt: skip


def chunk_user_content(doc_id: str, index: int, count: int, text: str) -> str:
    """The map step's user turn as the pipelines frame a part of a split document (see
    `flashbeam.pipelines.prompts.document_requests`); a document in one piece is sent as is."""
    if count == 1:
        return text
    return f"Part {index + 1} of {count} of document {doc_id}:\n\n{text}"


def reduce_user_content(partials: list[dict[str, Any]], doc_id: str) -> str:
    """The reduce step's user turn as the pipelines frame the parts' outputs (see
    `flashbeam.pipelines.prompts.reduce_request` and `render_part`): each partial summary as
    JSON, numbered, in chunk order."""
    listing = "\n\n".join(
        f"Part {i + 1}:\n{json.dumps(p, ensure_ascii=False)}" for i, p in enumerate(partials)
    )
    return f"Outputs for the consecutive parts of document {doc_id}:\n\n{listing}"


def report_summary_example(
    rng: random.Random, split: str = "train", layouts: tuple[str, ...] | None = None
) -> Example:
    """A whole report -> its summary (for inputs that fit the model's context in one piece)."""
    report = make_report(rng, split, layouts=layouts)
    gold = report.gold()
    msgs = messages_for(REPORT_INSTRUCTION, report.text)
    ex = Example("", "report", report.layout, msgs, dumps(gold), gold, report.text)
    ex.sources = verbatim_sources(report.text, gold, computed=("section_count",))
    return ex


def _chunk_examples(report: Report, chunks: list[str], doc_id: str) -> list[Example]:
    out = []
    for i, chunk in enumerate(chunks):
        gold = partial_summary(report, chunk)
        msgs = messages_for(CHUNK_INSTRUCTION, chunk_user_content(doc_id, i, len(chunks), chunk))
        ex = Example("", "chunk", report.layout, msgs, dumps(gold), gold, chunk)
        ex.sources = verbatim_sources(chunk, gold)
        out.append(ex)
    return out


def _reduce(report: Report, chunks: list[str], doc_id: str) -> Example:
    partials = [partial_summary(report, c) for c in chunks]
    gold = merge_partials(partials)
    text = reduce_user_content(partials, doc_id)
    msgs = messages_for(REDUCE_INSTRUCTION, text)
    ex = Example("", "reduce", report.layout, msgs, dumps(gold), gold, text)
    ex.sources = verbatim_sources(text, gold, computed=("section_count",))
    return ex


def chunk_examples(
    rng: random.Random, split: str = "train", layouts: tuple[str, ...] | None = None
) -> list[Example]:
    """Every chunk of one report -> its partial summary."""
    report = make_report(rng, split, layouts=layouts)
    chunks = chunk_report(report.text, rng.randint(*CHUNK_WORDS))
    return _chunk_examples(report, chunks, document_id(rng))


def reduce_example(
    rng: random.Random, split: str = "train", layouts: tuple[str, ...] | None = None
) -> Example:
    """The partial summaries of one report's chunks -> the report's summary."""
    report = make_report(rng, split, layouts=layouts)
    chunks = chunk_report(report.text, rng.randint(*CHUNK_WORDS))
    return _reduce(report, chunks, document_id(rng))


def map_reduce_examples(
    rng: random.Random, split: str = "train", layouts: tuple[str, ...] | None = None
) -> list[Example]:
    """One report's whole map-reduce: each chunk's example, then reduce examples for two
    different chunkings (reduce examples are otherwise rare)."""
    report = make_report(rng, split, layouts=layouts)
    chunks = chunk_report(report.text, rng.randint(*CHUNK_WORDS))
    other = chunk_report(report.text, rng.randint(*CHUNK_WORDS))
    doc_id = document_id(rng)
    return [
        *_chunk_examples(report, chunks, doc_id),
        _reduce(report, chunks, doc_id),
        _reduce(report, other, doc_id),
    ]
