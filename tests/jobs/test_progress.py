"""The progress line: done/total, rows reused, tokens/s and a time left that reused rows do not
make optimistic, all from the pipeline's counters."""

from __future__ import annotations

import io

from rich.console import Console

from flashbeam.jobs.progress import LiveProgress
from flashbeam.pipelines.metrics import count


def test_the_progress_line_counts_reused_rows_apart(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("flashbeam.jobs.progress.time.perf_counter", lambda: clock[0])
    progress = LiveProgress(Console(file=io.StringIO()), "job", total=100)
    with progress:
        assert "ETA --:--" in progress.stats()  # nothing computed yet
        count("items_in", 100)
        count("rows_reused", 40)
        count("results_out", 40)  # the reused rows arrive at once
        assert "40 reused" in progress.stats() and "ETA --:--" in progress.stats()
        clock[0] += 60.0
        count("results_out", 9)
        count("errors_out", 1)
        count("prompt_tokens", 5000)
        count("completion_tokens", 1000)
        # 10 rows computed in 60 s; 50 left: 5 minutes, not the 75 s 50 rows per minute says.
        assert progress.eta_s(60.0) == 300.0
        line = progress.stats()
        assert "100 tok/s" in line and "1 errors" in line and "ETA 5:00" in line
