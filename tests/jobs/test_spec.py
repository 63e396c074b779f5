"""Job specs: loading, overrides, path resolution, and errors that say where and what to fix."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path

import pytest

from flashbeam.jobs.run import plan_job, runner_args
from flashbeam.jobs.spec import JobError, RunnerSpec, load_job
from flashbeam.model.training import common
from flashbeam.pipelines.config import ChunkingConfig, GroupingConfig, parse_bytes
from flashbeam.pipelines.handler import engine_for, release_engines
from flashbeam.schemas import RetryPolicy, load_schema

from .conftest import DATA, JOBS

MINIMAL = "name: t\ninput:\n  path: docs.jsonl\n"


def spec(tmp_path: Path, text: str, name: str = "job.yaml") -> Path:
    (tmp_path / "docs.jsonl").write_text('{"text": "x"}\n')
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path: Path, overrides=()) -> str:
    with pytest.raises(JobError) as info:
        plan_job(load_job(path, list(overrides)), dt.date(2026, 1, 2))
    return str(info.value)


def problem_of(path: Path) -> str:
    """The one problem of a spec that has one, after its `file:line:`."""
    head, *problems = error_of(path).split("\n  ")
    assert head == f"{path}: the job spec has 1 problem(s):", head
    [problem] = problems
    return re.sub(rf"^{re.escape(str(path))}:\d+: ", "", problem)


# ---- the example jobs -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["extract_invoices", "nightly_summarize", "openai_batch"])
def test_example_jobs_load_and_plan(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = plan_job(load_job(JOBS / f"{name}.yaml"), dt.date(2026, 1, 2))
    assert plan.job.name == name
    assert Path(plan.input_path).is_file() and Path(plan.input_path).parent == DATA
    assert plan.results.path == f"out/{name}/2026-01-02"
    assert plan.config.output.results.startswith(f"out/{name}/.2026-01-02.staging/run-")
    assert plan.config.engine.model == "tiny" and plan.config.engine.torch_threads == 1
    assert plan.in_process and plan.runner == "DirectRunner"


def test_example_jobs_prompt_with_the_training_instructions():
    extract = plan_job(load_job(JOBS / "extract_invoices.yaml")).config.task
    assert extract.instructions == common.EXTRACT_INSTRUCTION
    assert extract.schema == common.load_schema("invoice")
    assert extract.max_tokens == common.EXTRACT_MAX_TOKENS
    assert not extract.schema_in_prompt
    summarize = plan_job(load_job(JOBS / "nightly_summarize.yaml")).config.task
    assert summarize.instructions == common.CHUNK_INSTRUCTION
    assert summarize.reduce.instructions == common.REDUCE_INSTRUCTION
    assert summarize.schema == common.load_schema("report_summary")
    assert summarize.reduce.part_schema == common.load_schema("report_chunk_summary")
    assert summarize.reduce.max_input_tokens == 2048
    assert summarize.max_tokens == common.SUMMARY_MAX_TOKENS
    # Every sample report is longer than the chunk budget, so every one is map-reduced.
    words = min(len(r.split()) for r in _texts("reports.jsonl"))
    assert summarize.chunking.max_tokens < words


def _texts(name: str) -> list[str]:
    import json

    return [json.loads(line)["text"] for line in (DATA / name).read_text().splitlines()]


# ---- paths, templates, overrides ------------------------------------------------------------


def test_file_paths_resolve_against_the_spec_and_set_paths_against_cwd(tmp_path, monkeypatch):
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "s.json").write_text('{"type": "object", "properties": {"a": {"type": "string"}}}')
    path = spec(jobs, MINIMAL + "task:\n  schema: s.json\noutput:\n  path: o/{name}/{date}\n")
    monkeypatch.chdir(tmp_path)
    plan = plan_job(load_job(path), dt.date(2026, 3, 4))
    assert plan.input_path == str(jobs / "docs.jsonl")
    assert plan.config.task.schema["properties"] == {"a": {"type": "string"}}
    assert plan.results.path == "o/t/2026-03-04"  # outputs: relative to the working directory
    (tmp_path / "mine.jsonl").write_text('{"text": "y"}\n')
    plan = plan_job(load_job(path, ["input.path=mine.jsonl"]))
    assert plan.input_path == "mine.jsonl" and os.path.isfile(plan.input_path)


def test_eval_set_paths_resolve_against_the_spec_and_unknown_keys_are_refused(tmp_path):
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    path = spec(jobs, MINIMAL + "eval:\n  sets:\n    ocr: data/ocr.jsonl\n    abs: /x/y.jsonl\n")
    sets = load_job(path).spec.eval.sets
    assert sets == {"ocr": str(jobs / "data" / "ocr.jsonl"), "abs": "/x/y.jsonl"}
    assert load_job(spec(jobs, MINIMAL)).spec.eval.sets == {}
    with pytest.raises(JobError, match="eval.set"):
        load_job(spec(jobs, MINIMAL + "eval:\n  set:\n    ocr: data/ocr.jsonl\n"))


def test_set_overrides_parse_yaml_values_and_create_sections(tmp_path):
    path = spec(tmp_path, MINIMAL)
    job = load_job(
        path,
        [
            "task.max_tokens=64",
            "task.thinking=true",
            "task.questions=[a, b]",
            "engine.cache_bytes=512MiB",
            "runner.options.direct_num_workers=2",
            "task.instructions=Say: hi",
        ],
    )
    task = job.spec.task
    assert (task.max_tokens, task.thinking, task.questions) == (64, True, ("a", "b"))
    assert task.instructions == "Say: hi"
    assert job.spec.engine.cache_bytes == 512 << 20
    assert job.spec.runner.options == {"direct_num_workers": 2}
    assert job.set_paths >= {"task.max_tokens", "engine.cache_bytes"}


def test_set_errors(tmp_path):
    path = spec(tmp_path, MINIMAL)
    with pytest.raises(JobError, match="expected key.path=value"):
        load_job(path, ["task.max_tokens"])
    with pytest.raises(JobError, match="input.path is a value, not a section"):
        load_job(path, ["input.path.x=1"])
    with pytest.raises(JobError) as info:
        load_job(path, ["task.max_tokns=64"])
    assert "--set task.max_tokns: unknown field 'max_tokns'; did you mean 'max_tokens'?" in str(
        info.value
    )


def test_date_and_name_templates(tmp_path):
    path = spec(tmp_path, MINIMAL + "output:\n  path: x/{name}/{date}\n  errors: e/{date}\n")
    plan = plan_job(load_job(path), dt.date(2025, 12, 31))
    assert (plan.results.path, plan.errors.path) == ("x/t/2025-12-31", "e/2025-12-31")
    assert plan.config.output.errors.startswith("e/.2025-12-31.staging/run-")
    bad = spec(tmp_path, MINIMAL + "output:\n  path: x/{hour}\n", "bad.yaml")
    assert error_of(bad) == (
        f"{bad}: output.path 'x/{{hour}}' uses {{hour}}; only {{date}} and {{name}} are filled "
        "in (write a literal brace as {{ or }})"
    )
    empty = spec(tmp_path, MINIMAL + "output:\n  path: ''\n", "empty.yaml")
    assert error_of(empty) == f"{empty}: output.path: an output path is empty"
    nested = spec(tmp_path, MINIMAL + "output:\n  path: x\n  errors: x/errs\n", "nested.yaml")
    assert "inside one another" in error_of(nested)


def test_runner_args():
    assert runner_args(RunnerSpec()) == [
        "--runner=DirectRunner",
        "--direct_num_workers=1",
        "--direct_running_mode=in_memory",
    ]
    spec_ = RunnerSpec(
        name="DirectRunner",
        options={"direct_running_mode": "multi_processing", "direct_num_workers": 2, "x": True},
    )
    args = runner_args(spec_, ["--direct_num_workers=4"])
    assert args == [
        "--runner=DirectRunner",
        "--direct_running_mode=multi_processing",
        "--direct_num_workers=2",
        "--x",
        "--direct_num_workers=4",
    ]
    assert runner_args(RunnerSpec(name="DataflowRunner"), ["--project=p"]) == [
        "--runner=DataflowRunner",
        "--project=p",
    ]


def test_sizes():
    assert parse_bytes("1GiB") == 1 << 30 and parse_bytes("2 MB") == 2_000_000
    assert parse_bytes(1024) == 1024
    with pytest.raises(ValueError, match="not a size"):
        parse_bytes("lots")


# ---- spec errors ----------------------------------------------------------------------------


def test_unknown_field_names_file_line_path_and_suggestion(tmp_path):
    path = spec(tmp_path, MINIMAL + "task:\n  kind: extract\n  max_tokenz: 5\n")
    message = error_of(path)
    assert f"{path}:6: task.max_tokenz: unknown field 'max_tokenz'" in message
    assert "did you mean 'max_tokens'?" in message and "fields here: kind, schema," in message


def test_sections_are_the_pipeline_settings_and_refuse_what_they_do_not_know(tmp_path):
    body = "task:\n  retry:\n    max_atempts: 2\ngrouping:\n  block_tokens: 0\n"
    message = error_of(spec(tmp_path, MINIMAL + body))
    assert "2 problem(s)" in message
    assert ":6: task.retry.max_atempts: unknown field 'max_atempts'; did you mean " in message
    assert "fields here: max_attempts, retry_temperatures, length_growth" in message
    assert ":8: grouping.block_tokens: should be greater than or equal to 1 (got 0)" in message
    body = "task:\n  retry:\n    retry_temperatures: [0.2]\n  chunking: {max_tokens: null}\n"
    config = plan_job(load_job(spec(tmp_path, MINIMAL + body, "ok.yaml"))).config
    assert config.task.retry == RetryPolicy(retry_temperatures=(0.2,))
    assert config.task.chunking == ChunkingConfig(max_tokens=None)
    assert config.grouping == GroupingConfig()


def test_bad_type_and_bad_choice(tmp_path):
    path = spec(tmp_path, MINIMAL + "task:\n  max_tokens: lots\n  kind: translate\n")
    message = error_of(path)
    assert "2 problem(s)" in message
    assert f"{path}:5: task.max_tokens: should be a valid integer" in message
    assert "(got 'lots')" in message
    assert f"{path}:6: task.kind: should be 'extract', 'summarize', 'classify' or 'generate'" in (
        message
    )


def test_missing_required_field(tmp_path):
    path = spec(tmp_path, "name: t\n")
    assert "input: required field is missing; add `input:`" in error_of(path)


def test_bad_yaml_and_duplicate_keys(tmp_path):
    path = spec(tmp_path, "name: t\ninput: [unclosed\n")
    assert f"{path}:3:1: not valid YAML" in error_of(path)
    dup = spec(tmp_path, MINIMAL + "name: u\n", "dup.yaml")
    assert "duplicate key 'name' (first on line 1)" in error_of(dup)
    listed = spec(tmp_path, "- name: t\n", "list.yaml")
    assert "a job file is a mapping" in error_of(listed)
    assert "no such job file" in error_of(tmp_path / "absent.yaml")


def test_bad_schema_names_the_spec_field(tmp_path):
    (tmp_path / "bad.json").write_text('{"type": "strin"}')
    path = spec(tmp_path, MINIMAL + "task:\n  schema: bad.json\n")
    message = problem_of(path)
    assert message.startswith(f"task.schema: {tmp_path / 'bad.json'}: invalid schema")
    assert "'strin' is not a JSON Schema type" in message
    missing = spec(tmp_path, MINIMAL + "task:\n  schema: nowhere.json\n", "missing.yaml")
    assert "is neither a file nor a built-in schema" in error_of(missing)
    inline = spec(tmp_path, MINIMAL + "task:\n  schema: {type: object, required: 3}\n", "i.yaml")
    assert "task.schema: invalid schema at $.required" in error_of(inline)
    builtin = spec(tmp_path, MINIMAL + "task:\n  schema: summary\n", "b.yaml")
    assert plan_job(load_job(builtin)).config.task.schema == load_schema("summary")


PART_SCHEMA = '{"type": "object", "properties": {"n": {"type": "integer"}}}'


def test_reduce_part_schema_and_input_budget(tmp_path, monkeypatch):
    jobs = tmp_path / "jobs"
    (jobs / "schemas").mkdir(parents=True)
    (jobs / "schemas" / "part.json").write_text(PART_SCHEMA)
    reduce = "    mode: prompt\n    part_schema: schemas/part.json\n    max_input_tokens: 300\n"
    body = MINIMAL + "task:\n  kind: summarize\n  schema: summary\n  reduce:\n" + reduce
    path = spec(jobs, body)
    monkeypatch.chdir(tmp_path)  # the schema path is relative to the job file, not here
    task = plan_job(load_job(path)).config.task
    assert task.reduce.part_schema == load_schema(str(jobs / "schemas" / "part.json"))
    assert task.reduce.max_input_tokens == 300 and task.schema == load_schema("summary")
    inline = plan_job(load_job(path, [f"task.reduce.part_schema={PART_SCHEMA}"]))
    assert inline.config.task.reduce.part_schema["properties"] == {"n": {"type": "integer"}}
    # Defaults: no part schema, the chunk budget.
    plain = plan_job(load_job(spec(jobs, MINIMAL, "plain.yaml"))).config.task.reduce
    assert (plain.part_schema, plain.max_input_tokens) == (None, None)


def test_reduce_part_schema_and_input_budget_errors(tmp_path):
    head = MINIMAL + "task:\n  kind: summarize\n  schema: summary\n  reduce:\n"
    missing = spec(tmp_path, head + "    part_schema: nowhere.json\n", "missing.yaml")
    message = problem_of(missing)
    assert message.startswith("task.reduce.part_schema: ")
    assert f"{tmp_path / 'nowhere.json'}" in message and "neither a file nor a built-in" in message
    (tmp_path / "bad.json").write_text('{"type": "strin"}')
    bad = spec(tmp_path, head + "    part_schema: bad.json\n", "bad.yaml")
    assert problem_of(bad).startswith(
        f"task.reduce.part_schema: {tmp_path / 'bad.json'}: invalid schema"
    )
    (tmp_path / "part.json").write_text(PART_SCHEMA)
    merge = spec(tmp_path, head + "    mode: merge\n    part_schema: part.json\n", "merge.yaml")
    assert problem_of(merge) == (
        "task.reduce.part_schema does not work with merge mode (reduce.mode "
        "'merge', kind 'summarize'): merging needs parts in the task schema; set reduce.mode "
        "to prompt, or remove part_schema"
    )
    free = spec(tmp_path, MINIMAL + "task:\n  reduce:\n    part_schema: part.json\n", "f.yaml")
    assert problem_of(free).startswith("task.reduce.part_schema needs task.schema")
    zero = spec(tmp_path, head + "    max_input_tokens: 0\n", "zero.yaml")
    assert f"{zero}:8: task.reduce.max_input_tokens: should be greater than or equal to 1" in (
        error_of(zero)
    )


def test_pipeline_checks_become_job_errors(tmp_path):
    path = spec(
        tmp_path, MINIMAL + "task:\n  chunking:\n    max_tokens: 64\n    overlap_tokens: 60\n"
    )
    assert problem_of(path).startswith("task.chunking.overlap_tokens must be between 0")
    path = spec(tmp_path, MINIMAL + "engine:\n  cache_bytes: lots\n", "size.yaml")
    assert "engine.cache_bytes: Value error, 'lots' is not a size" in error_of(path)
    path = spec(tmp_path, MINIMAL + "engine:\n  cuda_graphs: true\n", "graphs.yaml")
    assert "graphs.yaml: engine: cuda_graphs needs one CUDA device" in error_of(path)
    assert "got device 'cpu'" in error_of(path) and "set engine.cuda_graphs: false" in error_of(
        path
    )


def test_constraint_option_and_schema_files_that_ref_their_neighbours(tmp_path):
    (tmp_path / "common.json").write_text(json.dumps({"$defs": {"code": {"enum": ["DE", "FR"]}}}))
    main = {
        "type": "object",
        "properties": {
            "c": {"$ref": "common.json#/$defs/code"},
            "n": {"type": "string", "not": {"const": ""}},
        },
    }
    (tmp_path / "main.json").write_text(json.dumps(main))
    path = spec(tmp_path, MINIMAL + "task:\n  schema: main.json\n")
    task = plan_job(load_job(path)).config.task
    assert task.constraint == "auto"
    assert task.schema["properties"]["c"]["$ref"] == "#/$defs/ref-common.json-defs-code"
    path = spec(tmp_path, MINIMAL + "task:\n  schema: main.json\n  constraint: exact\n", "x.yaml")
    assert "task.constraint is exact, but task.schema is not" in error_of(path)
    assert 'Unimplemented keys: ["not"]' in error_of(path)
    path = spec(tmp_path, MINIMAL + "task:\n  constraint: strict\n", "bad.yaml")
    assert "task.constraint: should be 'auto' or 'exact'" in error_of(path)


def test_grounded_fields_reach_the_task_and_bad_ones_name_the_fix(tmp_path):
    grounded = plan_job(load_job(JOBS / "extract_invoices.yaml")).config.task.grounded
    # The currency's enum narrows to the codes the document's marks support ("x-ground").
    assert "total_amount" in grounded and "currency" in grounded
    invoice = JOBS / "schemas" / "invoice.json"
    path = spec(tmp_path, MINIMAL + f"task:\n  schema: {invoice}\n  grounded: [vendor, totl]\n")
    message = problem_of(path)
    assert message.startswith("task.grounded: 'totl' is not a property of the task schema")
    assert "known: currency, customer" in message
    path = spec(tmp_path, MINIMAL + "task:\n  grounded: [vendor]\n", "free.yaml")
    assert "task.grounded needs task.schema" in error_of(path)
    marked = tmp_path / "marked.json"
    head = {"type": "string", "x-ground": "lines"}
    marked.write_text(json.dumps({"type": "object", "properties": {"head": head}}))
    path = spec(tmp_path, MINIMAL + f"task:\n  schema: {marked}\n  grounded: [head]\n", "m.yaml")
    assert problem_of(path) == (
        "task.grounded: 'head': \"x-ground\": 'lines' is not a grounding kind of "
        "a string; use one of span, line, heading, currency"
    )
    marked.write_text(json.dumps({"type": "object", "properties": {"n": {"type": "integer",
                                  "x-ground": "line"}}}))  # fmt: skip
    path = spec(tmp_path, MINIMAL + f"task:\n  schema: {marked}\n  grounded: [n]\n", "n.yaml")
    assert error_of(path).endswith(
        "'n': \"x-ground\": 'line' is not a grounding kind of a number; use one of number, count"
    )
    row = {"type": "object", "x-ground": "line", "properties": {"n": {"type": "number"}}}
    marked.write_text(json.dumps({"type": "object", "properties": {"rows": {"items": row}}}))
    path = spec(tmp_path, MINIMAL + f"task:\n  schema: {marked}\n  grounded: [rows.n]\n", "o.yaml")
    assert problem_of(path) == (
        "task.grounded: 'rows.n': \"x-ground\": 'line' on an object is not a "
        "grounding kind; use one of sentence, or mark its properties instead"
    )
    heads = {"type": "array", "x-ground": "sorted", "items": {"type": "string"}}
    marked.write_text(json.dumps({"type": "object", "properties": {"heads": heads}}))
    path = spec(tmp_path, MINIMAL + f"task:\n  schema: {marked}\n  grounded: [heads]\n", "a.yaml")
    assert problem_of(path) == (
        "task.grounded: 'heads': \"x-ground\": 'sorted' on an array is not a "
        "grounding kind; use one of ordered, or mark its items instead"
    )


def test_prompt_mode_reduce_rules_reach_the_task_and_bad_ones_name_the_fix(tmp_path):
    reduce = plan_job(load_job(JOBS / "nightly_summarize.yaml")).config.task.reduce
    assert reduce.mode == "prompt"
    assert reduce.rules == {"people": "concat_unique", "figures": "concat_unique"}
    assert reduce.exclude == {"people": "author"}
    schema = JOBS / "schemas" / "report_summary.json"
    part = JOBS / "schemas" / "report_chunk_summary.json"
    body = (f"task:\n  kind: summarize\n  schema: {schema}\n  reduce:\n    mode: prompt\n"
            f"    part_schema: {part}\n    rules: {{section_count: max}}\n")  # fmt: skip
    message = error_of(spec(tmp_path, MINIMAL + body))
    assert "'section_count' not a top-level property of the part schema" in message
    assert "known: title, report_type, author" in message
    body = (f"task:\n  kind: summarize\n  schema: {schema}\n  reduce:\n    mode: prompt\n"
            f"    exclude: {{people: writer}}\n")  # fmt: skip
    path = spec(tmp_path, MINIMAL + body, "exclude.yaml")
    assert problem_of(path) == (
        "task.reduce.exclude: 'writer' is not a top-level property of the task "
        "schema (known: title, report_type, author, report_date, section_count, people, figures, "
        "summary)"
    )


def test_engine_max_pending_reaches_the_engine_and_must_be_positive(tmp_path):
    path = spec(tmp_path, MINIMAL + "engine:\n  max_pending: 3\n")
    config = plan_job(load_job(path), dt.date(2026, 1, 2)).config.engine
    assert config.max_pending == 3
    release_engines()
    try:
        assert engine_for(config).max_pending == 3
    finally:
        release_engines()
    message = error_of(spec(tmp_path, MINIMAL + "engine:\n  max_pending: 0\n"))
    assert "engine.max_pending: should be greater than or equal to 1" in message
