"""manifest.json: counts from the counters and from the files must agree; hosted-API cost."""

from __future__ import annotations

import datetime as dt

import pytest

from flashbeam.jobs.manifest import OutputFile, build_manifest, hosted_cost
from flashbeam.jobs.run import JobOutcome
from flashbeam.jobs.spec import PricingSpec
from flashbeam.pipelines import PipelineMetrics


def _manifest(metrics: PipelineMetrics, files: list[OutputFile], **more) -> dict:
    return build_manifest(
        job="j", spec_path="j.yaml", date=dt.date(2026, 1, 2),
        started=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc), duration_s=1.5,
        metrics=metrics, files=files, locations={"results": "o", "errors": "o"},
        input_files=["in.jsonl"], model={"model": "tiny"}, runner="DirectRunner",
        pricing=PricingSpec(), **more,
    )  # fmt: skip


def test_default_prices_are_deepseek_v4_flash():
    m = PipelineMetrics(prompt_tokens=3_000_000, cached_tokens=1_000_000, completion_tokens=500_000)
    cost = hosted_cost(m, PricingSpec())
    assert cost["input_cache_miss"] == pytest.approx(2 * 0.14)
    assert cost["input_cache_hit"] == pytest.approx(0.028)
    assert cost["output"] == pytest.approx(0.5 * 0.28)
    assert cost["total"] == pytest.approx(0.28 + 0.028 + 0.14)
    custom = hosted_cost(m, PricingSpec(currency="EUR", input_cache_miss=1, input_cache_hit=0,
                                        output=2))  # fmt: skip
    assert (custom["currency"], custom["total"]) == ("EUR", pytest.approx(3.0))


def _outcome(manifest: dict) -> JobOutcome:
    return JobOutcome(plan=None, report=None, manifest=manifest)  # type: ignore[arg-type]


def test_counts_reconcile_and_set_the_exit_code():
    files = [
        OutputFile("results", "results-0.parquet", 3),
        OutputFile("errors", "errors-0.parquet", 1),
    ]
    m = _manifest(PipelineMetrics(records_in=4, items_in=4, results_out=3, errors_out=1), files)
    assert m["reconciled"] and m["counts"]["results"] == 3 and m["counts"]["errors"] == 1
    assert m["date"] == "2026-01-02" and m["started_at"] == "2026-01-02T03:04:05+00:00"
    assert _outcome(m).exit_code == 3
    clean = _manifest(PipelineMetrics(items_in=3, results_out=3), files[:1])
    assert _outcome(clean).exit_code == 0
    # One item lost between the counters and the files: not reconciled, the run exits 1.
    lost = _manifest(PipelineMetrics(items_in=5, results_out=3, errors_out=1), files)
    assert not lost["reconciled"] and _outcome(lost).exit_code == 1


def test_the_constraint_levels_of_schemas_and_requests_are_recorded():
    relaxed = {"level": "relaxed", "relaxed": [{"path": "$", "change": "dropped 'not'",
                                                "reason": "..."}]}  # fmt: skip
    metrics = PipelineMetrics(constraint_exact=2, constraint_relaxed=5)
    m = _manifest(metrics, [], constraints={"task": relaxed})
    assert m["constraint"] == {
        "schemas": {"task": relaxed}, "requests": {"exact": 2, "relaxed": 5, "none": 0}
    }  # fmt: skip
