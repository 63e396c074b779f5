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

_WATCHED = ("items_in", "results_out", "errors_out", "prompt_tokens", "cached_tokens",
            "completion_tokens")  # fmt: skip


class LiveProgress:
    """items done/total, tokens/s, cache hit % and errors, updated on every counter change."""

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
        return f"{tokens:,.0f} tok/s  cache {hit:.0%}  {errors}"

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
    if counts["chunks"]:
        table.add_row("chunks", str(counts["chunks"]))
    table.add_row(
        "requests", f"{counts['requests']} ({counts['retries']} retries, "
        f"{counts['invalid_outputs']} invalid, {counts['engine_errors']} engine errors)"
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
