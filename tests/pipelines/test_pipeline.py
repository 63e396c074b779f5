"""Whole pipelines on the DirectRunner, one per reader, with injected failures.

The invariant under test: every input record (every item, for jobs with several questions)
ends in exactly one row of the results or the errors table, and the counters reconcile.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq

from flashbeam.model.engine.engine import Engine
from flashbeam.pipelines import (
    ChunkingConfig,
    InputConfig,
    OutputConfig,
    PipelineConfig,
    ReduceConfig,
    TaskConfig,
    run_pipeline,
)
from flashbeam.pipelines.reduce import apply_rule


def _run(tmp_path, input_config, task, engine_config, options=()):
    out = tmp_path / "out"
    config = PipelineConfig(
        input=input_config,
        output=OutputConfig(str(out / "results"), str(out / "errors")),
        task=task,
        engine=engine_config,
    )
    report = run_pipeline(config, list(options))
    return report, config


def _assert_invariant(report, results, errors, expected_items):
    """Each expected (id, question) in exactly one row; counters agree with the files."""
    seen = Counter((r["id"], r.get("question_index") or 0) for r in results)
    seen.update((e["id"], e["question_index"] or 0) for e in errors)
    assert set(seen) == set(expected_items) and set(seen.values()) == {1}
    m = report.metrics
    assert report.state == "DONE"
    assert (m.results_out, m.errors_out) == (len(results), len(errors))
    assert m.items_in == m.results_out + m.errors_out == len(expected_items)


def test_jsonl_two_questions_with_bad_lines(tmp_path, engine_config, tiny_schema, jsonl,
                                            parquet_rows):  # fmt: skip
    # Documents long enough that their questions wait for the shared prefix to be computed
    # once, rather than both prefilling it in the same step (the engine's `min_wait_tokens`).
    jsonl(
        tmp_path / "in" / "docs.jsonl",
        [
            {"text": "Invoice INV-1 from Acme, total 12 USD. Payment within 30 days. " * 6},
            "{broken",
            {"text": "Receipt for coffee and bagels at the corner cafe, 3 EUR. " * 6},
            {"title": "no text"},
        ],
    )
    task = TaskConfig(
        kind="extract",
        schema=tiny_schema,
        instructions="Extract.",
        questions=("Paid?", "Late?"),
        max_tokens=8,
        schema_in_prompt=False,
    )
    pattern = str(tmp_path / "in" / "*.jsonl")
    report, config = _run(tmp_path, InputConfig(pattern), task, engine_config)
    results = parquet_rows(config.output.results)
    errors = parquet_rows(config.output.errors)
    good = [("docs.jsonl:1", 0), ("docs.jsonl:1", 1), ("docs.jsonl:3", 0), ("docs.jsonl:3", 1)]
    _assert_invariant(report, results, errors, good + [("docs.jsonl:2", 0), ("docs.jsonl:4", 0)])
    assert sorted((r["id"], r["question_index"]) for r in results) == good
    assert all(r["valid"] and isinstance(r["ok"], bool) for r in results)
    assert all(r["constraint"] == "exact" for r in results)
    assert report.metrics.constraint_exact == 4
    assert {e["line"]: e["stage"] for e in errors} == {2: "read", 4: "read"}
    # Both questions of a document share its prefix: the second one is served from the cache.
    assert report.metrics.cached_tokens > 0
    assert sum(r["prompt_cache_hit_tokens"] for r in results) > 0
    assert report.metrics.records_in == 4 and report.metrics.requests == 4
    assert (
        pq.read_schema(next((tmp_path / "out").glob("results-*.parquet"))).field("ok").type
        == pa.bool_()
    )


def test_parquet_input(tmp_path, engine_config, tiny_schema, parquet_rows):
    (tmp_path / "in").mkdir()
    pq.write_table(
        pa.table({"doc": ["k1", "k2", "k3"], "body": ["Order 7 shipped.", None, "Refund 2."]}),
        tmp_path / "in" / "docs.parquet",
    )
    task = TaskConfig(kind="classify", schema=tiny_schema, instructions="Classify.", max_tokens=8,
                      schema_in_prompt=False)  # fmt: skip
    report, config = _run(
        tmp_path,
        InputConfig(str(tmp_path / "in" / "docs.parquet"), "parquet", "body", "doc"),
        task,
        engine_config,
    )
    results = parquet_rows(config.output.results)
    errors = parquet_rows(config.output.errors)
    _assert_invariant(report, results, errors, [("k1", 0), ("k2", 0), ("k3", 0)])
    assert [(e["id"], e["line"]) for e in errors] == [("k2", 2)]


def _long_and_short_texts(folder):
    folder.mkdir()
    long_text = "".join(f"Section {i}: revenue grew and staffing held.\n\n" for i in range(8))
    (folder / "long.txt").write_text(long_text)
    (folder / "short.txt").write_text("A short memo.")


def _summarize_task(schema, reduce):
    """Summaries in 48-token chunks: the long text splits, the short one does not."""
    return TaskConfig(
        kind="summarize",
        schema=schema,
        instructions="Summarize.",
        max_tokens=8,
        schema_in_prompt=False,
        chunking=ChunkingConfig(max_tokens=48, overlap_tokens=8),
        reduce=reduce,
    )


def test_text_files_map_reduce(tmp_path, engine_config, tiny_schema, parquet_rows):
    _long_and_short_texts(tmp_path / "in")
    (tmp_path / "in" / "empty.txt").write_text("")
    task = _summarize_task(
        tiny_schema, ReduceConfig(mode="prompt", instructions="Combine.", rounds=2)
    )
    pattern = str(tmp_path / "in" / "*.txt")
    report, config = _run(tmp_path, InputConfig(pattern, "text"), task, engine_config)
    results = parquet_rows(config.output.results)
    errors = parquet_rows(config.output.errors)
    expected = [("long.txt", 0), ("short.txt", 0), ("empty.txt", 0)]
    _assert_invariant(report, results, errors, expected)
    by_id = {r["id"]: r for r in results}
    assert set(by_id) == {"long.txt", "short.txt"}
    long_row = by_id["long.txt"]
    assert long_row["chunk_count"] > 2 and report.metrics.chunks == long_row["chunk_count"]
    # Map requests, plus at least one reduce request, all counted in the row.
    assert long_row["attempts"] > long_row["chunk_count"]
    assert by_id["short.txt"]["chunk_count"] == 1
    assert errors[0]["id"] == "empty.txt" and "empty" in errors[0]["reason"]


def test_map_reduce_with_a_part_schema(tmp_path, engine_config, tiny_schema, parquet_rows,
                                       monkeypatch):  # fmt: skip
    """Parts of a split document are held to (and validated against) the part schema, reduce
    rounds and unsplit documents to the task schema; the reduce prompts show the parts' JSON."""
    held: dict[str, list[dict]] = {}  # request id -> the schema of each attempt
    reduce_inputs: list[str] = []
    submit_many = Engine.submit_many

    def spy(self, requests, *args, **kwargs):
        for r in requests:
            held.setdefault(r.id, []).append(r.response_format["json_schema"]["schema"])
            if "#r" in r.id:
                reduce_inputs.append(r.messages[1]["content"])
        return submit_many(self, requests, *args, **kwargs)

    monkeypatch.setattr(Engine, "submit_many", spy)  # the in-memory runner's engine
    _long_and_short_texts(tmp_path / "in")
    part = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0,
            "maximum": 9}}, "required": ["n"], "additionalProperties": False}  # fmt: skip
    # A budget below two parts' outputs: round 1 is intermediate, round 2 final.
    reduce = ReduceConfig(mode="prompt", rounds=2, part_schema=part, max_input_tokens=8)
    task = _summarize_task(tiny_schema, reduce)
    pattern = str(tmp_path / "in" / "*.txt")
    report, config = _run(tmp_path, InputConfig(pattern, "text"), task, engine_config)
    results = parquet_rows(config.output.results)
    errors = parquet_rows(config.output.errors)
    _assert_invariant(report, results, errors, [("long.txt", 0), ("short.txt", 0)])
    # A part's output ({"n": ...}) fails the task schema: these rows exist (on_part_error is
    # "fail") only because the parts were validated against the part schema.
    assert not errors and all(r["valid"] and isinstance(r["ok"], bool) for r in results)
    long_row = next(r for r in results if r["id"] == "long.txt")
    assert long_row["chunk_count"] > 2 and long_row["parts_failed"] == 0
    by_kind = {"part": set(), "round 1": set(), "round 2": set(), "whole": set()}
    for request_id, schemas in held.items():
        kind = ("round 1" if "#r1." in request_id else "round 2" if "#r2." in request_id
                else "part" if "#c" in request_id else "whole")  # fmt: skip
        by_kind[kind].update(json.dumps(s, sort_keys=True) for s in schemas)
    part_key, task_key = (json.dumps(s, sort_keys=True) for s in (part, tiny_schema))
    assert by_kind == {"part": {part_key}, "round 1": {task_key}, "round 2": {task_key},
                       "whole": {task_key}}  # fmt: skip
    assert sum("#c" in i for i in held) == long_row["chunk_count"]
    round_1 = [text for text in reduce_inputs if '{"n": ' in text]
    assert round_1 and not any('"ok"' in text for text in round_1)
    assert any('{"ok": ' in text for text in reduce_inputs)  # round 2 reduces round 1's outputs


