"""`flashbeam bench kernels` without a GPU: a JSON error line after a CPU smoke, exit 0."""

from __future__ import annotations

import json

import pytest
import torch

from flashbeam.kernels import bench


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the benchmark really runs")
def test_bench_without_cuda_reports_and_exits_zero(capsys):
    assert bench.main([]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["error"] == "no CUDA device"
    assert set(report["cpu_smoke"]) == {
        "sparse_attention",
        "indexer_topk",
        "fused_moe",
        "fp8_linear",
        "apply_token_bitmask_",
    }
    assert all(r["ok"] for r in report["cpu_smoke"].values())
