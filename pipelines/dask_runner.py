"""`--runner=dask`: Beam's Dask runner, adapted to run flashbeam's pipelines on a
`dask.distributed` cluster.

    flashbeam run JOB.yaml -- --runner=dask --dask_workers=2                  # a local cluster
    flashbeam run JOB.yaml -- --runner=dask --dask_client_address=HOST:8786   # a running one

Beam's `DaskRunner` turns each Beam step into a `dask.bag` operation (its translations of
Create, ParDo, GroupByKey and Flatten are used here as they are). What it does not do, and what
this adapter adds:

- Reshuffle is a no-op there, so a job that starts from one file pattern runs in one partition,
  on one worker. Here it deals the elements round robin into `--dask_npartitions` partitions
  (default: one per worker thread of the cluster) and places partition k on worker k modulo the
  workers: this spreads files and prefix groups over the workers (Dask alone keeps a task where
  its input is).
- Every ParDo's tasks are named after the Beam step (Beam's share one name), so Dask estimates
  each step's task durations apart and the dashboard shows the steps.
- Only the last step's bag is computed there, so a pipeline with two sinks (results, errors)
  writes one. Here every step whose output nobody reads is computed, in one graph.
- It reports no metrics. Here each worker sums the flashbeam counters (`metrics.count`) per Dask
  task and sends the sums to the scheduler when the task's result is stored; the driver keeps
  one sum per task key. A task that is run again because its worker died (killed mid-task, or
  holding a result that is lost) is counted once, like Beam's committed metrics.
- Steps it would run wrongly are refused with a clear error instead: tagged outputs (it merges
  them into one collection), side inputs (it evaluates them by recomputing their inputs) and
  steps it has no translation for (it passes their input through unchanged). flashbeam's
  transforms use none of these (see `transforms`).

`--dask_workers N` starts a `LocalCluster` of N worker processes with one thread each for the
run and closes it afterwards. Each worker process loads one engine (`handler.engine_for`), so a
host needs N times the engine's memory.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import uuid
from collections import Counter, defaultdict
from typing import Any

import apache_beam as beam
import dask
import dask.bag as db
from apache_beam import pvalue
from apache_beam.metrics.execution import MetricKey, MetricResult
from apache_beam.metrics.metric import MetricResults
from apache_beam.metrics.metricbase import MetricName
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pipeline import PipelineVisitor
from apache_beam.runners.dask import overrides
from apache_beam.runners.dask import transform_evaluator as ops
from apache_beam.runners.dask.dask_runner import DaskOptions
from apache_beam.runners.runner import PipelineResult, PipelineRunner, PipelineState
from dask.base import tokenize
from distributed import Client, KilledWorker, LocalCluster, WorkerPlugin, get_worker, wait

from .metrics import NAMESPACE, add_listener, remove_listener
from .run import DaskClusterOptions, check_runner

_TOPIC = "flashbeam-counters"


class DaskRunnerError(RuntimeError):
    """The pipeline cannot run on Dask as built, or the cluster lost it."""


class DaskRunner(PipelineRunner):
    """Runs a pipeline on a dask.distributed cluster (see the module docstring)."""

    @staticmethod
    def is_fnapi_compatible() -> bool:
        return False

    def run_pipeline(self, pipeline, options) -> DaskResult:
        client, cluster = _connect(options)
        try:
            threads = client.nthreads()
            partitions = options.view_as(DaskOptions).npartitions or max(1, sum(threads.values()))
            pipeline.replace_all(overrides.dask_overrides())
            graph = _BagGraph(partitions, sorted(threads))
            pipeline.visit(graph)
            sinks = graph.sinks()
            keys = {str(key) for sink in sinks for key in sink.__dask_graph__()}
            counters = _TaskCounters(uuid.uuid4().hex)
            client.register_plugin(counters, name=counters.name)
            # Unfused: dask.bag fuses each sink's chain of steps on its own, which would run a
            # step that two sinks share once per sink (and count its records twice).
            futures = client.compute(sinks, optimize_graph=False)
        except BaseException:
            _close(client, cluster)
            raise
        return DaskResult(client, cluster, futures, keys, counters, graph.steps)


def _connect(options: PipelineOptions):
    """A client of the cluster the options name, and the LocalCluster started for the run."""
    check_runner(options)
    beam = options.view_as(DaskOptions)
    workers = options.view_as(DaskClusterOptions).dask_workers
    connect = {"timeout": beam.timeout} if isinstance(beam.timeout, int) else {}
    if workers:
        cluster, client = start_local_cluster(workers, connect)
        return client, cluster
    address = {"scheduler_file": beam.scheduler_file} if beam.scheduler_file else {}
    if beam.address:
        address = {"address": beam.address}
    return Client(**address, **connect, name=beam.name), None


def start_local_cluster(workers: int, connect: dict | None = None) -> tuple[LocalCluster, Client]:
    """A LocalCluster of `workers` processes of one thread each, and a client of it. No memory
    limit: a worker that holds an engine is meant to hold it, and the nanny would otherwise
    restart it at its share of the host's memory. Logs at the level of this process's root."""
    level = logging.getLogger().getEffectiveLevel()
    logging.getLogger("distributed").setLevel(level)  # its records reach the root's handlers
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        memory_limit=0,
        dashboard_address=":0",  # its HTTP server is started in any case; any free port
        silence_logs=level,
    )
    client = Client(cluster, **(connect or {}))
    client.register_plugin(_log_level(level), name="flashbeam-log-level")
    return cluster, client


def _close(client, cluster) -> None:
    client.close()
    if cluster is not None:
        cluster.close()


class _BagGraph(PipelineVisitor):
    """Each leaf step of the pipeline as a dask.bag, built with Beam's translations; refuses
    what those translations would run wrongly."""

    def __init__(self, partitions: int, workers: list[str]):
        self.partitions, self.workers = partitions, workers
        self.bags: dict[Any, Any] = {}
        self.read: set[Any] = set()
        self.steps: dict[str, str] = {}  # a bag's key name -> the Beam step it runs
        self.flatten = overrides._Flatten
        self.translations = {
            overrides._Create: ops.Create,
            overrides._GroupByKeyOnly: ops.GroupByKey,
            overrides._Flatten: ops.Flatten,
        }
        # Beam's GroupByKey translation already groups the values and drops their windows.
        self.passed_through = {overrides._GroupAlsoByWindow}
        self.reshuffle = overrides._Reshuffle

    def visit_transform(self, node) -> None:
        _check_runnable(node)
        kind = type(node.transform)
        inputs = [self._bag(value) for value in node.inputs]
        if kind is self.reshuffle:
            bag = self._redistribute(inputs[0], node.full_label)
        elif kind in self.passed_through:
            bag = inputs[0]
        elif kind is beam.ParDo:
            op = ops.ParDo(node, bag_kwargs={})
            bag = op.apply(input_bag=_StepBag.of(inputs[0], node.full_label))
        elif kind in self.translations:
            op = self.translations[kind](node, bag_kwargs={"npartitions": self.partitions})
            bag = op.apply(input_bag=inputs if kind is self.flatten else (inputs or [None])[0])
        else:
            raise DaskRunnerError(
                f"step {node.full_label!r} ({kind.__module__}.{kind.__name__}) has no "
                "translation in Beam's Dask runner"
            )
        self.bags[node] = bag
        if bag is not None and not any(bag is seen for seen in inputs):
            self.steps[bag.name] = node.full_label

    def _redistribute(self, bag, step: str):
        """Reshuffle: the elements dealt round robin into `partitions` partitions, partition k
        placed on worker k modulo the workers (the steps after it follow their input). Dask
        places a task where its input is, so without this every step after a job's first read
        stays on the worker that read the file; and a GroupByKey's partitions, cut by hash, are
        as uneven as the hashes. The placement is loose: a worker that dies is replaced by any
        other."""
        parts = bag.to_delayed(optimize_graph=False)
        n = self.partitions
        dealt = [dask.delayed(_deal, nout=n)(part, n, i) for i, part in enumerate(parts)]
        gathered = []
        for k in range(n):
            place = [self.workers[k % len(self.workers)]] if self.workers else None
            with dask.annotate(workers=place, allow_other_workers=True):
                pieces = [d[k] for d in dealt]
                name = f"{_token(step)}-{k}-{tokenize(bag.name, k)}"
                gathered.append(dask.delayed(_gather, name=name)(*pieces))
                self.steps[name] = step
        return db.from_delayed(gathered)

    def _bag(self, value):
        if isinstance(value, pvalue.PBegin):
            return None
        self.read.add(value.producer)
        return self.bags[value.producer]

    def sinks(self) -> list[Any]:
        """The bags of the steps whose output no step reads: computing them runs the rest."""
        return [bag for node, bag in self.bags.items() if node not in self.read]


def _deal(partition, n: int, offset: int) -> list[list]:
    """Element j of a partition to piece (j + offset) % n."""
    pieces: list[list] = [[] for _ in range(n)]
    for j, element in enumerate(partition):
        pieces[(j + offset) % n].append(element)
    return pieces


def _gather(*pieces: list) -> list:
    return [element for piece in pieces for element in piece]


def _token(step: str) -> str:
    """A Beam step's label as the name of its Dask tasks."""
    return re.sub(r"[^A-Za-z0-9]+", "_", step).strip("_")


