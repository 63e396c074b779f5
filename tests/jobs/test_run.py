"""`flashbeam run` / `eval` end to end on the example jobs (small inputs, random tiny weights):
partitions, manifests that reconcile with the Parquet files, atomic re-runs, exit codes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from flashbeam.model import tiny_config
from flashbeam.model.checkpoint.random_init import write_random_checkpoint

from .conftest import (
    JOBS,
    NOT_GROUNDED,
    TINY_SCHEMA,
    assert_reconciles,
    manifest_of,
    rows_of,
    sample_rows,
    write_jsonl,
)

# The example jobs merge fields of their own schemas, which the tiny ones lack.
NO_MERGE_RULES = "task.reduce.rules={}"
NO_EXCLUDE = "task.reduce.exclude={}"  # the tiny task schema has no people to exclude from
TINY_PART_SCHEMA = (
    'task.reduce.part_schema={"type": "object", "properties": {"n": {"type": "integer", '
    '"minimum": 0, "maximum": 9}}, "required": ["n"], "additionalProperties": false}'
)


def test_extract_invoices_with_a_bad_line_exits_3(flashbeam, checkpoint, docs, tmp_path):
    with open(docs, "a") as f:
        f.write("{not json\n")
    code, out, err = flashbeam(
        "run", JOBS / "extract_invoices.yaml", "--date", "2026-01-02",
        "--set", f"model.path={checkpoint}", "--set", f"input.path={docs}",
        "--set", "task.max_tokens=48", "--set", "task.retry.max_attempts=1",
    )  # fmt: skip
    assert code == 3, err
    partition = tmp_path / "out" / "extract_invoices" / "2026-01-02"
    m = assert_reconciles(partition)
    assert m["job"] == "extract_invoices" and m["date"] == "2026-01-02"
    assert m["counts"]["records_in"] == 3 and m["counts"]["items_in"] == 3
    assert m["model"]["model"] == checkpoint and m["flashbeam_version"]
    tokens, cost = m["tokens"], m["hosted_api_cost"]
    assert tokens["prompt"] == tokens["cached"] + tokens["cache_miss"] > 0
    expected = (tokens["cache_miss"] * 0.14 + tokens["cached"] * 0.028
                + tokens["completion"] * 0.28) / 1e6  # fmt: skip
    assert cost["total"] == pytest.approx(expected, abs=1e-8)
    errors = rows_of(partition, "errors")
    assert any(e["stage"] == "read" and e["line"] == 3 for e in errors)
    # The summary says where the files are; the error hint says how to look at them.
    assert "out/extract_invoices/2026-01-02/results-00000-of-00001.parquet" in out
    assert "flashbeam show out/extract_invoices/2026-01-02 --errors" in err

    code, out, _ = flashbeam("show", partition, "--errors")
    assert code == 0 and "not valid JSON" in out


def test_date_partitions_and_atomic_reruns(flashbeam, checkpoint, docs, tmp_path, monkeypatch):
    job = ["--set", f"model.path={checkpoint}", "--set", f"input.path={docs}", "--set",
           TINY_SCHEMA, "--set", NOT_GROUNDED, "--set", "task.max_tokens=8",
           "--preview", "0"]  # fmt: skip
    spec = JOBS / "extract_invoices.yaml"
    for date in ("2026-01-02", "2026-01-03"):
        code, _, err = flashbeam("run", spec, "--date", date, *job)
        assert code == 0, err
    root = tmp_path / "out" / "extract_invoices"
    assert sorted(os.listdir(root)) == ["2026-01-02", "2026-01-03"]
    m = assert_reconciles(root / "2026-01-02")
    assert [r["ok"] in (True, False) for r in rows_of(root / "2026-01-02", "results")] == [True] * 2

    # A re-run replaces the date's partition; other dates are untouched.
    before = manifest_of(root / "2026-01-03")
    (root / "2026-01-02" / "stray.txt").write_text("from an older run")
    code, _, _ = flashbeam("run", spec, "--date", "2026-01-02", *job)
    assert code == 0
    assert not (root / "2026-01-02" / "stray.txt").exists()
    assert manifest_of(root / "2026-01-03") == before
    assert_reconciles(root / "2026-01-02")

    # A run that fails halfway leaves the previous partition exactly as it was.
    snapshot = {p.name: p.read_bytes() for p in (root / "2026-01-02").iterdir()}

    def crash(config, beam_args, check_model=True):
        Path(config.output.results + "-00000-of-00001.parquet").write_bytes(b"half a file")
        raise RuntimeError("worker lost")

    monkeypatch.setattr("flashbeam.jobs.run.run_pipeline", crash)
    code, _, err = flashbeam("run", spec, "--date", "2026-01-02", *job)
    assert code == 1
    assert "worker lost" in err and "previous output is unchanged" in err
    assert {p.name: p.read_bytes() for p in (root / "2026-01-02").iterdir()} == snapshot
    assert sorted(os.listdir(root)) == ["2026-01-02", "2026-01-03"]
    assert m["counts"]["errors"] == 0


def test_nightly_summarize_map_reduces_long_reports(flashbeam, checkpoint, tmp_path):
    """The job's chunking and reduce settings over a report cut to a few chunks; the tiny
    schemas (task and parts) keep random weights valid, so the reduce step always runs."""
    report = sample_rows("reports.jsonl", 1)[0]
    path = write_jsonl(tmp_path / "in" / "r.jsonl", [{**report, "text": report["text"][:700]}])
    code, out, err = flashbeam(
        "run", JOBS / "nightly_summarize.yaml", "--date", "2026-01-02",
        "--set", f"model.path={checkpoint}", "--set", f"input.path={path}",
        "--set", "task.chunking.max_tokens=128", "--set", TINY_SCHEMA,
        "--set", TINY_PART_SCHEMA, "--set", NOT_GROUNDED, "--set", NO_MERGE_RULES,
        "--set", NO_EXCLUDE, "--set", "task.max_tokens=8",
    )  # fmt: skip
    assert code == 0, err
    partition = tmp_path / "out" / "nightly_summarize" / "2026-01-02"
    m = assert_reconciles(partition)
    assert m["counts"]["items_in"] == 1 and m["counts"]["chunks"] > 1
    assert m["counts"]["requests"] > m["counts"]["chunks"]  # the parts, then the reduce
    [row] = rows_of(partition, "results")
    assert row["chunk_count"] == m["counts"]["chunks"] and row["parts_failed"] == 0


def test_openai_batch_requests_in_results_out(flashbeam, checkpoint, tmp_path):
    requests = sample_rows("chat_requests.jsonl", 3)
    for r in requests:
        r["body"]["max_tokens"] = 12
    path = write_jsonl(tmp_path / "in" / "requests.jsonl", requests)
    code, out, err = flashbeam(
        "run", JOBS / "openai_batch.yaml", "--date", "2026-01-02", "--no-progress",
        "--set", f"model.path={checkpoint}", "--set", f"input.path={path}",
        "--set", "task.retry.max_attempts=1",
    )  # fmt: skip
    assert code in (0, 3), err
    partition = tmp_path / "out" / "openai_batch" / "2026-01-02"
    assert_reconciles(partition)
    ids = {r["id"] for r in rows_of(partition, "results")} | {
        e["id"] for e in rows_of(partition, "errors")
    }
    assert ids == {"request-1", "request-2", "request-3"}
    assert all(isinstance(r["text"], str) for r in rows_of(partition, "results"))


def test_eval_prints_field_accuracy_against_the_gold(flashbeam, checkpoint, docs, tmp_path):
    code, out, err = flashbeam(
        "eval", JOBS / "extract_invoices.yaml", "--no-progress", "--no-sets",
        "--set", f"model.path={checkpoint}", "--set", f"input.path={docs}",
        "--set", "task.max_tokens=64", "--set", "task.retry.max_attempts=1",
    )  # fmt: skip
    assert code in (0, 3), err
    report = json.loads(out)
    assert "sets" not in report  # --no-sets: the job's input only
    assert report["job"] == "extract_invoices" and report["records"] == 2
    assert 0.0 <= report["field_accuracy"] <= 1.0
    assert set(report["per_field"]) == {
        "document_type", "vendor", "customer", "document_number", "issue_date", "due_date",
        "total_amount", "currency",
    }  # fmt: skip
    assert report["valid_rows"] == report["results"] == 2 - report["errors"]
    assert report["gold"] == str(docs.with_name("docs.gold.jsonl"))
    assert not (tmp_path / "out").exists()  # eval writes to a temporary directory


def test_eval_scores_each_eval_set_against_the_gold_beside_it(
    flashbeam, checkpoint, docs, tmp_path
):
    """The job's eval.sets are run through the same task and reported next to its input's
    score; a set without gold stops the command before anything runs."""
    rows = sample_rows("ocr_docs.jsonl", 3)
    other = write_jsonl(
        tmp_path / "sets" / "ocr.jsonl", [{**r, "text": r["text"][:200]} for r in rows]
    )
    write_jsonl(other.with_name("ocr.gold.jsonl"), sample_rows("ocr_docs.gold.jsonl", 3))
    common = (
        "--no-progress", "--set", f"model.path={checkpoint}", "--set", f"input.path={docs}",
        "--set", "task.max_tokens=48", "--set", "task.retry.max_attempts=1",
    )  # fmt: skip
    code, out, err = flashbeam(
        "eval", JOBS / "extract_invoices.yaml", *common, "--set", f"eval.sets={{ocr: {other}}}"
    )
    assert code in (0, 3), err
    report = json.loads(out)
    assert report["records"] == 2 and list(report["sets"]) == ["ocr"]
    scored = report["sets"]["ocr"]
    assert scored["records"] == 3 and scored["gold"] == str(other.with_name("ocr.gold.jsonl"))
    assert set(scored["per_field"]) == set(report["per_field"])
    lost = write_jsonl(tmp_path / "lost" / "x.jsonl", rows[:1])
    code, out, err = flashbeam(
        "eval", JOBS / "extract_invoices.yaml", *common, "--set", f"eval.sets={{x: {lost}}}"
    )
    assert code == 2 and "x.gold.jsonl: no gold file" in err and not out


def test_eval_scores_parquet_values_as_json(flashbeam, checkpoint, docs, tmp_path, monkeypatch):
    """Dates come back from Parquet as dates; eval compares them as the YYYY-MM-DD strings."""
    from flashbeam.jobs import eval as job_eval

    gold = sample_rows("business_docs.gold.jsonl", 1)[0]
    date_value = __import__("datetime").date.fromisoformat(gold["issue_date"])
    assert job_eval._json_value({"d": date_value, "l": [date_value]}) == {
        "d": gold["issue_date"], "l": [gold["issue_date"]],
    }  # fmt: skip


def test_model_kv_quant_sim_is_checked_at_load_and_recorded(flashbeam, docs, tmp_path):
    """A checkpoint the simulation cannot serve (indexer width not a power of two) fails before
    anything runs; one it can runs with it, and the manifest says so."""
    spec = JOBS / "extract_invoices.yaml"
    odd = write_random_checkpoint(tmp_path / "odd", tiny_config("tiny", index_head_dim=48), seed=0)
    job = ["--set", f"input.path={docs}", "--set", TINY_SCHEMA, "--set", NOT_GROUNDED,
           "--set", "task.max_tokens=8", "--set", "model.kv_quant_sim=true"]  # fmt: skip
    code, _, err = flashbeam("run", spec, "--set", f"model.path={odd}", *job)
    assert code == 2 and "model.path" in err and "kv_quant_sim" in err and "power of two" in err
    assert not (tmp_path / "out").exists()
    ckpt = write_random_checkpoint(tmp_path / "ok", tiny_config("tiny"), seed=0)
    code, out, err = flashbeam("validate", spec, "--set", f"model.path={ckpt}", *job)
    assert code == 0 and "(float32), kv_quant_sim true" in out, err
    code, _, err = flashbeam("run", spec, "--date", "2026-01-02", "--set", f"model.path={ckpt}",
                             *job)  # fmt: skip
    assert code == 0, err
    m = assert_reconciles(tmp_path / "out" / "extract_invoices" / "2026-01-02")
    assert m["model"]["kv_quant_sim"] is True


def test_setup_errors_exit_2_and_write_nothing(flashbeam, checkpoint, docs, tmp_path):
    spec = JOBS / "extract_invoices.yaml"
    code, _, err = flashbeam("run", spec, "--set", f"model.path={tmp_path / 'nope'}")
    assert code == 2 and "model.path" in err and "is not a directory" in err
    code, _, err = flashbeam("run", spec, "--set", "input.path=missing/*.jsonl")
    assert code == 2 and "matches no files" in err
    code, _, err = flashbeam("run", spec, "--set", "task.temprature=0")
    assert code == 2 and "did you mean 'temperature'" in err
    code, _, err = flashbeam(
        "eval", spec, "--set", f"model.path={checkpoint}", "--set", f"input.path={docs}",
        "--gold", tmp_path / "none.jsonl",
    )  # fmt: skip
    assert code == 2 and "no gold file" in err
    assert not (tmp_path / "out").exists()


def test_validate_checks_without_inference(flashbeam, checkpoint, docs, tmp_path):
    code, out, err = flashbeam(
        "validate", JOBS / "extract_invoices.yaml", "--date", "2026-01-02",
        "--set", f"model.path={checkpoint}", "--set", f"input.path={docs}",
    )  # fmt: skip
    assert code == 0, err
    assert "ready to run" in out and "2 records" in out and "out/extract_invoices/2026-01-02" in out
    assert "document_type, vendor" in out
    broken = tmp_path / "broken-ckpt"
    broken.mkdir()
    for name in os.listdir(checkpoint):
        data = (Path(checkpoint) / name).read_bytes()
        (broken / name).write_bytes(data[:100] if name.endswith(".safetensors") else data)
    code, _, err = flashbeam(
        "validate", JOBS / "extract_invoices.yaml",
        "--set", f"model.path={broken}", "--set", f"input.path={docs}",
    )  # fmt: skip
    assert code == 2 and "model.path" in err
    assert not (tmp_path / "out").exists()
