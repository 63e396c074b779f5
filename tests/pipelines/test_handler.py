"""The ModelHandlers with Beam's RunInference, and running + validating prompt requests."""

from __future__ import annotations

import dataclasses

import apache_beam as beam
import pytest
from apache_beam.ml.inference.base import RunInference
from apache_beam.testing.util import assert_that

from flashbeam.model.engine.request import Request, Result, Usage
from flashbeam.pipelines.config import ReduceConfig, TaskConfig
from flashbeam.pipelines.handler import EngineModelHandler, PromptGroupHandler, engine_for
from flashbeam.pipelines.prompts import document_requests
from flashbeam.pipelines.records import Chunk, Document, Origin
from flashbeam.pipelines.validate import UsageMeter, run_prompts
from flashbeam.schemas import RetryPolicy


def _chunk(doc_id: str, text: str) -> Chunk:
    return Chunk(Document(Origin(doc_id, "src", 1), text=text), 0, 1, text, 0, len(text))


def test_engine_is_loaded_once_per_process(engine_config):
    assert engine_for(engine_config) is engine_for(engine_config)


def test_the_engine_config_can_turn_on_kv_quant_sim(engine_config):
    simulated = dataclasses.replace(engine_config, kv_quant_sim=True)
    assert engine_for(simulated).model.config.kv_quant_sim
    assert not engine_for(engine_config).model.config.kv_quant_sim  # as the checkpoint


def test_engine_model_handler_with_beams_run_inference(engine_config):
    requests = [
        Request(id=f"r{i}", messages=[{"role": "user", "content": f"Hello {i}"}], max_tokens=3)
        for i in range(3)
    ]

    def check(results):
        assert sorted(r.id for r in results) == ["r0", "r1", "r2"]
        assert all(isinstance(r, Result) and r.finish_reason in ("stop", "length")
                   for r in results)  # fmt: skip
        assert all(r.usage.completion_tokens >= 1 for r in results)

    with beam.Pipeline() as p:
        results = (
            p
            | beam.Create(requests)
            | RunInference(EngineModelHandler(engine_config, batch_size=2))
        )
        assert_that(results, check)


def test_prompt_group_handler_keeps_groups(engine_config, tiny_schema):
    task = TaskConfig(kind="extract", schema=tiny_schema, instructions="Extract.",
                      questions=("a?", "b?"), max_tokens=8, schema_in_prompt=False)  # fmt: skip
    groups = [document_requests(_chunk("x", "Doc x."), task),
              document_requests(_chunk("y", "Doc y."), task)]  # fmt: skip
    handler = PromptGroupHandler(engine_config, task, requests_per_call=4)
    assert handler.batch_elements_kwargs()["element_size_fn"](groups[0]) == 2
    outcomes = handler.run_inference(groups, handler.load_model())
    assert [[o.prompt.request.id for o in g] for g in outcomes] == [
        ["x#q0", "x#q1"],
        ["y#q0", "y#q1"],
    ]
    for outcome in (o for g in outcomes for o in g):
        assert outcome.valid and outcome.value in ({"ok": True}, {"ok": False})
        assert outcome.usage.prompt_tokens > 0 and outcome.latency_s > 0
        assert outcome.model == engine_config.model


class _BrokenOn:
    """An engine double whose whole `generate` call raises when one request is in it."""

    def __init__(self, bad_id: str):
        self.bad_id = bad_id

    def generate(self, requests):
        if any(r.id == self.bad_id for r in requests):
            raise RuntimeError("device fell over")
        return [Result(r.id, text="hi", finish_reason="stop", usage=Usage(5, 1, 4, 1))
                for r in requests]  # fmt: skip


def test_usage_meter_isolates_a_failing_request():
    meter = UsageMeter(_BrokenOn("b"))
    results = [f.result() for f in meter.submit_many([Request(id=i) for i in "abc"])]
    assert [r.finish_reason for r in results] == ["stop", "error", "stop"]
    assert "device fell over" in results[1].error
    assert meter.usage["a"].prompt_tokens == 5 and meter.usage["b"].prompt_tokens == 0
    assert meter.submissions == 3