class _StepBag(db.Bag):
    """A bag whose next partition-wise operation is named after the Beam step it runs.

    Beam's ParDo translation maps its input (windowing) and then maps the partitions with one
    generic function, so every ParDo's tasks share one key prefix. Dask's scheduler estimates a
    task's duration per prefix: shared, the engine step looks as cheap as a filter, stays on the
    worker that holds its input and is never moved to an idle worker. Named, it gets its own
    estimate (and its own line in the dashboard)."""

    step = "step"

    @classmethod
    def of(cls, bag: db.Bag, step: str) -> _StepBag:
        named = cls(bag.dask, bag.name, bag.npartitions)
        named.step = _token(step)
        return named

    def map(self, func, *args, **kwargs) -> _StepBag:
        return _StepBag.of(super().map(func, *args, **kwargs), self.step)

    def map_partitions(self, func, *args, **kwargs) -> db.Bag:
        return super().map_partitions(func, *args, token=self.step, **kwargs)


def _check_runnable(node) -> None:
    if node.side_inputs:
        raise DaskRunnerError(
            f"step {node.full_label!r} reads a side input, which Beam's Dask runner evaluates "
            "by recomputing its input; this runner does not run side inputs"
        )
    if len(node.outputs) > 1:
        raise DaskRunnerError(
            f"step {node.full_label!r} has tagged outputs, which Beam's Dask runner merges into "
            "one collection; give the step one output and split it with filters"
        )


