"""Synthetic training and sample data for the embedded default model.

Two tasks, the ones the example jobs run:

- extraction: typed fields from invoices, receipts and contracts (`business`), and from ones
  that look like OCR output of real documents from many countries (`ocr`, the task
  "extract_ocr");
- summarization: structured summaries of long multi-section reports, done map-reduce over chunks
  (`reports`).

Everything is drawn from a `random.Random` built from a seed, so a seed gives the same data on any
machine. Layout templates are split into a TRAIN and a HELD_OUT set; the committed sample data in
`jobs/data/` uses held-out templates and a seed no training run uses.

This module draws the tasks' examples and holds the command line; what the tasks share (the
instruction strings, value formats, the compact JSON writer) is in `common`, and scoring lives
with the jobs (`flashbeam.jobs.scoring`):

    python -m flashbeam.model.training.synthetic sample-data --out jobs/data
    python -m flashbeam.model.training.synthetic train-data --task extract --n 20000 --seed 1 \
        --out x.jsonl
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Any

from flashbeam.model.training import business as biz
from flashbeam.model.training import business_docs, ocr, report_tasks
from flashbeam.model.training import reports as rep
from flashbeam.model.training.common import (
    DATA_DIR,
    EXTRACT_INSTRUCTION,
    EXTRACT_MAX_TOKENS,
    SAMPLE_SEED,
    SPLITS,
    Example,
    load_schema,
    messages_for,
    write_jsonl,
)

TASKS = ("extract", "summarize", "report", "chunk", "chunk_many", "reduce", "extract_ocr")


def item_rng(seed: int, task: str, split: str, i: int) -> random.Random:
    """The random stream of item i: independent of n, so a prefix of a run is a smaller run."""
    return random.Random(f"flashbeam-synthetic/{task}/{split}/{seed}/{i}")


def generate(
    task: str,
    n: int,
    seed: int,
    templates: str = "train",
    report_layouts: tuple[str, ...] | None = None,
) -> list[Example]:
    """n examples of a task from one seed, using the "train" or "heldout" layout templates
    (reports: only the `report_layouts` named, when given).

    Tasks: "extract" (a document -> its fields), "extract_ocr" (the same for documents as OCR
    writes real ones; it has no held-out layouts: its held-out set is the hand-written
    `jobs/data/ocr_docs.jsonl`), "report" (a whole report -> its summary),
    "chunk" (one part of a report -> a partial summary), "chunk_many" (the same, drawn from the
    parts whose summary lists two or more headings or figures, when the report has such a
    part), "reduce" (partial summaries -> the summary), and "summarize": the map-reduce
    training mix, every chunk of each report followed by its reduce example.
    """
    if templates not in SPLITS:
        raise ValueError(f"templates must be one of {SPLITS}, not {templates!r}")
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
    if task == "extract_ocr" and templates != "train":
        raise ValueError(
            "extract_ocr has no held-out layouts; its held-out evaluation is the hand-written "
            "set jobs/data/ocr_docs.jsonl (flashbeam eval jobs/extract_invoices.yaml)"
        )
    out: list[Example] = []
    i = 0
    while len(out) < n:
        rng = item_rng(seed, task, templates, i)
        if task == "extract":
            batch = [biz.extraction_example(rng, split=templates)]
        elif task == "extract_ocr":
            batch = [ocr.extraction_example(rng)]
        elif task == "report":
            batch = [report_tasks.report_summary_example(rng, templates, report_layouts)]
        elif task in ("chunk", "chunk_many"):
            chunks = report_tasks.chunk_examples(rng, templates, report_layouts)
            many = [c for c in chunks if task == "chunk_many" and _lists_many(c.gold)]
            batch = [rng.choice(many or chunks)]
        elif task == "reduce":
            batch = [report_tasks.reduce_example(rng, templates, report_layouts)]
        else:
            batch = report_tasks.map_reduce_examples(rng, templates, report_layouts)
        for j, ex in enumerate(batch):
            ex.id = f"{task}-{templates}-{seed}-{i}" + (f"-{j}" if len(batch) > 1 else "")
        out.extend(batch)
        i += 1
    return out[:n]


def _lists_many(summary: dict[str, Any]) -> bool:
    """Whether a partial summary lists two or more headings or figures."""
    return any(len(summary[k]) >= 2 for k in ("section_headings", "figures"))


def sample_data() -> dict[str, list[dict[str, Any]]]:
    """The rows of every sample file in jobs/data/, from held-out layouts and `SAMPLE_SEED`."""

    files: dict[str, list[dict[str, Any]]] = {}
    layouts = business_docs.templates_for("heldout")
    docs, gold = [], []
    for i in range(24):
        rng = item_rng(SAMPLE_SEED, "extract", "heldout", i)
        text, fields, _, _ = biz.business_doc(rng, "heldout", layouts[i % len(layouts)])
        docs.append({"id": f"doc-{i + 1:03d}", "text": text})
        gold.append({"id": f"doc-{i + 1:03d}", **fields})
    files["business_docs.jsonl"], files["business_docs.gold.jsonl"] = docs, gold

    report_layouts = [lay for lay in rep.LAYOUTS if lay.split == "heldout"]
    reports, report_gold = [], []
    for i, kind in enumerate(["quarterly", "incident", "project", "incident"]):
        rng = item_rng(SAMPLE_SEED, "report", "heldout", i)
        r = rep.make_report(rng, "heldout", report_layouts[i % len(report_layouts)], kind)
        reports.append({"id": f"report-{i + 1}", "text": r.text})
        report_gold.append({"id": f"report-{i + 1}", **r.gold()})
    files["reports.jsonl"], files["reports.gold.jsonl"] = reports, report_gold

    schema = load_schema("invoice")
    formats: list[dict[str, Any] | None] = [
        {
            "type": "json_schema",
            "json_schema": {"name": "business_document", "strict": True, "schema": schema},
        },
        {"type": "json_object"},
        None,
    ]
    requests, request_gold = [], []
    for i in range(8):
        rng = item_rng(SAMPLE_SEED, "chat", "heldout", i)
        text, fields, _, _ = biz.business_doc(rng, "heldout", layouts[(i + 3) % len(layouts)])
        body: dict[str, Any] = {
            "model": "tiny",
            "messages": messages_for(EXTRACT_INSTRUCTION, text),
            "max_tokens": EXTRACT_MAX_TOKENS,
        }
        if formats[i % 3] is not None:
            body["response_format"] = formats[i % 3]
        cid = f"request-{i + 1}"
        requests.append(
            {"custom_id": cid, "method": "POST", "url": "/v1/chat/completions", "body": body}
        )
        request_gold.append({"id": cid, **fields})
    files["chat_requests.jsonl"], files["chat_requests.gold.jsonl"] = requests, request_gold
    return files


def write_sample_data(out: Path) -> dict[str, int]:
    return {str(out / name): write_jsonl(out / name, rows) for name, rows in sample_data().items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flashbeam.model.training.synthetic", description=__doc__
    )
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sample-data", help="write the example jobs' sample inputs and gold")
    s.add_argument("--out", type=Path, default=DATA_DIR)
    t = sub.add_parser("train-data", help="write training examples as JSONL")
    t.add_argument("--task", choices=TASKS, required=True)
    t.add_argument("--n", type=int, required=True)
    t.add_argument("--seed", type=int, required=True)
    t.add_argument("--templates", choices=SPLITS, default="train")
    t.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "sample-data":
        for path, count in write_sample_data(args.out).items():
            print(f"{path}: {count} rows")
        return 0
    if args.seed == SAMPLE_SEED:
        print(f"seed {SAMPLE_SEED} is the sample data's; pick another", file=sys.stderr)
        return 2
    rows = (ex.to_train_row() for ex in generate(args.task, args.n, args.seed, args.templates))
    print(f"{args.out}: {write_jsonl(args.out, rows)} examples")
    return 0


if __name__ == "__main__":
    # Run the package's copy of this module, so its classes are the ones the generators use.
    from flashbeam.model.training.synthetic import main as _main

    sys.exit(_main())
