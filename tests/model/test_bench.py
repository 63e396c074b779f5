"""`bench_engine_callers` on a tiny workload: all three modes run and agree token for token."""

from flashbeam.model.engine.bench import bench_engine_callers


def test_bench_engine_callers_reports_its_ratios():
    result = bench_engine_callers(
        callers=2, documents=4, questions=2, doc_len=80, question_len=4, new_tokens=2,
        requests_per_call=2, threads=1, repeats=2,
    )  # fmt: skip
    assert result["same_tokens"]
    for mode in ("one_call", "callers", "serialized"):
        assert result[mode]["errors"] == 0 and result[mode]["tokens_per_s"] > 0
        assert result[mode]["cache_hit_ratio"] > 0.3  # each document's second question hits
    assert result["callers_vs_one_call"] > 0 and result["callers_vs_serialized"] > 0
    assert len(result["callers"]["wall_s_runs"]) == 2  # the median of two runs per mode
