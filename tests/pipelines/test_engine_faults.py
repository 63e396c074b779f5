"""Engine faults contained: a batch that runs out of memory is split and retried on a fresh
engine; a request that runs out of memory alone, or passes its deadline, ends as an error row
that says why, and the rest of the job goes on. The faults are injected into the network's
forward pass (torch.OutOfMemoryError, as a GPU raises it; a slow step)."""

from __future__ import annotations

import time

import pytest
import torch

from flashbeam.model.network.transformer import Transformer
from flashbeam.pipelines import (
    ChunkingConfig,
    GroupingConfig,
    InputConfig,
    OutputConfig,
    PipelineConfig,
    TaskConfig,
    run_pipeline,
)
from flashbeam.pipelines.handler import engine_loads

SHORT = [{"id": f"s{i}", "text": f"Invoice {i} from Acme, total {9 * i} EUR."} for i in range(3)]
LONG = {"id": "long", "text": " ".join(f"Line {i}: item {i} costs {i} EUR." for i in range(60))}
LONG_CHUNK = 300  # prefill chunks this long are the long document's (the short ones: < 60)


def _run(tmp_path, name, docs, tiny_schema, engine_config, jsonl, grouping=None, **task):
    jsonl(tmp_path / name / "docs.jsonl", docs)
    config = PipelineConfig(
        input=InputConfig(str(tmp_path / name / "docs.jsonl"), id_field="id"),
        output=OutputConfig(str(tmp_path / name / "results"), str(tmp_path / name / "errors")),
        task=TaskConfig(
            kind="extract",
            schema=tiny_schema,
            instructions="Extract.",
            max_tokens=8,
            schema_in_prompt=False,
            chunking=ChunkingConfig(max_tokens=None),
            **task,
        ),  # fmt: skip
        engine=engine_config,
        grouping=grouping or GroupingConfig(),
    )
    report = run_pipeline(config, [])
    assert report.state == "DONE"
    assert report.metrics.items_in == report.metrics.results_out + report.metrics.errors_out
    return report, config


def _inject(monkeypatch, fault):
    """Call `fault(input_ids)` before every forward pass of every engine's network."""
    forward_step = Transformer.forward_step

    def faulty(self, input_ids, *args, **kwargs):
        fault(input_ids)
        return forward_step(self, input_ids, *args, **kwargs)

    monkeypatch.setattr(Transformer, "forward_step", faulty)


def _values(rows):
    return {r["id"]: r["ok"] for r in rows}


def test_a_batch_that_runs_out_of_memory_is_split_and_retried(
    tmp_path, engine_config, tiny_schema, jsonl, parquet_rows, monkeypatch
):
    _, clean = _run(tmp_path, "clean", SHORT, tiny_schema, engine_config, jsonl)
    raised = []

    def once(input_ids):
        if not raised:
            raised.append(input_ids.shape)
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    _inject(monkeypatch, once)
    loads = engine_loads()
    report, config = _run(tmp_path, "oom", SHORT, tiny_schema, engine_config, jsonl)
    assert raised and report.metrics.oom_splits == 1
    assert engine_loads() == loads + 1  # the engine that ran out was replaced
    assert parquet_rows(config.output.errors) == []
    assert _values(parquet_rows(config.output.results)) == _values(
        parquet_rows(clean.output.results)
    )


def test_a_request_that_does_not_fit_alone_is_an_error_row(
    tmp_path, engine_config, tiny_schema, jsonl, parquet_rows, monkeypatch
):
    def long_chunks_run_out(input_ids):
        if input_ids.shape[1] >= LONG_CHUNK:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")

    _inject(monkeypatch, long_chunks_run_out)
    report, config = _run(tmp_path, "big", [*SHORT, LONG], tiny_schema, engine_config, jsonl)
    assert sorted(r["id"] for r in parquet_rows(config.output.results)) == ["s0", "s1", "s2"]
    [error] = parquet_rows(config.output.errors)
    assert error["id"] == "long" and error["stage"] == "engine"
    assert "runs out of memory even alone: its prompt is " in error["reason"]
    assert (
        "it may generate 8 tokens" in error["reason"]
        and "Tried to allocate 9.00 GiB" in (error["reason"])
    )
    assert report.metrics.oom_splits >= 1 and report.metrics.engine_errors == 1


@pytest.mark.slow
def test_a_request_past_its_deadline_is_an_error_row(
    tmp_path, engine_config, tiny_schema, jsonl, parquet_rows, monkeypatch
):
    """One engine call per request (groups of one): the long document's prefill takes longer
    than task.timeout_s; the short ones finish well within it."""
    _inject(monkeypatch, lambda ids: time.sleep(4.0) if ids.shape[1] >= LONG_CHUNK else None)
    one_each = GroupingConfig(max_group_requests=1, requests_per_call=1)
    report, config = _run(tmp_path, "slow", [*SHORT, LONG], tiny_schema, engine_config, jsonl,
                          one_each, timeout_s=2.0)  # fmt: skip
    assert sorted(r["id"] for r in parquet_rows(config.output.results)) == ["s0", "s1", "s2"]
    [error] = parquet_rows(config.output.errors)
    assert error["id"] == "long" and error["stage"] == "engine"
    assert "timed out" in error["reason"] and "task.timeout_s = 2 s" in error["reason"]