def test_map_reduce_rules_merge_fields_from_the_parts(tmp_path, engine_config, parquet_rows,
                                                      monkeypatch):  # fmt: skip
    """Prompt mode with reduce.rules: the named field of the row is the rule applied to the map
    outputs (in chunk order), whatever the reduce prompt wrote for it."""
    written: dict[str, str] = {}  # request id -> the text of its last attempt
    submit_many = Engine.submit_many

    def spy(self, requests, *args, **kwargs):
        futures = submit_many(self, requests, *args, **kwargs)
        for r, future in zip(requests, futures):
            future.add_done_callback(lambda f, rid=r.id: written.update({rid: f.result().text}))
        return futures

    monkeypatch.setattr(Engine, "submit_many", spy)
    _long_and_short_texts(tmp_path / "in")
    tags = {"type": "array", "items": {"enum": ["red", "green", "blue"]}}
    part = {"type": "object", "properties": {"tags": {**tags, "maxItems": 2}},
            "required": ["tags"], "additionalProperties": False}  # fmt: skip
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}, "tags": tags},
              "required": ["ok", "tags"], "additionalProperties": False}  # fmt: skip
    reduce = ReduceConfig(mode="prompt", part_schema=part, rules={"tags": "concat_unique"})
    task = dataclasses.replace(_summarize_task(schema, reduce), max_tokens=24)
    report, config = _run(tmp_path, InputConfig(str(tmp_path / "in" / "*.txt"), "text"), task,
                          engine_config)  # fmt: skip
    results = parquet_rows(config.output.results)
    _assert_invariant(report, results, parquet_rows(config.output.errors),
                      [("long.txt", 0), ("short.txt", 0)])  # fmt: skip
    long_row = next(r for r in results if r["id"] == "long.txt")
    chunks = sorted((k for k in written if k.startswith("long.txt#q0#c")),
                    key=lambda k: int(k.rsplit("#c", 1)[1]))  # fmt: skip
    assert len(chunks) == long_row["chunk_count"] > 2
    merged = apply_rule("concat_unique", [json.loads(written[k])["tags"] for k in chunks])
    rounds = [k for k in written if k.startswith("long.txt#q0#r")]  # ...#r<level>.<group>
    reduced = json.loads(written[max(rounds, key=lambda k: k.rsplit("#r", 1)[1])])["tags"]
    assert long_row["tags"] == merged and merged != reduced  # the model wrote something else


