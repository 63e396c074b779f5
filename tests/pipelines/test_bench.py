"""`bench_pipeline` on a tiny workload: it runs all three modes and reports the agreed keys."""

from __future__ import annotations

import pytest

from flashbeam.pipelines.bench import bench_pipeline


@pytest.mark.slow
def test_bench_pipeline_reports_its_keys():
    result = bench_pipeline(
        documents=3, questions=2, doc_tokens=64, max_tokens=2, requests_per_call=2, threads=1
    )
    assert {"pipeline_vs_engine", "grouping_speedup", "cache_hit_ratio"} <= set(result)
    for mode in ("engine", "pipeline", "ungrouped"):
        assert result[mode]["docs_per_s"] > 0 and result[mode]["tokens_per_s"] > 0
        assert 0 < result[mode]["completion_tokens"] <= 3 * 2 * 2
        assert result[mode]["prompt_tokens"] == result["engine"]["prompt_tokens"]  # same prompts
    # The second question of each document finds the document in the cache.
    assert result["cache_hit_ratio"] > 0.3


@pytest.mark.slow
def test_bench_pipeline_on_dask_reports_both_runners_and_the_stages():
    result = bench_pipeline(documents=2, questions=2, doc_tokens=64, max_tokens=2,
                            requests_per_call=2, threads=1, runner="dask", workers=1)  # fmt: skip
    direct, dask = result["direct"], result["dask"]
    assert result["dask_vs_direct"] == direct["wall_s"] / dask["wall_s"] > 0
    assert dask["prompt_tokens"] == direct["prompt_tokens"] > 0
    assert 0 < dask["completion_tokens"] == direct["completion_tokens"] <= 2 * 2 * 2
    stages = dask["task_s_by_stage"]
    assert stages["Run engine"] > 0 and {"Read documents", "Write results"} <= set(stages)
    assert dask["cluster_start_s"] > 0 and dask["first_job_s"] > 0
