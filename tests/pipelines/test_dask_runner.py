"""flashbeam's jobs on a dask.distributed LocalCluster (2 worker processes x 1 thread), row for
row against the DirectRunner; one engine per worker process; a worker killed mid-job."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import signal
import sys

import apache_beam as beam
import cloudpickle
import dask
import psutil
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.dask.overrides import dask_overrides
from distributed import Client, WorkerPlugin, get_worker

from flashbeam.cli import main
from flashbeam.jobs.run import RunFailed, plan_job, run_job
from flashbeam.jobs.spec import load_job
from flashbeam.pipelines import (
    ChunkingConfig,
    InputConfig,
    OutputConfig,
    PipelineConfig,
    ReduceConfig,
    TaskConfig,
    run_pipeline,
)
from flashbeam.pipelines.config import ResumeConfig
from flashbeam.pipelines.dask_runner import DaskRunnerError, _BagGraph, start_local_cluster
from flashbeam.pipelines.handler import engine_loads
from flashbeam.pipelines.resume import list_finished

from .conftest import TINY_SCHEMA, read_rows, write_jsonl

# Worker plugins and functions defined here travel to the workers by value: the workers cannot
# import a test module.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

JOBS = os.path.join(os.path.dirname(__file__), "..", "..", "jobs")
EXAMPLE_JOB = os.path.join(JOBS, "extract_invoices.yaml")
OPENAI_BATCH_JOB = os.path.join(JOBS, "openai_batch.yaml")
# Columns that depend on which requests met in which engine (cache hits) or on the clock.
RUN_DEPENDENT = {"latency_s", "prompt_cache_hit_tokens", "prompt_cache_miss_tokens"}
METRICS_RUN_DEPENDENT = {"cached_tokens", "cache_hit_ratio", "engine_calls"}


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes of one thread; a task is retried once after its worker dies."""
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        local, client = start_local_cluster(2)
    try:
        yield client
    finally:
        workers = [w.process.process.pid for w in local.workers.values() if w.process]
        client.close()
        local.close()
        assert not [pid for pid in workers if psutil.pid_exists(pid)], "dask workers left"


def _on(cluster: Client, *more: str) -> list[str]:
    return ["--runner=dask", f"--dask_client_address={cluster.scheduler.address}", *more]


def _config(tmp_path, name, input_config, task, engine_config) -> PipelineConfig:
    out = tmp_path / name
    return PipelineConfig(input_config, OutputConfig(str(out / "results"), str(out / "errors")),
                          task, engine_config)  # fmt: skip


def _rows(prefix: str) -> list[dict]:
    rows = [{k: v for k, v in r.items() if k not in RUN_DEPENDENT} for r in read_rows(prefix)]
    return sorted(rows, key=lambda r: (r["id"], r.get("question_index") or 0, r.get("stage", "")))


def _assert_same_run(direct, dask_run, direct_report, dask_report) -> None:
    assert dask_report.state == direct_report.state == "DONE"
    assert _rows(dask_run.output.results) == _rows(direct.output.results)
    assert _rows(dask_run.output.errors) == _rows(direct.output.errors)
    expected = {k: v for k, v in direct_report.metrics.to_dict().items()
                if k not in METRICS_RUN_DEPENDENT}  # fmt: skip
    got = {k: v for k, v in dask_report.metrics.to_dict().items() if k in expected}
    assert got == expected
    m = dask_report.metrics
    assert m.items_in == m.results_out + m.errors_out > 0


@pytest.mark.slow
def test_extraction_matches_the_direct_runner(tmp_path, cluster, engine_config, tiny_schema):
    write_jsonl(
        tmp_path / "in" / "docs.jsonl",
        [
            {"id": "a", "text": "Invoice 1 from Acme, paid."},
            "{not json",
            {"id": "b", "text": ""},
            {"id": "c", "text": "Receipt 7: two coffees, 6.40 EUR."},
            {"id": "d", "text": "Contract between Bo and Li, signed 2024-03-01."},
        ],
    )
    task = TaskConfig(kind="extract", schema=tiny_schema, instructions="Extract.", max_tokens=8,
                      schema_in_prompt=False, chunking=ChunkingConfig(max_tokens=None))  # fmt: skip
    source = InputConfig(str(tmp_path / "in" / "docs.jsonl"), id_field="id")
    direct = _config(tmp_path, "direct", source, task, engine_config)
    on_dask = _config(tmp_path, "dask", source, task, engine_config)
    direct_report = run_pipeline(direct, [])
    dask_report = run_pipeline(on_dask, _on(cluster))
    _assert_same_run(direct, on_dask, direct_report, dask_report)
    assert [e["stage"] for e in _rows(on_dask.output.errors)] == ["read", "read"]
    assert dask_report.metrics.results_out == 3


