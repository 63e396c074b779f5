"""`flashbeam bench resume`: what a crash costs a long job, and what it leaves behind.

The README's extraction job (`jobs/extract_invoices.yaml`, the embedded model on the CPU) over
`documents` synthetic business documents (held-out layouts, like the sample data), each run a
`flashbeam run` process of its own, timed from start to exit as a user sees it:

1. a clean run;
2. the same job for another date, killed with SIGKILL at `kill_at` of the clean run's time;
3. the same command again, which resumes from what the killed run made durable.

Reported: the re-run's time over the clean run's (`rerun_over_clean`), the rows and requests it
reused, whether its rows equal the clean run's (all but the cost columns: latency and the
cache hit/miss split), and the bytes left in staging (and beside the partitions) after each
step.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from flashbeam.model.training import business as biz
from flashbeam.model.training.common import SAMPLE_SEED
from flashbeam.model.training.synthetic import item_rng

from .partition import Partition

JOB = Path(__file__).resolve().parent / "extract_invoices.yaml"
COST_COLUMNS = ("latency_s", "prompt_cache_hit_tokens", "prompt_cache_miss_tokens")


def sample_documents(n: int, seed: int = SAMPLE_SEED) -> list[dict[str, Any]]:
    """`n` business documents from the held-out layouts (the first 24 are the sample data's)."""
    layouts = biz.templates_for("heldout")
    docs = []
    for i in range(n):
        rng = item_rng(seed, "extract", "heldout", i)
        text = biz.business_doc(rng, "heldout", layouts[i % len(layouts)]).text
        docs.append({"id": f"doc-{i + 1:04d}", "text": text})
    return docs


def bench_resume(
    documents: int = 384,
    kill_at: float = 0.6,
    job: str | Path = JOB,
    overrides: list[str] | tuple[str, ...] = (),
) -> dict[str, Any]:
    if not 0 < kill_at < 1:
        raise ValueError(f"--kill-at is a fraction of the clean run's time, got {kill_at}")
    with tempfile.TemporaryDirectory(prefix="flashbeam-bench-resume-") as work:
        root = Path(work)
        docs = root / "docs.jsonl"
        docs.write_text("".join(json.dumps(d) + "\n" for d in sample_documents(documents)))
        args = ["run", str(job), "--set", f"input.path={docs}", "--set", "output.path=out/{date}",
                "--no-progress", "--preview", "0"]  # fmt: skip
        for override in overrides:
            args += ["--set", override]
        clean, killed = root / "out" / "2026-01-01", root / "out" / "2026-01-02"
        clean_s = _timed(args + ["--date", "2026-01-01"], root)
        after_clean = Partition.for_path(str(clean)).staging_bytes()

        started = time.perf_counter()
        run = _start(args + ["--date", "2026-01-02"], root)
        time.sleep(kill_at * clean_s)
        run.send_signal(signal.SIGKILL)
        run.wait()
        killed_after_s = time.perf_counter() - started
        after_kill = Partition.for_path(str(killed)).staging_bytes()

        rerun_s = _timed(args + ["--date", "2026-01-02"], root)
        counts = json.loads((killed / "manifest.json").read_text())["counts"]
        return {
            "documents": documents,
            "job": str(job),
            "overrides": list(overrides),
            "kill_at": kill_at,
            "clean_s": round(clean_s, 2),
            "killed_after_s": round(killed_after_s, 2),
            "rerun_s": round(rerun_s, 2),
            "rerun_over_clean": round(rerun_s / clean_s, 3),
            "rows_reused": counts["rows_reused"],
            "requests_reused": counts["requests_reused"],
            "requests_computed": counts["requests"],
            "identical_rows": _rows(clean) == _rows(killed),
            "staging_bytes": {
                "after_clean": after_clean,
                "after_kill": after_kill,
                "after_rerun": Partition.for_path(str(killed)).staging_bytes(),
            },
            "left_beside_partitions": sorted(
                n for n in os.listdir(root / "out") if n not in (clean.name, killed.name)
            ),
        }


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "flashbeam", *args]
    return subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _timed(args: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    run = _start(args, cwd)
    _, err = run.communicate()
    if run.returncode not in (0, 3):
        raise RuntimeError(f"flashbeam {' '.join(args)} failed ({run.returncode}): {err.decode()}")
    return time.perf_counter() - started


def _rows(partition: Path) -> list[dict[str, Any]]:
    rows = []
    for path in sorted(partition.glob("*.parquet")):
        table = pq.read_table(path)
        keep = [c for c in table.column_names if c not in COST_COLUMNS]
        rows += table.select(keep).to_pylist()
    return sorted(rows, key=lambda r: (r["id"], r.get("question_index") or 0))