def _log_level(level: int) -> WorkerPlugin:
    """A plugin that sets a worker's root log level to the driver's, so that Beam's warnings
    (on import, and per bundle) do not reach the terminal from every worker. Defined inside a
    function so that it is pickled by value: a worker unpickling it imports nothing of ours,
    hence not Beam, before the level is set."""

    class LogLevel(WorkerPlugin):
        def setup(self, worker) -> None:
            logging.getLogger().setLevel(level)

    return LogLevel()


# ---- counters ----------------------------------------------------------------------------------


class _TaskCounters(WorkerPlugin):
    """A worker plugin: flashbeam counters summed per Dask task on each worker, sent to the
    scheduler as an event when the task's result is stored (before the scheduler hears that
    the task is done). A task that fails or dies sends nothing."""

    def __init__(self, run: str):
        self.run = run
        self.name = f"{_TOPIC}-{run}"

    def setup(self, worker) -> None:
        self.worker = worker
        self.tasks: dict[str, Counter] = defaultdict(Counter)
        self.lock = threading.Lock()
        add_listener(self._count)

    def teardown(self, worker) -> None:
        remove_listener(self._count)

    def _count(self, name: str, n: int) -> None:
        try:
            key = get_worker().get_current_task()
        except ValueError:  # not in a task of this worker
            return
        if key is not None:
            with self.lock:
                self.tasks[str(key)][name] += n

    def transition(self, key, start: str, finish: str, **kwargs) -> None:
        if start != "executing":
            return
        with self.lock:
            counts = self.tasks.pop(str(key), None)
        if counts and finish == "memory":
            self.worker.log_event(_TOPIC, {"run": self.run, "key": str(key), "counts": counts})