def _engine_tasks() -> WorkerPlugin:
    """Records, on each worker, the Dask tasks that called the engine."""

    class EngineTasks(WorkerPlugin):
        def setup(self, worker) -> None:
            from flashbeam.pipelines.metrics import add_listener

            self.tasks: set[str] = set()
            add_listener(self.seen)

        def seen(self, name: str, n: int) -> None:
            if name == "engine_calls":
                self.tasks.add(str(get_worker().get_current_task()))

        def teardown(self, worker) -> None:
            from flashbeam.pipelines.metrics import remove_listener

            remove_listener(self.seen)

    return EngineTasks()


def _engine_use(dask_worker) -> tuple[int, int]:
    return engine_loads(), len(dask_worker.plugins["engine-tasks"].tasks)


@pytest.mark.slow
def test_map_reduce_matches_the_direct_runner_with_one_engine_per_worker(
    tmp_path, cluster, engine_config, tiny_schema
):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "long.txt").write_text(
        "".join(f"Section {i}: revenue grew and staffing held.\n\n" for i in range(8))
    )
    (folder / "short.txt").write_text("A short memo.")
    (folder / "empty.txt").write_text("")
    task = TaskConfig(
        kind="summarize", schema=tiny_schema, instructions="Summarize.", max_tokens=8,
        schema_in_prompt=False, chunking=ChunkingConfig(max_tokens=48, overlap_tokens=8),
        reduce=ReduceConfig(mode="prompt", instructions="Combine.", rounds=2, max_input_tokens=8),
    )  # fmt: skip
    source = InputConfig(str(folder / "*.txt"), "text")
    direct = _config(tmp_path, "direct", source, task, engine_config)
    on_dask = _config(tmp_path, "dask", source, task, engine_config)
    direct_report = run_pipeline(direct, [])
    cluster.register_plugin(_engine_tasks(), name="engine-tasks")
    try:
        # Four partitions on two workers: each worker runs several engine tasks (map, rounds).
        dask_report = run_pipeline(on_dask, _on(cluster, "--dask_npartitions=4"))
        use = cluster.run(_engine_use)
    finally:
        cluster.unregister_worker_plugin("engine-tasks")
    _assert_same_run(direct, on_dask, direct_report, dask_report)
    long_row = next(r for r in _rows(on_dask.output.results) if r["id"] == "long.txt")
    assert long_row["chunk_count"] > 2 and long_row["attempts"] > long_row["chunk_count"]
    # Each worker that ran the engine loaded it once, and more tasks than loads used it.
    loads = [n for n, tasks in use.values() if tasks]
    assert loads and all(n == 1 for n in loads)
    assert sum(tasks for _, tasks in use.values()) > sum(loads)


def _children() -> set[int]:
    """This process's children but multiprocessing's resource tracker, which starts with the
    first worker process and lives as long as this process."""
    found = psutil.Process().children(recursive=True)
    return {p.pid for p in found if "resource_tracker" not in " ".join(p.cmdline())}


def _chat_request(i: int, response_format: dict | None) -> dict:
    body = {"messages": [{"role": "user", "content": f"Say hello to customer {i}."}],
            "max_tokens": 8}  # fmt: skip
    if response_format is not None:
        body["response_format"] = response_format
    return {"custom_id": f"chat-{i}", "body": body}


