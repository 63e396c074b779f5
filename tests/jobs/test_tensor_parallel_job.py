"""The README's extraction job on the embedded model writes the same rows over 2 tensor-parallel
ranks (gloo, CPU) as on one."""

import json

import pyarrow.parquet as pq
import pytest

from flashbeam.pipelines.handler import release_engines

from .conftest import JOBS, sample_rows, write_jsonl


@pytest.fixture
def four_docs(tmp_path):
    return write_jsonl(tmp_path / "in" / "docs.jsonl", sample_rows("business_docs.jsonl", 4))


@pytest.fixture(autouse=True)
def _close_engines():
    yield
    release_engines()  # a tensor-parallel engine holds this process's torch.distributed group


def test_extraction_rows_are_the_same_over_two_ranks(flashbeam, four_docs, tmp_path):
    rows = {}
    for tp in (1, 2):
        release_engines()  # both runs start from a cold prefix cache
        date = f"2026-02-0{tp}"
        code, _, err = flashbeam(
            "run", JOBS / "extract_invoices.yaml", "--date", date, "--preview", "0",
            "--set", f"input.path={four_docs}", "--set", f"engine.tensor_parallel={tp}",
        )  # fmt: skip
        assert code == 0, err
        partition = tmp_path / "out" / "extract_invoices" / date
        table = pq.read_table(next(partition.glob("results-*.parquet")))
        manifest = json.loads((partition / "manifest.json").read_text())
        assert manifest["model"]["tensor_parallel"] == tp
        data = table.drop([c for c in table.column_names if c.startswith("latency")]).to_pylist()
        rows[tp] = sorted(data, key=lambda r: r["id"])
    fields = ("id", "document_type", "vendor", "total_amount", "currency", "valid")
    assert [{k: r[k] for k in fields} for r in rows[2]] == [
        {k: r[k] for k in fields} for r in rows[1]
    ]
    assert rows[2] == rows[1]
