"""The same pipelines on the DirectRunner in multi-process and multi-threaded mode, and through
the portable job API (`PortableRunner --job_endpoint=embed`, the API the Spark and Flink runners
use)."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from flashbeam.pipelines import (
    ChunkingConfig,
    GroupingConfig,
    InputConfig,
    OutputConfig,
    PipelineConfig,
    TaskConfig,
    run_pipeline,
)

MULTI_PROCESS = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
PORTABLE = ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"]


def _config(tmp_path, name, input_config, task, engine_config) -> PipelineConfig:
    out = tmp_path / name
    return PipelineConfig(
        input=input_config,
        output=OutputConfig(str(out / "results"), str(out / "errors")),
        task=task,
        engine=engine_config,
    )


def _ids(config, parquet_rows) -> tuple[list, list]:
    results = sorted(r["id"] for r in parquet_rows(config.output.results))
    errors = sorted(e["id"] for e in parquet_rows(config.output.errors))
    return results, errors


@pytest.mark.slow
def test_multi_process_direct_runner_merges_chunk_extractions(
    tmp_path, engine_config, tiny_schema, jsonl, parquet_rows
):
    long_text = " ".join(f"Line {i}: invoice INV-{i} paid in full." for i in range(12))
    jsonl(
        tmp_path / "in" / "docs.jsonl",
        [
            {"id": "long", "text": long_text},
            {"id": "short", "text": "Receipt 9, paid."},
            {"id": "x", "text": ""},
        ],
    )
    task = TaskConfig(
        kind="extract",  # chunk outputs are merged field by field (reduce mode "auto")
        schema=tiny_schema,
        instructions="Extract.",
        max_tokens=8,
        schema_in_prompt=False,
        chunking=ChunkingConfig(max_tokens=64, overlap_tokens=8),
    )
    input_config = InputConfig(str(tmp_path / "in" / "docs.jsonl"), id_field="id")
    config = _config(tmp_path, "mp", input_config, task, engine_config)
    report = run_pipeline(config, MULTI_PROCESS)
    results = {r["id"]: r for r in parquet_rows(config.output.results)}
    errors = parquet_rows(config.output.errors)
    assert report.state == "DONE"
    assert set(results) == {"long", "short"} and [e["id"] for e in errors] == ["x"]
    assert results["long"]["chunk_count"] > 1 and results["long"]["valid"]
    assert isinstance(results["long"]["ok"], bool)
    m = report.metrics  # counters from both worker processes
    assert (m.items_in, m.results_out, m.errors_out) == (3, 2, 1)
    assert m.requests == results["long"]["chunk_count"] + 1


@pytest.mark.slow
def test_portable_runner_gives_the_same_ids_as_the_direct_runner(
    tmp_path, engine_config, tiny_schema, jsonl, parquet_rows
):
    jsonl(
        tmp_path / "in" / "docs.jsonl",
        [{"text": "Invoice 1, paid."}, "{oops", {"text": "Invoice 2, late."}],
    )
    task = TaskConfig(kind="extract", schema=tiny_schema, instructions="Extract.",
                      max_tokens=8, schema_in_prompt=False)  # fmt: skip
    pattern = str(tmp_path / "in" / "*.jsonl")
    direct = _config(tmp_path, "direct", InputConfig(pattern), task, engine_config)
    portable = _config(tmp_path, "portable", InputConfig(pattern), task, engine_config)
    direct_report = run_pipeline(direct, [])
    portable_report = run_pipeline(portable, PORTABLE)
    assert portable_report.state == "DONE"
    assert _ids(direct, parquet_rows) == _ids(portable, parquet_rows)
    assert _ids(portable, parquet_rows) == (["docs.jsonl:1", "docs.jsonl:3"], ["docs.jsonl:2"])
    assert portable_report.metrics.items_in == 3
    assert (portable_report.metrics.results_out, portable_report.metrics.errors_out) == (
        direct_report.metrics.results_out,
        direct_report.metrics.errors_out,
    )


MULTI_THREADED = ["--direct_num_workers=4", "--direct_running_mode=multi_threading"]


@pytest.mark.slow
def test_worker_threads_share_one_engine_loop_and_give_the_same_rows(
    tmp_path, engine_config, tiny_schema, jsonl, parquet_rows, monkeypatch
):
    from flashbeam.model.engine.engine import Engine
    from flashbeam.model.engine.runner import ModelRunner
    from flashbeam.pipelines.handler import release_engines

    texts = [f"Invoice {i} from Firm {i}, total {10 * i} EUR, {'paid' if i % 2 else 'late'}."
             for i in range(12)]  # fmt: skip
    jsonl(tmp_path / "in" / "docs.jsonl", [{"id": f"d{i}", "text": t} for i, t in enumerate(texts)])
    task = TaskConfig(kind="extract", schema=tiny_schema, instructions="Extract.",
                      questions=("Paid?", "Late?"), max_tokens=8,
                      schema_in_prompt=False)  # fmt: skip
    input_config = InputConfig(str(tmp_path / "in" / "docs.jsonl"), id_field="id")
    engine = dataclasses.replace(engine_config, max_batch_size=48)  # an engine of its own
    grouping = GroupingConfig(max_group_requests=2, requests_per_call=2)
    loads, submitters, steppers = [], set(), set()
    load, submit_many, decode = Engine.load, Engine.submit_many, ModelRunner.decode

    def counting_load(*args, **kwargs):
        loads.append(1)
        return load(*args, **kwargs)

    def recording_submit(self, *args, **kwargs):
        submitters.add(threading.get_ident())
        return submit_many(self, *args, **kwargs)

    def recording_decode(self, *args):
        steppers.add(threading.get_ident())
        return decode(self, *args)

    def run(name, options):
        config = dataclasses.replace(
            _config(tmp_path, name, input_config, task, engine), grouping=grouping
        )
        report = run_pipeline(config, options)
        rows = parquet_rows(config.output.results)
        release_engines()
        return report, sorted((r["id"], r["question_index"], r["ok"], r["valid"]) for r in rows)

    _, single = run("single", [])
    monkeypatch.setattr(Engine, "load", staticmethod(counting_load))
    monkeypatch.setattr(Engine, "submit_many", recording_submit)
    monkeypatch.setattr(ModelRunner, "decode", recording_decode)
    report, threaded = run("threaded", MULTI_THREADED)
    assert report.state == "DONE" and threaded == single and len(single) == 24
    # Requests came from several worker threads into one engine, stepped by its one thread.
    assert len(loads) == 1 and len(submitters) > 1 and len(steppers) == 1
    assert not submitters & steppers


BEAMS_DIRECT_RUNNER = ["--runner=apache_beam.runners.direct.direct_runner.SwitchingDirectRunner"]


@pytest.mark.slow
def test_direct_runner_goes_straight_to_the_fn_api_runner_with_beams_rows(
    tmp_path, engine_config, jsonl, parquet_rows, monkeypatch
):
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    from apache_beam.runners.portability.prism_runner import PrismRunner

    from flashbeam.pipelines.direct_runner import DIRECT_RUNNER
    from flashbeam.pipelines.handler import release_engines
    from flashbeam.pipelines.run import resolve_runner

    for args in ([], ["--runner=DirectRunner"], ["--runner=direct"]):
        options = resolve_runner(PipelineOptions(args))
        assert options.view_as(StandardOptions).runner == DIRECT_RUNNER
    jsonl(tmp_path / "in" / "docs.jsonl", [{"text": "Invoice 1, paid."}, "{oops", {"text": "Ok."}])
    task = TaskConfig(kind="generate", instructions="Summarize.", max_tokens=4)
    input_config = InputConfig(str(tmp_path / "in" / "docs.jsonl"))
    prism_runs = []
    prism_run = PrismRunner.run_pipeline

    def recording_prism_run(self, *args, **kwargs):
        prism_runs.append(1)
        return prism_run(self, *args, **kwargs)

    monkeypatch.setattr(PrismRunner, "run_pipeline", recording_prism_run)

    def run(name, options):
        config = _config(tmp_path, name, input_config, task, engine_config)
        report = run_pipeline(config, options)
        release_engines()  # the next run starts from a cold prefix cache too
        rows = sorted((r["id"], r["text"]) for r in parquet_rows(config.output.results))
        return report, rows, _ids(config, parquet_rows)[1]

    ours, beams = run("ours", MULTI_THREADED), run("beams", MULTI_THREADED + BEAMS_DIRECT_RUNNER)
    assert ours[0].state == "DONE" and ours[1:] == beams[1:] and len(ours[1]) == 2
    assert ours[0].metrics == beams[0].metrics
    # Beam's own DirectRunner tried Prism once first; ours did not.
    assert len(prism_runs) == 1