@pytest.mark.slow
def test_a_chat_job_on_a_cluster_started_for_the_run(tmp_path, checkpoint, monkeypatch, capsys):
    """`flashbeam run ... -- --runner=DaskRunner --dask_workers=1`: the same rows and manifest
    counts as the DirectRunner, and the cluster's processes are gone when the command returns."""
    json_format = {"type": "json_schema", "json_schema": {"name": "t", "schema": TINY_SCHEMA}}
    write_jsonl(
        tmp_path / "in" / "chat.jsonl",
        [_chat_request(1, None), _chat_request(2, json_format), {"custom_id": "chat-3"}],
    )
    monkeypatch.chdir(tmp_path)
    before = _children()
    manifests = {}
    for name, beam_args in (("direct", []), ("dask", ["--runner=DaskRunner", "--dask_workers=1"])):
        code = main(["run", OPENAI_BATCH_JOB, "--no-progress", "--preview=0", "--date=2026-01-31",
                     "--set", f"model.path={checkpoint}", "--set", "input.path=in/chat.jsonl",
                     "--set", f"output.path={name}/{{date}}", "--", *beam_args])  # fmt: skip
        assert code == 3, capsys.readouterr().err  # chat-3 has no body
        manifests[name] = json.loads((tmp_path / name / "2026-01-31" / "manifest.json").read_text())
    assert _children() <= before
    assert manifests["dask"]["counts"] == manifests["direct"]["counts"]
    assert manifests["dask"]["runner"] == "DaskRunner" and manifests["dask"]["reconciled"]
    for table in ("results", "errors"):
        assert _rows(f"dask/2026-01-31/{table}") == _rows(f"direct/2026-01-31/{table}")
    assert [r["id"] for r in _rows("dask/2026-01-31/results")] == ["chat-1", "chat-2"]


def _tiny_job(tmp_path, checkpoint, runner_options: dict, name: str = "out"):
    overrides = [
        f"model.path={checkpoint}",
        f"input.path={tmp_path / 'in' / 'docs.jsonl'}",
        f"output.path={tmp_path / name}/{{date}}",
        "task.schema=" + json.dumps(TINY_SCHEMA),
        "task.grounded=[]",
        "task.max_tokens=8",
        "task.retry.max_attempts=1",
        "engine.torch_threads=1",
    ]
    if runner_options:
        overrides += ["runner.name=dask", f"runner.options={runner_options}"]
    return load_job(EXAMPLE_JOB, overrides)


def _killer(marker: str, every_time: bool) -> WorkerPlugin:
    """Kills its worker process (SIGKILL, as the kernel's OOM killer does) once an engine call
    of a task has returned and before the task does: the first time only (a marker file says it
    happened), or every time."""

    class Killer(WorkerPlugin):
        def setup(self, worker) -> None:
            from flashbeam.pipelines.metrics import add_listener

            add_listener(self.seen)

        def seen(self, name: str, n: int) -> None:
            if name != "requests":
                return
            if not every_time:
                try:
                    os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
                except FileExistsError:
                    return
            os.kill(os.getpid(), signal.SIGKILL)

        def teardown(self, worker) -> None:
            from flashbeam.pipelines.metrics import remove_listener

            remove_listener(self.seen)

    return Killer()


@pytest.mark.slow
def test_a_worker_killed_mid_job(tmp_path, cluster, checkpoint):
    """Killed once: the task runs again on a live worker and the job completes with every
    record once (rows and counts as on the DirectRunner). Killed every time: the job fails
    with a clear error and the partition written before stays as it was."""
    write_jsonl(
        tmp_path / "in" / "docs.jsonl",
        [{"id": f"d{i}", "text": f"Invoice {i} from Acme, {i}0 EUR."} for i in range(4)]
        + ["{not json"],
    )
    date = dt.date(2026, 1, 31)
    direct = run_job(plan_job(_tiny_job(tmp_path, checkpoint, {}, "direct"), date))
    on_dask = plan_job(_tiny_job(tmp_path, checkpoint, _address(cluster)), date)
    marker = str(tmp_path / "killed")
    pids = set(cluster.run(os.getpid).values())
    cluster.register_plugin(_killer(marker, every_time=False), name="killer")
    try:
        survived = run_job(on_dask)
    finally:
        cluster.unregister_worker_plugin("killer")
    assert os.path.exists(marker) and len(pids & {p.pid for p in psutil.process_iter()}) == 1
    partition = tmp_path / "out" / "2026-01-31"
    for table in ("results", "errors"):
        assert _rows(str(partition / table)) == _rows(str(tmp_path / "direct/2026-01-31" / table))
    assert survived.manifest["reconciled"] and survived.exit_code == 3
    assert survived.manifest["counts"] == direct.manifest["counts"]
    before = {p.name: p.read_bytes() for p in partition.iterdir()}

    cluster.register_plugin(_killer(marker, every_time=True), name="killer")
    try:
        with pytest.raises(RunFailed, match="worker processes died while running task"):
            run_job(plan_job(_tiny_job(tmp_path, checkpoint, _address(cluster)), date))
    finally:
        cluster.unregister_worker_plugin("killer")
    assert {p.name: p.read_bytes() for p in partition.iterdir()} == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["2026-01-31"]


