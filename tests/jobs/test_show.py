"""`flashbeam show`: results and errors tables from Parquet files and output directories."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console

from flashbeam.jobs.show import METADATA_COLUMNS, ShowError, find_files, read_rows, render
from flashbeam.pipelines import TaskConfig
from flashbeam.pipelines.writers import ERRORS_SCHEMA, ResultTable


def test_metadata_columns_match_the_results_writer():
    names = set(ResultTable(TaskConfig(kind="generate", questions=("a", "b"))).schema.names)
    assert names - {"id", "text"} == METADATA_COLUMNS


def _partition(tmp_path):
    results = pa.table(
        {
            "id": ["doc-1", "doc-2"],
            "vendor": ["Acme Corp", None],
            "issue_date": [dt.date(2026, 1, 2), dt.date(2026, 1, 3)],
            "people": [["Ann Lee", "Bo Chen"], []],
            "valid": [True, True],
            "prompt_tokens": [10, 12],
        }
    )
    pq.write_table(results, tmp_path / "results-00000-of-00001.parquet")
    error = {f.name: None for f in ERRORS_SCHEMA}
    error.update(id="doc-3", stage="read", reason="docs.jsonl:3: not valid JSON", source="d",
                 input="{x", attempts=0)  # fmt: skip
    pq.write_table(pa.Table.from_pylist([error], ERRORS_SCHEMA),
                   tmp_path / "errors-00000-of-00001.parquet")  # fmt: skip
    return tmp_path


def _text(renderable, width: int) -> str:
    console = Console(width=width, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(renderable)
    return console.export_text()


def test_results_table_hides_metadata_and_fits_the_width(tmp_path):
    part = _partition(tmp_path)
    assert find_files(str(part)) == [str(part / "results-00000-of-00001.parquet")]
    rows = read_rows(find_files(str(part)), limit=1)
    assert rows.total == 2 and len(rows.rows) == 1
    wide = _text(render(rows, console_width=160), 160)
    assert "1 of 2 rows" in wide and "Acme Corp" in wide and "2026-01-02" in wide
    assert '["Ann Lee","Bo Chen"]' in wide
    assert "prompt_tokens" not in wide and "valid" not in wide
    assert "prompt_tokens" in _text(render(rows, all_columns=True, console_width=160), 160)
    narrow = _text(render(rows, console_width=30), 30)  # one block of field/value lines
    assert "vendor" in narrow and "Acme Corp" in narrow


def test_errors_table_from_a_directory_or_a_results_file(tmp_path):
    part = _partition(tmp_path)
    files = find_files(str(part / "results-00000-of-00001.parquet"), errors=True)
    assert files == [str(part / "errors-00000-of-00001.parquet")]
    text = _text(render(read_rows(files, 20), errors=True, console_width=120), 120)
    assert "doc-3" in text and "read" in text and "not valid JSON" in text
    with pytest.raises(ShowError, match="no results Parquet files"):
        find_files(str(tmp_path / "elsewhere"))


def test_a_long_value_folds_beside_its_own_field(tmp_path):
    error = {f.name: None for f in ERRORS_SCHEMA}
    reason = "docs.jsonl:4: id field 'id' is missing or not a string; every record needs one"
    error.update(id="docs.jsonl:4", stage="read", reason=reason, source="docs.jsonl", input="{}",
                 line=4, attempts=0)  # fmt: skip
    path = tmp_path / "errors-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist([error, {**error, "line": 5}], ERRORS_SCHEMA), path)
    lines = _text(render(read_rows([str(path)], 20), errors=True, console_width=60), 60)
    lines = lines.splitlines()
    reason_lines = [i for i, line in enumerate(lines) if "│ reason" in line]
    assert len(reason_lines) == 2 and "every record" not in lines[reason_lines[0]]  # folded
    for at, number in zip(reason_lines, ("4", "5")):
        after = next(line for line in lines[at:] if "│ line" in line)
        assert after.split("│")[2].strip() == number, lines  # the number beside its own name
