"""Output tables: typed value columns plus metadata, collisions, and Beam's Parquet sink."""

from __future__ import annotations

import datetime

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flashbeam.model.engine.request import Usage
from flashbeam.pipelines.config import OutputConfig, TaskConfig
from flashbeam.pipelines.parquet_shards import shard_of
from flashbeam.pipelines.records import ErrorRow, ItemResult, ItemStats, Origin
from flashbeam.pipelines.transforms import WriteErrors, WriteParquetShards, WriteResults
from flashbeam.pipelines.writers import ERRORS_SCHEMA, ResultTable, error_row
from flashbeam.schemas import ArrowConversionError

INVOICE = {
    "type": "object",
    "properties": {
        "vendor": {"type": "string"},
        "date": {"type": "string", "format": "date"},
        "currency": {"enum": ["USD", "EUR"]},
        "total": {"type": "number"},
    },
    "required": ["vendor", "date", "currency", "total"],
}


def _item(value, text="", question=0) -> ItemResult:
    stats = ItemStats(Usage(100, 60, 40, 9), attempts=2, latency_s=0.25, chunk_count=3,
                      constraint="relaxed")  # fmt: skip
    origin = Origin("docs.jsonl:4", "in/docs.jsonl", 4)
    return ItemResult(origin, question, value, text, None, True, "stop", "tiny", stats)


def test_result_table_columns_and_row():
    table = ResultTable(TaskConfig(kind="extract", schema=INVOICE))
    names = table.schema.names
    assert names[:5] == ["id", "vendor", "date", "currency", "total"]
    assert {"valid", "attempts", "prompt_cache_hit_tokens", "latency_s", "model"} <= set(names)
    assert "question_index" not in names
    assert table.schema.field("currency").type == pa.dictionary(pa.int32(), pa.string())
    value = {"vendor": "Acme", "date": "2024-03-05", "currency": "EUR", "total": 12}
    row = table.row(_item(value))
    assert row["date"] == datetime.date(2024, 3, 5) and row["total"] == 12.0
    assert (row["id"], row["chunk_count"], row["attempts"]) == ("docs.jsonl:4", 3, 2)
    assert row["constraint"] == "relaxed"
    assert (row["prompt_cache_hit_tokens"], row["prompt_cache_miss_tokens"]) == (60, 40)
    assert pa.Table.from_pylist([row], schema=table.schema).num_rows == 1


def test_free_text_and_questions():
    table = ResultTable(TaskConfig(kind="generate", questions=("a", "b")))
    assert table.schema.names[:3] == ["id", "question_index", "text"]
    assert table.row(_item(None, text="hello", question=1))["question_index"] == 1


def test_value_that_does_not_fit_raises():
    table = ResultTable(TaskConfig(kind="extract", schema=INVOICE))
    bad = {"vendor": "Acme", "date": "2024-03-05", "currency": "EUR", "total": "12"}
    with pytest.raises(ArrowConversionError, match="total"):
        table.row(_item(bad))


def test_metadata_name_collision():
    schema = {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}
    with pytest.raises(ValueError, match="metadata_prefix"):
        ResultTable(TaskConfig(kind="extract", schema=schema))
    table = ResultTable(TaskConfig(kind="extract", schema=schema), metadata_prefix="_")
    assert table.schema.names[:2] == ["_id", "id"]


def test_error_row_fits_the_errors_schema():
    error = ErrorRow("x:1", "read", "bad", "in/x.jsonl", 1, "{oops")
    assert pa.Table.from_pylist([error_row(error)], schema=ERRORS_SCHEMA).num_rows == 1


def test_beam_parquet_sink_writes_typed_tables(tmp_path, parquet_rows):
    task = TaskConfig(kind="extract", schema=INVOICE)
    table = ResultTable(task)
    output = OutputConfig(str(tmp_path / "results"), str(tmp_path / "errors"))
    good = {"vendor": "Acme", "date": "2024-03-05", "currency": "USD", "total": 1.5}
    bad = {**good, "date": "5 March"}  # a date the date32 column cannot hold
    with beam.Pipeline() as p:
        items = p | "Items" >> beam.Create([_item(good), _item(bad)])
        failed = items | WriteResults(output, table)
        errors = p | "Errors" >> beam.Create([ErrorRow("y:2", "read", "bad", "y", 2, "{")])
        (failed, errors) | beam.Flatten() | WriteErrors(output)
    rows = parquet_rows(str(tmp_path / "results"))
    assert [r["vendor"] for r in rows] == ["Acme"] and rows[0]["currency"] == "USD"
    errors = parquet_rows(str(tmp_path / "errors"))
    assert sorted(e["stage"] for e in errors) == ["read", "write"]
    write_error = next(e for e in errors if e["stage"] == "write")
    assert "date" in write_error["reason"] and write_error["prompt_tokens"] == 100


def test_an_item_is_as_loosely_constrained_as_its_loosest_part():
    stats = ItemStats(constraint="exact")
    stats.add(ItemStats(constraint=None))
    assert stats.constraint == "exact"
    stats.add(ItemStats(constraint="none"))
    stats.add(ItemStats(constraint="relaxed"))
    assert stats.constraint == "none"


def test_parquet_shards_are_fixed_sorted_and_rewritten_byte_for_byte(tmp_path):
    """Every shard file exists (empty ones too), each id lands in the shard its hash names,
    rows are sorted, row groups close at `row_group_bytes`, and writing the same rows again (a
    retried task) gives the same bytes."""
    schema = pa.schema([pa.field("id", pa.string(), False), pa.field("n", pa.int64())])
    output = OutputConfig(str(tmp_path / "r"), str(tmp_path / "e"), num_shards=3,
                          row_group_bytes=1, record_batch_rows=2)  # fmt: skip
    rows = [{"id": f"doc-{i}", "n": i} for i in (5, 1, 4, 2, 3)]

    def write(prefix):
        with beam.Pipeline() as p:
            _ = p | beam.Create(rows) | WriteParquetShards(prefix, schema, output, "id")

    write(str(tmp_path / "a" / "rows"))
    write(str(tmp_path / "b" / "rows"))
    names = [f"rows-{s:05d}-of-00003.parquet" for s in range(3)]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == names
    seen = []
    for shard, name in enumerate(names):
        parquet = pq.ParquetFile(tmp_path / "a" / name)
        ids = parquet.read().column("id").to_pylist()
        assert ids == sorted(ids) and all(shard_of(i, 3) == shard for i in ids)
        assert parquet.metadata.num_row_groups == -(-len(ids) // 2)  # one per record batch
        seen += ids
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert sorted(seen) == sorted(r["id"] for r in rows)
    assert pq.ParquetFile(tmp_path / "a" / names[0]).metadata.num_rows == 0  # no id hashes to 0
