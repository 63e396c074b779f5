"""Pipeline counters: Beam metrics in the `flashbeam` namespace, read back after a run.

`count(name, n)` increments the Beam counter and tells in-process listeners (a local run's
progress display, see `add_listener`); `read_metrics(result)` reads the counters of a finished
PipelineResult into a `PipelineMetrics`, whose counts reconcile:

    items_in == results_out + errors_out

(an item is a (record, question) pair; an unreadable record is one item).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter

NAMESPACE = "flashbeam"


@dataclass
class PipelineMetrics:
    records_in: int = 0  # input records seen, readable or not
    items_in: int = 0  # (record, question) pairs to answer, plus unreadable records
    chunks: int = 0  # chunks of the documents that were split (0 when none was)
    requests: int = 0  # engine requests (one per chunk and question, plus reduce requests)
    results_out: int = 0  # result rows
    errors_out: int = 0  # error rows
    retries: int = 0  # extra attempts after an invalid output
    invalid_outputs: int = 0  # requests whose last attempt still failed validation
    engine_errors: int = 0  # requests the engine could not run
    constraint_exact: int = 0  # schema requests whose grammar enforced the whole schema
    constraint_relaxed: int = 0  # ... a superset of it (refused keywords dropped)
    constraint_none: int = 0  # ... plain JSON only (validation alone holds the schema)
    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens served from the prefix cache
    completion_tokens: int = 0
    engine_calls: int = 0  # requests handed to the engine, retries included
    oom_splits: int = 0  # engine batches cut in half and retried after running out of memory
    requests_reused: int = 0  # requests answered by an earlier run's finished outcomes
    rows_reused: int = 0  # rows (results and errors) made of reused outcomes only

    @property
    def cache_hit_ratio(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "cache_hit_ratio": self.cache_hit_ratio}


COUNTERS = tuple(f.name for f in fields(PipelineMetrics))
_counters = {name: Metrics.counter(NAMESPACE, name) for name in COUNTERS}
_listeners: list[Callable[[str, int], None]] = []
_listeners_lock = threading.Lock()


def count(name: str, n: int = 1) -> None:
    """Add `n` to counter `name` (one of COUNTERS)."""
    if n == 0:
        return
    _counters[name].inc(n)
    for listener in tuple(_listeners):
        listener(name, n)


def add_listener(listener: Callable[[str, int], None]) -> None:
    """Call `listener(name, n)` on every `count` in this process (local runners only: workers
    in other processes or machines report through Beam metrics alone)."""
    with _listeners_lock:
        _listeners.append(listener)


def remove_listener(listener: Callable[[str, int], None]) -> None:
    with _listeners_lock:
        if listener in _listeners:
            _listeners.remove(listener)


def read_metrics(result) -> PipelineMetrics:
    """The flashbeam counters of a finished `PipelineResult` (committed values where the runner
    reports them, else attempted)."""
    query = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    totals = dict.fromkeys(COUNTERS, 0)
    for counter in query["counters"]:
        name = counter.key.metric.name
        if name in totals:
            value = counter.committed if counter.committed is not None else counter.attempted
            totals[name] += int(value or 0)
    return PipelineMetrics(**totals)
