"""What a user sees during and after a run: a live progress bar and the summary.

The bar follows the pipeline's counters through `pipelines.add_listener`, which only hears
workers that run in this process (the DirectRunner in memory); elsewhere the runner's own UI
shows the same counters as Beam metrics.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from flashbeam.pipelines import add_listener, remove_listener

_WATCHED = ("items_in", "results_out", "errors_out", "rows_reused", "prompt_tokens",
            "cached_tokens", "completion_tokens")  # fmt: skip


class LiveProgress:
    """Items done/total, rows reused from an earlier run, tokens/s, cache hit %, errors and the
    time left, updated on every counter change. Every figure is a function of the pipeline's
    Beam counters (`pipelines.metrics`), which other runners show in their own UI:

        done = results_out + errors_out      total = items_in (once the input is read)
        tokens/s = (prompt_tokens + completion_tokens) / elapsed   (computed tokens only)
        ETA = (total - done) / ((done - rows_reused) / elapsed)

    Reused rows arrive early and cost nothing, so they are left out of the rate."""

    def __init__(self, console: Console, label: str, total: int | None = None):
        self.console = console
        self.label = label
        self.total = total
        self.counts = dict.fromkeys(_WATCHED, 0)
        self._lock = threading.Lock()
        self._started = time.perf_counter()
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self._task = None

    def __enter__(self) -> LiveProgress:
        self._started = time.perf_counter()
        self._task = self._progress.add_task(self.label, total=self.total, stats=self.stats())
        self._progress.start()
        add_listener(self._on_count)
        return self

    def __exit__(self, *exc: object) -> None:
        remove_listener(self._on_count)
        self._refresh()
        self._progress.stop()

    def stats(self) -> str:
        c = self.counts
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        tokens = (c["prompt_tokens"] + c["completion_tokens"]) / elapsed
        hit = c["cached_tokens"] / c["prompt_tokens"] if c["prompt_tokens"] else 0.0
        errors = f"[red]{c['errors_out']} errors[/red]" if c["errors_out"] else "0 errors"
        reused = f"{c['rows_reused']} reused  " if c["rows_reused"] else ""
        eta = self.eta_s(elapsed)
        left = "ETA --:--" if eta is None else f"ETA {_clock(eta)}"
        return f"{reused}{tokens:,.0f} tok/s  cache {hit:.0%}  {errors}  {left}"

    def eta_s(self, elapsed: float) -> float | None:
        """Seconds left at the rate of the rows computed so far; None before the first one."""
        c = self.counts
        done = c["results_out"] + c["errors_out"]
        computed = done - c["rows_reused"]
        total = max(self.total or 0, c["items_in"])
        if computed <= 0 or not total:
            return None
        return max(total - done, 0) * elapsed / computed

    def _on_count(self, name: str, n: int) -> None:
        if name not in self.counts:
            return
        with self._lock:
            self.counts[name] += n
        self._refresh()

    def _refresh(self) -> None:
        if self._task is None:
            return
        with self._lock:
            done = self.counts["results_out"] + self.counts["errors_out"]
            total = max(self.total or 0, self.counts["items_in"], done) or None
            stats = self.stats()
        self._progress.update(self._task, completed=done, total=total, stats=stats)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def summary_table(manifest: dict[str, Any], exit_code: int) -> Table:
    """The run's summary: counts, tokens, cache, cost, and where the files are."""
    counts, tokens, cost = manifest["counts"], manifest["tokens"], manifest["hosted_api_cost"]
    status = {0: "[green]all rows valid[/green]", 3: "[yellow]completed with error rows[/yellow]"}
    table = Table(
        title=f"{manifest['job']}  {manifest['date']}  "
        f"({manifest['duration_s']:.1f} s, {manifest['runner']})",
        show_header=False,
        title_justify="left",
    )
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("status", status.get(exit_code, "[red]counts do not reconcile[/red]"))
    table.add_row(
        "records", f"{counts['records_in']} in -> {counts['results']} results, "
        f"{counts['errors']} errors"
    )  # fmt: skip
    if counts["rows_reused"] or counts["requests_reused"]:
        table.add_row(
            "reused", f"{counts['rows_reused']} rows ({counts['requests_reused']} requests) "
            "from the finished results of an earlier run"
        )  # fmt: skip
    if counts["chunks"]:
        table.add_row("chunks", str(counts["chunks"]))
    table.add_row(
        "requests", f"{counts['requests']} ({counts['retries']} retries, "
        f"{counts['invalid_outputs']} invalid, {counts['engine_errors']} engine errors"
        + (f", {counts['oom_splits']} batches split after running out of memory"
           if counts["oom_splits"] else "") + ")"
    )  # fmt: skip
    table.add_row(
        "tokens",
        f"prompt {tokens['prompt']:,} (cached {tokens['cached']:,}, "
        f"{manifest['cache_hit_ratio']:.1%}), completion {tokens['completion']:,}",
    )
    table.add_row("hosted-API cost", f"{cost['total']:.6f} {cost['currency']}")
    for f in manifest["files"]:
        base = manifest["outputs"]["results"]
        path = f["name"] if "/" in f["name"] else f"{base}/{f['name']}"
        table.add_row(f["table"], f"{path} ({f['rows']} rows)")
    table.add_row("manifest", f"{manifest['outputs']['results']}/manifest.json")
    return table