@pytest.mark.slow
def test_a_rerun_on_dask_reuses_what_the_workers_kept(
    tmp_path, cluster, engine_config, tiny_schema
):
    """Outcomes made durable by the workers of one run are reused by the workers of the next:
    nothing is computed again and the rows are the same."""
    write_jsonl(
        tmp_path / "in" / "docs.jsonl",
        [{"id": f"d{i}", "text": f"Invoice {i} from Acme, {i}0 EUR."} for i in range(4)],
    )
    task = TaskConfig(kind="extract", schema=tiny_schema, instructions="Extract.", max_tokens=8,
                      schema_in_prompt=False, chunking=ChunkingConfig(max_tokens=None))  # fmt: skip
    source = InputConfig(str(tmp_path / "in" / "docs.jsonl"), id_field="id")
    store = str(tmp_path / "finished")
    first = dataclasses.replace(_config(tmp_path, "first", source, task, engine_config),
                                resume=ResumeConfig(store, (), "first"))  # fmt: skip
    first_report = run_pipeline(first, _on(cluster))
    assert first_report.metrics.requests == 4 and len(list_finished(store)) >= 1
    again = dataclasses.replace(
        _config(tmp_path, "again", source, task, engine_config),
        resume=ResumeConfig(store, tuple(list_finished(store)), "again"),
    )
    report = run_pipeline(again, _on(cluster))
    assert (report.metrics.requests, report.metrics.requests_reused) == (0, 4)
    assert report.metrics.rows_reused == report.metrics.results_out == 4
    assert read_rows(again.output.results) == read_rows(first.output.results)


def _address(cluster: Client) -> dict:
    return {"dask_client_address": cluster.scheduler.address}


# ---- what the runner refuses ---------------------------------------------------------------


def _bags_of(build) -> None:
    pipeline = beam.Pipeline()
    build(pipeline)
    pipeline.replace_all(dask_overrides())
    pipeline.visit(_BagGraph(2, []))


def test_tagged_outputs_and_side_inputs_are_refused():
    def tagged(p):
        _ = p | beam.Create([1]) | "Two" >> beam.ParDo(lambda x: [x]).with_outputs("odd")

    def side_input(p):
        one = p | "One" >> beam.Create([1])
        _ = (
            p
            | beam.Create([2])
            | "Add" >> beam.Map(lambda x, y: x + y, beam.pvalue.AsSingleton(one))
        )

    with pytest.raises(DaskRunnerError, match="step 'Two.* has tagged outputs"):
        _bags_of(tagged)
    with pytest.raises(DaskRunnerError, match="step 'Add.* reads a side input"):
        _bags_of(side_input)


def test_the_runner_needs_a_cluster(tmp_path, engine_config, monkeypatch, capsys):
    config = _config(tmp_path, "x", InputConfig(EXAMPLE_JOB, "text"), TaskConfig(), engine_config)
    with pytest.raises(ValueError, match="--dask_client_address=HOST:PORT .* --dask_workers"):
        run_pipeline(config, ["--runner=DaskRunner"])
    both = ["--runner=dask", "--dask_workers=1", "--dask_client_address=tcp://127.0.0.1:1"]
    with pytest.raises(ValueError, match="not both"):
        run_pipeline(config, PipelineOptions(both))
    # From the command line: a setup error (exit 2), before anything runs.
    write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": "Invoice 1."}])
    monkeypatch.chdir(tmp_path)
    code = main(["run", EXAMPLE_JOB, "--skip-model-check", "--set", "input.path=in.jsonl",
                 "--", "--runner=DaskRunner"])  # fmt: skip
    assert code == 2 and "needs a cluster" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