def _collect_counters(client, run: str, keys: set[str]) -> dict[str, int]:
    """The run's counters: the last event of each of its task keys, summed."""
    per_task = {}
    for _, event in client.get_events(_TOPIC):
        if event.get("run") == run and event.get("key") in keys:
            per_task[event["key"]] = event["counts"]
    totals: Counter = Counter()
    for counts in per_task.values():
        totals.update(counts)
    return dict(totals)


class _Counters(MetricResults):
    """Counters of the flashbeam namespace, as Beam's committed (and attempted) values."""

    def __init__(self, totals: dict[str, int]):
        self.totals = totals

    def query(self, filter=None) -> dict[str, list]:
        counters = []
        for name, value in sorted(self.totals.items()):
            key = MetricKey("", MetricName(NAMESPACE, name))
            if self.matches(filter, key):
                counters.append(MetricResult(key, value, value))
        kinds = (self.DISTRIBUTIONS, self.GAUGES, self.STRINGSETS, self.BOUNDED_TRIES)
        return {self.COUNTERS: counters, **{kind: [] for kind in kinds}, self.HISTOGRAMS: []}


# ---- result ------------------------------------------------------------------------------------


class DaskResult(PipelineResult):
    """A running pipeline; `wait_until_finish` waits for every sink, collects the counters and
    closes the client (and the cluster started for the run). `steps` maps the name in a Dask
    task's key to the Beam step the task runs (for reading the dashboard or a task stream)."""

    def __init__(self, client, cluster, futures, keys, counters: _TaskCounters, steps):
        super().__init__(PipelineState.RUNNING)
        self.client, self.cluster, self.futures = client, cluster, futures
        self.keys, self.counters = keys, counters
        self.steps: dict[str, str] = steps
        self.totals: dict[str, int] | None = None

    def wait_until_finish(self, duration=None) -> str:
        if self._state != PipelineState.RUNNING:
            return self._state
        try:
            timeout = None if duration is None else duration / 1000
            done, pending = wait(self.futures, timeout=timeout, return_when="ALL_COMPLETED")
            if pending:
                return self._state
            for future in self.futures:
                future.result()  # raises the first error of a task
            self.totals = _collect_counters(self.client, self.counters.run, self.keys)
            self._state = PipelineState.DONE
        except KilledWorker as e:
            self._state = PipelineState.FAILED
            raise DaskRunnerError(_killed_message(e)) from e
        except BaseException:
            self._state = PipelineState.FAILED
            raise
        finally:
            if self._state != PipelineState.RUNNING:
                self._release()
        return self._state

    def cancel(self) -> str:
        self.client.cancel(self.futures)
        self._state = PipelineState.CANCELLED
        self._release()
        return self._state

    def metrics(self) -> MetricResults:
        if self.totals is None:
            raise DaskRunnerError("the pipeline has not finished; wait_until_finish first")
        return _Counters(self.totals)

    def _release(self) -> None:
        # A cluster that is already gone has no plugin left to remove.
        with contextlib.suppress(Exception):
            self.client.unregister_worker_plugin(self.counters.name)
        _close(self.client, self.cluster)


def _killed_message(error) -> str:
    return (
        f"Dask worker processes died while running task {error.task!r}, "
        f"{error.allowed_failures + 1} time(s) (the scheduler's allowed-failures), so the job "
        "was stopped. A worker is killed most often for memory: each worker process holds one "
        "engine, so a host needs (workers x model size) of memory; run fewer workers per host "
        "or a smaller model. The worker logs say why it died."
    )
