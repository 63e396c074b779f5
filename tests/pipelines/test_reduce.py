"""Reducing the parts of split documents: merge rules, failed parts, reduce-prompt planning."""

from __future__ import annotations

import dataclasses
import json

import pytest

from flashbeam.model.engine.request import Request, Usage
from flashbeam.pipelines.config import ChunkingConfig, ReduceConfig, TaskConfig
from flashbeam.pipelines.records import (
    ErrorRow,
    ItemResult,
    ItemStats,
    Origin,
    PromptRequest,
    RequestOutcome,
)
from flashbeam.pipelines.reduce import (
    apply_rule,
    collect_parts,
    drop_excluded,
    finish_outcome,
    finish_reduce,
    merge_item,
    merge_values,
    next_state,
    pack,
    plan_round,
    reassemble,
    start_reduce,
)
from flashbeam.schemas import SchemaError, load_schema

INVOICE = {
    "type": "object",
    "properties": {
        "vendor": {"type": ["string", "null"]},
        "total": {"type": ["number", "null"]},
        "items": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["vendor", "total", "items"],
}


def _outcome(index: int, count: int, value=None, valid=True, reason="stop", text="{}", level=0):
    origin = Origin("doc", "src", 3)
    prompt = PromptRequest(
        item=("doc", 0),
        origin=origin,
        request=Request(id=f"doc#q0#c{index}"),
        shared_chars=0,
        input_text="abcdefghij"[index * 4 : index * 4 + 6],
        chunk_index=index,
        chunk_count=count,
        char_start=index * 4,
        level=level,
        final=count == 1,
    )
    errors = [] if valid else ["$.total: 'x' is not of type 'number'"]
    return RequestOutcome(
        prompt, valid, 2, errors, value, text, None, reason, Usage(10, 4, 6, 3), 0.5, "m"
    )


def test_rules():
    assert apply_rule("first_non_null", [None, 2, 3]) == 2
    assert apply_rule("last_non_null", [1, 2, None]) == 2
    assert apply_rule("most_common", ["b", "a", "a", "b", None]) == "b"  # tie: first seen
    assert apply_rule("concat_unique", [["x", "y"], ["y", "z"], None]) == ["x", "y", "z"]
    assert apply_rule("concat_unique", [["x", "y", "z"], ["x"]]) == ["x", "y", "z"]  # first seen
    assert apply_rule("concat_unique", ["a", "b", "a"]) == "a\nb"
    assert apply_rule("max", [3, 7.5, None]) == 7.5
    assert apply_rule("min", ["2024-03-01", "2024-01-31"]) == "2024-01-31"
    assert apply_rule("max", [None, None]) is None


def test_merge_values_defaults_and_job_rules():
    values = [
        {"vendor": None, "total": 10.0, "items": ["a"]},
        {"vendor": "Acme", "total": 12.0, "items": ["a", "b"]},
        {"vendor": "Acme", "total": 12.0, "items": []},
    ]
    merged = merge_values(values, INVOICE, ReduceConfig())
    assert merged == {"vendor": "Acme", "total": 12.0, "items": ["a", "b"]}
    chosen = merge_values(values, INVOICE, ReduceConfig(rules={"total": "first_non_null"}))
    assert chosen["total"] == 10.0
    assert merge_values(["x", "y", "y"], {"type": "string"}, ReduceConfig()) == "y"


def test_reduce_config_rejects_unknown_rules():
    with pytest.raises(ValueError, match="merge rules"):
        ReduceConfig(rules={"total": "average"})  # type: ignore[dict-item]


def test_part_schema_and_reduce_budget_settings():
    assert ReduceConfig().part_schema is None and ReduceConfig().max_input_tokens is None
    assert ReduceConfig(part_schema="summary").part_schema == load_schema("summary")
    with pytest.raises(SchemaError, match=r"task.reduce.part_schema: invalid schema"):
        ReduceConfig(part_schema={"type": "strin"})
    with pytest.raises(ValueError, match="task.reduce.max_input_tokens must be >= 1"):
        ReduceConfig(max_input_tokens=0)
    prompt = ReduceConfig(mode="prompt", part_schema=INVOICE)
    task = TaskConfig(kind="extract", schema={"type": "object"}, reduce=prompt)
    assert task.schema_for("part") == INVOICE and task.schema_for("task") == {"type": "object"}
    assert task.schema_for("none") is None and TaskConfig().schema_for("part") is None
    with pytest.raises(
        ValueError, match="part_schema needs task.schema: .*; set task.schema, or remove"
    ):
        TaskConfig(kind="summarize", reduce=prompt)
    # An extraction merges by default ("auto"), and merging needs parts in the task schema.
    auto = ReduceConfig(part_schema=INVOICE)
    with pytest.raises(ValueError, match="merge mode .*reduce.mode 'auto', kind 'extract'"):
        TaskConfig(kind="extract", schema={"type": "object"}, reduce=auto)
    merge = ReduceConfig(mode="merge", part_schema=INVOICE)
    with pytest.raises(ValueError, match="set reduce.mode to prompt, or remove part_schema"):
        TaskConfig(kind="summarize", schema={"type": "object"}, reduce=merge)


def test_collect_parts_fail_and_skip():
    outcomes = [
        _outcome(1, 3, {"vendor": "A", "total": 1, "items": []}),
        _outcome(0, 3, {"vendor": "A", "total": 1, "items": []}),
        _outcome(2, 3, None, valid=False),
    ]
    failed = collect_parts(outcomes, ReduceConfig())
    assert isinstance(failed, ErrorRow) and failed.stage == "validate"
    assert "part 3 of 3" in failed.reason and failed.input == "abcdefghij"
    assert failed.stats.attempts == 6 and failed.stats.usage.prompt_tokens == 30
    ok, stats, document = collect_parts(outcomes, ReduceConfig(on_part_error="skip"))
    assert [o.prompt.chunk_index for o in ok] == [0, 1]
    assert (stats.parts_failed, stats.chunk_count, document) == (1, 3, "abcdefghij")
    none_ok = collect_parts([outcomes[2]], ReduceConfig(on_part_error="skip"))
    assert isinstance(none_ok, ErrorRow)


def test_merge_item_validates_the_merged_value():
    task = TaskConfig(kind="extract", schema={**INVOICE, "properties": {
        **INVOICE["properties"], "items": {"type": "array", "maxItems": 2}}})  # fmt: skip
    parts = [
        _outcome(0, 2, {"vendor": "A", "total": 1, "items": ["x", "y"]}),
        _outcome(1, 2, {"vendor": "A", "total": 1, "items": ["z"]}),
    ]
    error = merge_item(parts, ItemStats(chunk_count=2), "doc text", task)
    assert isinstance(error, ErrorRow) and error.stage == "reduce"
    assert "merged value does not validate" in error.reason and error.input == "doc text"
    ok = merge_item(parts[:1], ItemStats(chunk_count=2), "doc text", task)
    assert isinstance(ok, ItemResult) and ok.value["items"] == ["x", "y"]


def test_finish_outcome_routes_failures():
    assert isinstance(finish_outcome(_outcome(0, 1, {"ok": True})), ItemResult)
    error = finish_outcome(_outcome(0, 1, None, valid=False, reason="error"))
    assert isinstance(error, ErrorRow) and error.stage == "engine"


def test_reassemble_and_pack():
    assert reassemble([(4, "efghij"), (0, "abcdef")]) == "abcdefghij"
    assert pack([3, 3, 3, 9, 1], 6) == [[0, 1], [2], [3], [4]]


def test_plan_round_packs_until_the_parts_fit(tokenizer):
    task = TaskConfig(kind="summarize", chunking=ChunkingConfig(max_tokens=40, overlap_tokens=4))
    parts = [_outcome(i, 4, None, text="The summary of one part says a few words.")
             for i in range(4)]  # fmt: skip
    state = start_reduce(parts, ItemStats(chunk_count=4), "document", task)
    requests = plan_round(state, task, tokenizer, level=1, last=False)
    assert len(requests) > 1 and not any(r.final for r in requests)
    assert requests[0].carry is state.stats and all(r.carry is None for r in requests[1:])
    (last,) = plan_round(state, task, tokenizer, level=3, last=True)
    assert last.final and last.level == 3


def test_plan_round_budget_is_reduce_max_input_tokens(tokenizer):
    chunking = ChunkingConfig(max_tokens=40, overlap_tokens=4)
    parts = [_outcome(i, 6, None, text="The summary of one part says a few words.")
             for i in range(6)]  # fmt: skip
    size = len(tokenizer.encode(parts[0].text))

    def groups(max_input_tokens):
        reduce = ReduceConfig(mode="prompt", max_input_tokens=max_input_tokens)
        task = TaskConfig(kind="summarize", chunking=chunking, reduce=reduce)
        state = start_reduce(parts, ItemStats(chunk_count=6), "document", task)
        requests = plan_round(state, task, tokenizer, level=1, last=False)
        return [r.request.messages[1]["content"].count("\nPart ") for r in requests]

    by_chunking = groups(None)  # default: the chunk budget, as before
    assert by_chunking == [len(g) for g in pack([size] * 6, 40)] and len(by_chunking) > 1
    assert groups(6 * size) == [6]  # everything fits one (final) request
    assert groups(2 * size) == [2, 2, 2]
    assert groups(1) == [1] * 6


PEOPLE = {
    "type": "object",
    "properties": {
        "people": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
        "summary": {"type": "string"},
    },
    "required": ["people", "summary"],
}
PEOPLE_PART = {
    "type": "object",
    "properties": {"people": {"type": "array", "items": {"type": "string"}}},
    "required": ["people"],
}


def _people_task(**reduce):
    rules = reduce.pop("rules", {"people": "concat_unique"})
    return TaskConfig(kind="summarize", schema=PEOPLE, reduce=ReduceConfig(
        mode="prompt", part_schema=PEOPLE_PART, rules=rules, **reduce))  # fmt: skip


def test_prompt_mode_rules_replace_the_models_fields_with_the_parts_merge(tokenizer):
    task = _people_task(max_input_tokens=1)  # one part per round-1 request
    parts = [_outcome(0, 3, {"people": ["Ann Lee", "Bo Chen"]}),
             _outcome(1, 3, {"people": []}),
             _outcome(2, 3, {"people": ["Bo Chen", "Cy Diaz"]})]  # fmt: skip
    state = start_reduce(parts, ItemStats(chunk_count=3), "document", task)
    assert state.merged == {"people": ["Ann Lee", "Bo Chen", "Cy Diaz"]}
    # An intermediate round carries the merged fields on the request that carries the stats.
    requests = plan_round(state, task, tokenizer, level=1, last=False)
    assert len(requests) == 3 and not any(r.final for r in requests)
    assert requests[0].merged == state.merged
    assert all(r.merged is None for r in requests[1:])
    outputs = [_reduced(r, {"people": ["Ann Lee"], "summary": "s"}) for r in requests]
    again = next_state(outputs, task.reduce)
    assert again.merged == state.merged
    (final,) = plan_round(again, task, tokenizer, level=2, last=True)
    model_wrote = {"people": ["Ann Lee", "Ann Lee", "Ann Lee"], "summary": "All well."}
    result = finish_reduce(_reduced(final, model_wrote), task)
    assert isinstance(result, ItemResult)
    assert result.value == {"people": ["Ann Lee", "Bo Chen", "Cy Diaz"], "summary": "All well."}
    assert json.loads(result.text) == result.value
    # Without rules the model's value stands.
    plain = _people_task(rules={})
    assert start_reduce(parts, ItemStats(chunk_count=3), "document", plain).merged is None
    assert finish_reduce(_reduced(final, model_wrote, merged=None), plain).value == model_wrote


def test_prompt_mode_rules_whose_merge_breaks_the_schema_give_an_error_row(tokenizer):
    task = _people_task()
    parts = [_outcome(0, 2, {"people": ["A", "B", "C"]}), _outcome(1, 2, {"people": ["D"]})]
    state = start_reduce(parts, ItemStats(chunk_count=2), "the document", task)
    (final,) = plan_round(state, task, tokenizer, level=1, last=True)
    error = finish_reduce(_reduced(final, {"people": ["A"], "summary": "s"}), task)
    assert isinstance(error, ErrorRow) and error.stage == "reduce"
    assert "fields merged by reduce.rules (people)" in error.reason
    assert error.reason.endswith("$.people: ['A', 'B', 'C', 'D'] is too long")
    assert json.loads(error.output)["people"] == ["A", "B", "C", "D"]
    assert error.input == "the document" and error.stats is not None
    # A reduce request that failed stays that failure.
    failed = finish_reduce(_reduced(final, None, valid=False), task)
    assert isinstance(failed, ErrorRow) and "output invalid" in failed.reason


def test_prompt_mode_rules_are_checked_against_both_schemas():
    with pytest.raises(ValueError, match=r"'nobody' not a top-level property of the task schema"):
        _people_task(rules={"people": "concat_unique", "nobody": "max"})
    with pytest.raises(ValueError, match=r"'summary' not a top-level property of the part schema"):
        _people_task(rules={"summary": "first_non_null"})
    with pytest.raises(ValueError, match="default_rule .* merge mode only"):
        _people_task(default_rule="most_common")
    with pytest.raises(ValueError, match="rules in prompt mode merge schema fields"):
        TaskConfig(kind="summarize", reduce=ReduceConfig(rules={"people": "concat_unique"}))
    # Merge mode keeps both (rules name any fields; default_rule covers the rest).
    merge = ReduceConfig(rules={"people": "max"}, default_rule="first_non_null")
    assert TaskConfig(kind="extract", schema=PEOPLE, reduce=merge).reduce is merge


AUTHORED = {
    "type": "object",
    "properties": {
        "author": {"type": ["string", "null"]},
        "editors": {"type": "array", "items": {"type": "string"}},
        "people": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "summary": {"type": "string"},
    },
}


def test_drop_excluded_removes_what_the_paired_property_holds():
    value = {"author": "Ann Lee", "editors": ["Bo Chen"], "people": ["Ann Lee", "Bo Chen", "Cy"]}
    assert drop_excluded(value, {"people": "author"})["people"] == ["Bo Chen", "Cy"]
    assert drop_excluded(value, {"people": "editors"})["people"] == ["Ann Lee", "Cy"]  # a list
    both = drop_excluded(value, {"people": "author", "editors": "author"})
    assert both["people"] == ["Bo Chen", "Cy"] and both["editors"] == ["Bo Chen"]
    assert value["people"] == ["Ann Lee", "Bo Chen", "Cy"]  # the input is not changed
    for unpaired in ({**value, "author": None}, {k: v for k, v in value.items() if k != "author"}):
        assert drop_excluded(unpaired, {"people": "author"}) == unpaired  # nothing to drop
    assert drop_excluded({"people": None, "author": "A"}, {"people": "author"})["people"] is None
    assert drop_excluded(["Ann Lee"], {"people": "author"}) == ["Ann Lee"]  # not an object
    assert drop_excluded(value, {}) is value


def test_prompt_mode_exclude_drops_the_author_from_the_merged_people(tokenizer):
    reduce = ReduceConfig(
        mode="prompt",
        part_schema=PEOPLE_PART,
        rules={"people": "concat_unique"},
        exclude={"people": "author"},
    )
    task = TaskConfig(kind="summarize", schema=AUTHORED, reduce=reduce)
    parts = [_outcome(0, 2, {"people": ["Ann Lee", "Bo Chen"]}), _outcome(1, 2, {"people": []})]
    state = start_reduce(parts, ItemStats(chunk_count=2), "the document", task)
    (final,) = plan_round(state, task, tokenizer, level=1, last=True)
    wrote = {"author": "Ann Lee", "people": ["Ann Lee"], "summary": "s"}
    result = finish_reduce(_reduced(final, wrote), task)
    assert isinstance(result, ItemResult) and result.value["people"] == ["Bo Chen"]
    assert json.loads(result.text) == result.value
    # The author was everyone: the emptied list breaks minItems, an error row says why.
    parts = [_outcome(0, 2, {"people": ["Ann Lee"]}), _outcome(1, 2, {"people": []})]
    state = start_reduce(parts, ItemStats(chunk_count=2), "the document", task)
    (final,) = plan_round(state, task, tokenizer, level=1, last=True)
    error = finish_reduce(_reduced(final, wrote), task)
    assert isinstance(error, ErrorRow) and error.stage == "reduce"
    assert error.reason.startswith(
        "with the fields merged by reduce.rules (people) and reduce.exclude (people: author) "
        "applied the output does not validate"
    )
    # Without rules the exclusion still applies to what the reduce prompt wrote.
    alone = dataclasses.replace(task, reduce=dataclasses.replace(reduce, rules={}))
    wrote = {"author": "Ann Lee", "people": ["Ann Lee", "Cy Diaz"], "summary": "s"}
    result = finish_reduce(_reduced(final, wrote, merged=None), alone)
    assert result.value["people"] == ["Cy Diaz"]


def test_merge_mode_exclude_applies_to_the_merged_value():
    task = TaskConfig(kind="extract", schema=AUTHORED,
                      reduce=ReduceConfig(exclude={"people": "author"}))  # fmt: skip
    parts = [_outcome(0, 2, {"author": "Ann Lee", "people": ["Ann Lee", "Bo Chen"]}),
             _outcome(1, 2, {"author": None, "people": ["Cy Diaz"]})]  # fmt: skip
    merged = merge_item(parts, ItemStats(chunk_count=2), "doc", task)
    assert merged.value["author"] == "Ann Lee" and merged.value["people"] == ["Bo Chen", "Cy Diaz"]


def test_exclude_names_list_properties_of_the_task_schema():
    def task(exclude, schema=AUTHORED):
        return TaskConfig(kind="extract", schema=schema, reduce=ReduceConfig(exclude=exclude))

    assert task({"people": "editors"}).reduce.exclude == {"people": "editors"}
    with pytest.raises(ValueError, match=r"'writer' is not a top-level property of the task sch"):
        task({"people": "writer"})
    with pytest.raises(ValueError, match=r"'summary' is not a list \(an array property\)"):
        task({"summary": "author"})
    with pytest.raises(ValueError, match="'people' cannot exclude itself"):
        task({"people": "people"})
    with pytest.raises(ValueError, match="reduce.exclude drops entries .* set task.schema"):
        task({"people": "author"}, schema=None)


def _reduced(prompt: PromptRequest, value, valid=True, **changes) -> RequestOutcome:
    prompt = dataclasses.replace(prompt, **changes)
    text = json.dumps(value) if value is not None else ""
    errors = [] if valid else ["$.summary: missing"]
    return RequestOutcome(prompt, valid, 1, errors, value, text, None, "stop", Usage(5, 0, 5, 2),
                          0.1, "m")  # fmt: skip
