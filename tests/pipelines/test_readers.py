"""Readers: every record becomes a Document or an ErrorRow naming its file and line."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flashbeam.pipelines.config import InputConfig
from flashbeam.pipelines.readers import InputError, glob_base, match_input, read_file
from flashbeam.pipelines.records import Document, ErrorRow


def _read(pattern: str, config: InputConfig) -> list:
    return [r for path in match_input(pattern) for r in read_file(path, config, glob_base(pattern))]


def test_jsonl_good_and_bad_lines(tmp_path, jsonl):
    path = jsonl(
        tmp_path / "in" / "docs.jsonl",
        [
            {"text": "first document"},
            "{not json",
            "",
            '["an", "array"]',
            {"body": "no text field"},
            {"text": "   "},
            b"\xff\xfe broken bytes",
            {"text": 42},
            {"text": "last document"},
        ],
    )
    records = _read(str(tmp_path / "in" / "*.jsonl"), InputConfig(str(path)))
    docs = [r for r in records if isinstance(r, Document)]
    errors = [r for r in records if isinstance(r, ErrorRow)]
    assert [d.text for d in docs] == ["first document", "last document"]
    assert [d.origin.id for d in docs] == ["docs.jsonl:1", "docs.jsonl:9"]
    assert [e.line for e in errors] == [2, 4, 5, 6, 7, 8]  # the blank line 3 is no record
    assert all(e.source == str(path) and e.stage == "read" for e in errors)
    reasons = {e.line: e.reason for e in errors}
    assert "not valid JSON" in reasons[2] and f"{path}:2" in reasons[2]
    assert "expected a JSON object" in reasons[4]
    assert "text field 'text' is missing" in reasons[5] and "input.text_field" in reasons[5]
    assert "empty" in reasons[6]
    assert "not valid UTF-8" in reasons[7] and "0xff" in reasons[7]
    assert "is a int" in reasons[8]
    assert errors[0].input == "{not json"


def test_jsonl_id_field_text_field_bom_and_gzip(tmp_path):
    lines = [json.dumps({"key": "a-1", "body": "alpha"}), json.dumps({"body": "no key"})]
    path = tmp_path / "d.jsonl.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"\xef\xbb\xbf" + "\n".join(lines).encode())
    config = InputConfig(str(path), text_field="body", id_field="key")
    records = _read(str(path), config)
    assert isinstance(records[0], Document) and records[0].origin.id == "a-1"
    assert records[0].text == "alpha"
    assert isinstance(records[1], ErrorRow) and "id field 'key'" in records[1].reason


def test_ids_are_relative_to_the_glob_base_and_stable(tmp_path, jsonl):
    jsonl(tmp_path / "a" / "x.jsonl", [{"text": "one"}])
    jsonl(tmp_path / "b" / "x.jsonl", [{"text": "two"}])
    pattern = str(tmp_path / "*" / "x.jsonl")
    first = [r.origin.id for r in _read(pattern, InputConfig(pattern))]
    again = [r.origin.id for r in _read(pattern, InputConfig(pattern))]
    assert first == again == ["a/x.jsonl:1", "b/x.jsonl:1"]


def test_parquet_rows(tmp_path):
    path = tmp_path / "docs.parquet"
    table = pa.table({"doc_id": ["p1", "p2", "p3"], "content": ["hello", None, "world"]})
    pq.write_table(table, path)
    records = _read(str(path), InputConfig(str(path), "parquet", "content", "doc_id"))
    assert [type(r).__name__ for r in records] == ["Document", "ErrorRow", "Document"]
    assert records[1].line == 2 and records[1].id == "p2" and "row 2" in records[1].reason
    assert json.loads(records[1].input) == {"doc_id": "p2", "content": None}
    no_id = _read(str(path), InputConfig(str(path), "parquet", "content"))
    assert no_id[2].origin.id == "docs.parquet:3"


def test_unreadable_parquet_is_one_error(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"not parquet at all")
    (record,) = _read(str(path), InputConfig(str(path), "parquet"))
    assert isinstance(record, ErrorRow) and "not a readable Parquet file" in record.reason


def test_text_files(tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "a.txt").write_text("A report.\n\nWith two paragraphs.")
    (tmp_path / "t" / "b.txt").write_text("  \n")
    (tmp_path / "t" / "c.txt").write_bytes(b"caf\xe9")
    pattern = str(tmp_path / "t" / "*.txt")
    records = _read(pattern, InputConfig(pattern, "text"))
    assert isinstance(records[0], Document) and records[0].origin.id == "a.txt"
    assert records[0].text == "A report.\n\nWith two paragraphs."
    assert "empty" in records[1].reason and records[1].id == "b.txt"
    assert "not valid UTF-8" in records[2].reason and records[2].input == "caf\ufffd"


def test_openai_batch_lines(tmp_path, jsonl):
    body = {
        "model": "deepseek-v4-flash",
        "messages": [{"role": "user", "content": "Say hi"}],
        "max_completion_tokens": 7,
        "temperature": 0.3,
        "response_format": {"type": "json_object"},
        "thinking": {"type": "disabled"},
        "n": 1,
    }
    path = jsonl(
        tmp_path / "batch.jsonl",
        [
            {"custom_id": "req-1", "method": "POST", "url": "/v1/chat/completions", "body": body},
            {"method": "POST", "body": body},
            {"custom_id": "req-3", "body": {"messages": []}},
            {"custom_id": "req-4", "body": {**body, "max_tokens": 0}},
        ],
    )
    records = _read(str(path), InputConfig(str(path), "openai_batch"))
    good = records[0]
    assert isinstance(good, Document) and good.is_chat and good.origin.id == "req-1"
    assert good.params == {
        "max_tokens": 7,
        "temperature": 0.3,
        "response_format": {"type": "json_object"},
        "thinking": {"type": "disabled"},
    }
    assert "custom_id" in records[1].reason and records[1].id == "batch.jsonl:2"
    assert "messages" in records[2].reason and records[2].id == "req-3"
    assert "max_tokens" in records[3].reason


def test_no_match_and_unknown_format(tmp_path):
    with pytest.raises(InputError, match="matches no files"):
        match_input(str(tmp_path / "*.jsonl"))
    (tmp_path / "x.jsonl").write_text("{}\n")
    with pytest.raises(InputError, match="input.format"):
        list(read_file(str(tmp_path / "x.jsonl"), InputConfig("x", "csv"), ""))  # type: ignore[arg-type]


def test_glob_base():
    assert glob_base("data/docs/*.jsonl") == "data/docs/"
    assert glob_base("gs://bucket/a/**/x.txt") == "gs://bucket/a/"
    assert glob_base("data/one.jsonl") == "data/"
    assert glob_base("one.jsonl") == ""
