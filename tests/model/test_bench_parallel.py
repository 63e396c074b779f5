"""`flashbeam bench parallel` runs and reports each rank's share of the weights."""

from flashbeam.model.engine.bench_parallel import bench_parallel


def test_bench_parallel_reports_shares_and_ratios():
    out = bench_parallel(world=2, batch=1, prompt_len=32, decode_steps=2)
    weights = out["weights"]
    assert weights["split_read_vs_ideal"] <= 1.1
    assert weights["rank0_kept_bytes"] < weights["checkpoint_bytes"]
    assert out["prefill_time_ratio"] > 0 and out["decode_time_ratio"] > 0