def test_openai_batch_with_engine_error_and_invalid_output(tmp_path, engine_config, jsonl,
                                                           parquet_rows):  # fmt: skip
    def line(custom_id, content, **body):
        messages = [{"role": "user", "content": content}]
        return {"custom_id": custom_id, "body": {"messages": messages, **body}}

    # A note of 20+ characters cannot fit 1, 2 or 4 tokens: every attempt is cut short.
    note = {"type": "string", "minLength": 20}
    schema = {"type": "object", "properties": {"note": note}, "required": ["note"]}
    long_note = {"type": "json_schema", "json_schema": {"name": "note", "schema": schema}}
    jsonl(
        tmp_path / "batch.jsonl",
        [
            line("free", "Say something.", max_tokens=6),
            line("json", "Give JSON.", max_tokens=12, response_format={"type": "json_object"}),
            line("too-long", "word " * 3000, max_tokens=4),  # over the 2048-token context
            line("one-token", "Give JSON.", max_tokens=1, response_format=long_note),
            {"body": {"messages": [{"role": "user", "content": "no id"}]}},
            {"custom_id": "robot", "body": {"messages": [{"role": "robot", "content": "x"}]}},
        ],
    )
    task = TaskConfig(kind="generate")
    task_input = InputConfig(str(tmp_path / "batch.jsonl"), "openai_batch")
    report, config = _run(tmp_path, task_input, task, engine_config)
    results = parquet_rows(config.output.results)
    errors = parquet_rows(config.output.errors)
    expected = ["free", "json", "too-long", "one-token", "batch.jsonl:5", "robot"]
    _assert_invariant(report, results, errors, [(i, 0) for i in expected])
    assert {r["id"]: r["constraint"] for r in results} == {"free": None, "json": "exact"}
    stages = {e["id"]: e for e in errors}
    assert stages["too-long"]["stage"] == "engine" and "context" in stages["too-long"]["reason"]
    assert stages["one-token"]["stage"] == "validate"
    assert stages["one-token"]["attempts"] == 3 and report.metrics.retries >= 2
    assert stages["batch.jsonl:5"]["stage"] == "read"
    assert stages["robot"]["stage"] == "prompt" and "role 'robot'" in stages["robot"]["reason"]
    assert report.metrics.engine_errors == 1 and report.metrics.invalid_outputs == 1