def test_run_prompts_free_text_and_bad_response_format():
    task = TaskConfig(kind="generate")
    doc = Document(
        Origin("c1", "b.jsonl", 1),
        messages=[{"role": "user", "content": "x"}],
        params={"response_format": {"type": "json_schema"}},
    )
    bad = document_requests(Chunk(doc, 0, 1, "", 0, 0), task)
    free = document_requests(_chunk("d", "Some text."), task)
    outcomes = run_prompts(_BrokenOn("none"), bad + free, task, "m")
    assert not outcomes[0].valid and "bad response_format" in outcomes[0].errors[0]
    assert outcomes[1].valid and outcomes[1].text == "hi" and outcomes[1].attempts == 1


def test_run_prompts_reports_each_outcome_once_whatever_its_schema():
    """A bad response_format, JSON objects and free text run side by side; `on_outcome`
    hears every prompt's final outcome exactly once: the one run_prompts returns."""
    task = TaskConfig(kind="generate")

    def doc(doc_id, response_format):
        params = {"response_format": response_format} if response_format else {}
        messages = [{"role": "user", "content": doc_id}]
        document = Document(Origin(doc_id, "b.jsonl", 1), messages=messages, params=params)
        return document_requests(Chunk(document, 0, 1, "", 0, 0), task)

    prompts = doc("bad", {"type": "json_schema"}) + doc("obj", {"type": "json_object"})
    prompts += doc("free", None) + doc("obj2", {"type": "json_object"})
    heard = []
    outcomes = run_prompts(_BrokenOn("none"), prompts, task, "m", heard.append)
    assert sorted(id(o) for o in heard) == sorted(id(o) for o in outcomes)
    # "hi" is free text, and no JSON object however often it is retried.
    assert [(o.valid, o.attempts) for o in outcomes] == [
        (False, 0),
        (False, 3),
        (True, 1),
        (False, 3),
    ]


class _Replies:
    """An engine double that answers every request with `text` and records the schema each
    request was held to."""

    def __init__(self, text: str):
        self.text, self.schemas = text, {}

    def generate(self, requests):
        for r in requests:
            self.schemas.setdefault(r.id, []).append(r.response_format["json_schema"]["schema"])
        return [Result(r.id, text=self.text, finish_reason="stop", usage=Usage(5, 0, 5, 2))
                for r in requests]  # fmt: skip


def test_run_prompts_validates_parts_against_the_part_schema(tiny_schema):
    part = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"],
            "additionalProperties": False}  # fmt: skip
    reduce = ReduceConfig(mode="prompt", part_schema=part)
    task = TaskConfig(kind="summarize", schema=tiny_schema, reduce=reduce)
    text = "Part two."
    split = Chunk(Document(Origin("s", "src", 1), text=text), 1, 2, text, 0, len(text))
    prompts = document_requests(split, task) + document_requests(_chunk("w", "Whole."), task)
    engine = _Replies('{"n": 4}')
    part_outcome, whole_outcome = run_prompts(engine, prompts, task, "m")
    assert part_outcome.valid and part_outcome.value == {"n": 4} and part_outcome.attempts == 1
    # The same reply is no output of the task schema: every retry of it fails too.
    assert not whole_outcome.valid and whole_outcome.attempts == task.retry.max_attempts
    assert engine.schemas == {"s#q0#c1": [part], "w#q0": [tiny_schema] * task.retry.max_attempts}


def test_run_prompts_holds_outputs_to_the_schema_in_its_own_property_order():
    # The grammar writes the properties in the schema's order, and the model follows the order
    # it was trained with: a schema sorted by key on the way would change every output.
    schema = {"type": "object", "additionalProperties": False, "required": ["zeta", "alpha"],
              "properties": {"zeta": {"type": "integer"}, "alpha": {"type": "string"}}}  # fmt: skip
    task = TaskConfig(kind="extract", schema=schema)
    engine = _Replies('{"zeta": 1, "alpha": "a"}')
    [outcome] = run_prompts(engine, document_requests(_chunk("d", "Doc."), task), task, "m")
    assert outcome.valid and outcome.value == {"zeta": 1, "alpha": "a"}
    [[held_to]] = engine.schemas.values()
    assert list(held_to["properties"]) == ["zeta", "alpha"]


# ---- grounded fields ------------------------------------------------------------------------

GROUNDED_SCHEMA = {
    "type": "object",
    "properties": {"vendor": {"type": "string", "maxLength": 40},
                   "total": {"type": ["number", "null"]}, "note": {"type": "string"}},
    "required": ["vendor", "total", "note"],
    "additionalProperties": False,
}  # fmt: skip


def test_grounded_fields_hold_each_request_to_values_its_own_document_states():
    task = TaskConfig(kind="extract", schema=GROUNDED_SCHEMA, grounded=("vendor", "total"))
    docs = {"a": "Acme Ltd\nTotal: $1,200.50", "b": "Bolt Inc  total 7"}
    prompts = [p for i, t in docs.items() for p in document_requests(_chunk(i, t), task)]
    assert all(p.request.response_format is None for p in prompts)  # built at generation only
    engine = _Replies('{"vendor": "Acme Ltd", "total": 1200.5, "note": "x"}')
    a, b = run_prompts(engine, prompts, task, "m")
    assert a.valid and a.attempts == 1
    # b's document does not state that vendor: its grammar would not have allowed the reply,
    # and validation (against the task schema) cannot tell, so the double's reply passes.
    [held_a] = engine.schemas["a#q0"]
    held_b = engine.schemas["b#q0"][0]
    assert "Acme Ltd" in held_a["properties"]["vendor"]["enum"]
    assert "Acme Ltd" not in held_b["properties"]["vendor"]["enum"]
    assert held_a["properties"]["total"]["enum"] == [1200.5, None]
    assert held_b["properties"]["total"]["enum"] == [7, None]
    assert held_a["properties"]["note"] == {"type": "string"}
    assert b.valid


def test_a_request_with_its_own_response_format_is_not_grounded():
    task = TaskConfig(kind="extract", schema=GROUNDED_SCHEMA, grounded=("vendor",))
    [prompt] = document_requests(_chunk("a", "Acme Ltd"), task)
    own = {"type": "json_schema", "json_schema": {"name": "own", "schema": GROUNDED_SCHEMA}}
    prompt.request.response_format = own
    engine = _Replies('{"vendor": "Zed", "total": null, "note": ""}')
    [outcome] = run_prompts(engine, [prompt], task, "m")
    assert outcome.valid and engine.schemas["a#q0"] == [GROUNDED_SCHEMA]


def test_a_grounded_field_of_a_random_model_is_always_a_value_the_document_states(engine_config):
    # A random-weight model writes noise, but grounded noise: every vendor is a span of the
    # document and every total a number it writes, and the output still validates.
    from flashbeam.schemas.grounding import text_numbers, text_spans

    task = TaskConfig(kind="extract", schema=GROUNDED_SCHEMA, grounded=("vendor", "total"),
                      max_tokens=48, temperature=1.0)  # fmt: skip
    texts = {f"d{i}": f"Invoice from Firm {i} Ltd.\nAmount due: {i},{i}50.25 EUR" for i in range(4)}
    prompts = [p for i, t in texts.items() for p in document_requests(_chunk(i, t), task)]
    outcomes = run_prompts(engine_for(engine_config), prompts, task, "m")
    for outcome in outcomes:
        assert outcome.valid, outcome.errors
        text = texts[outcome.prompt.origin.id]
        assert outcome.value["vendor"] in text_spans(text)
        assert outcome.value["total"] is None or outcome.value["total"] in text_numbers(text)


def test_grounded_fields_must_name_schema_properties_and_need_constrained_decoding():
    with pytest.raises(ValueError, match=r"'vendr' is not a property .*known: note, total, vendor"):
        TaskConfig(schema=GROUNDED_SCHEMA, grounded=["vendr"])
    with pytest.raises(ValueError, match="needs task.schema"):
        TaskConfig(grounded=["vendor"])
    with pytest.raises(ValueError, match="retry.constrained is false"):
        TaskConfig(schema=GROUNDED_SCHEMA, grounded=["vendor"],
                   retry=RetryPolicy(constrained=False))  # fmt: skip
    part = {"type": "object", "properties": {"key_point": {"type": "string"}}}
    task = TaskConfig(kind="summarize", schema=GROUNDED_SCHEMA, grounded=["key_point", "vendor"],
                      reduce=ReduceConfig(mode="prompt", part_schema=part))  # fmt: skip
    assert task.grounded == ("key_point", "vendor")  # a property of either schema will do


def test_a_chat_record_is_grounded_in_its_user_and_assistant_messages(tiny_schema):
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Acme Ltd owes 5."}]  # fmt: skip
    record = Document(Origin("c", "src", 1), messages=messages)
    task = TaskConfig(kind="extract", schema=tiny_schema)
    [prompt] = document_requests(Chunk(record, 0, 1, "", 0, 0), task)
    assert prompt.grounding_text == "Acme Ltd owes 5."
