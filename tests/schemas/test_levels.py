"""Relaxed grammars end to end: for each kind of schema the grammar engine refuses, an output the
relaxed grammar lets through but the full schema does not is caught by validation and retried;
when every attempt fails, the error row says why. Also: exact refusals, bounded regexes."""

import json
import time
from pathlib import Path

import pytest

from flashbeam.model.checkpoint.loading import TINY_DIR
from flashbeam.model.engine.request import Request, Result
from flashbeam.model.grammar.compiler import GrammarCompiler, GrammarError
from flashbeam.pipelines.config import TaskConfig
from flashbeam.pipelines.records import Origin, PromptRequest
from flashbeam.pipelines.reduce import finish_outcome
from flashbeam.pipelines.validate import constraint_report, run_prompts
from flashbeam.schemas import RetryPolicy, SchemaError, SchemaValidator, generate_validated
from flashbeam.schemas.levels import constraint_summary, schema_constraint

KINDS = json.loads(
    (Path(__file__).parents[1] / "data" / "constraint" / "refusal_kinds.json").read_text()
)
RELAXED = [k for k in KINDS if k["level"] == "relaxed"]


class GrammarReplay:
    """Answers each request from a script, with only outputs its compiled grammar accepts: what
    a model decoding under that grammar could have written. Results carry the grammar's level."""

    def __init__(self, compiler: GrammarCompiler, script: dict[str, list[str]]):
        self.compiler = compiler
        self.script = script
        self.calls: list[list[Request]] = []

    def generate(self, requests: list[Request]) -> list[Result]:
        self.calls.append(list(requests))
        results = []
        for r in requests:
            try:
                compiled = self.compiler.compile(r.response_format)
            except GrammarError as e:
                results.append(Result(r.id, finish_reason="error", error=str(e)))
                continue
            attempt = sum(q.id == r.id for call in self.calls for q in call) - 1
            text = self.script[r.id][attempt]
            matcher = compiled.matcher.deep_copy()
            assert matcher.consume_tokens(compiled.vocab.lltok.tokenize_str(text)), text
            assert matcher.is_accepting(), text
            results.append(Result(r.id, text=text, constraint=compiled.level))
        return results


@pytest.fixture(scope="module")
def compiler() -> GrammarCompiler:
    return GrammarCompiler((TINY_DIR / "tokenizer.json").read_text(), eos_id=1)


@pytest.mark.parametrize("case", RELAXED, ids=[k["kind"] for k in RELAXED])
def test_validation_and_a_retry_catch_what_the_relaxed_grammar_lets_through(compiler, case):
    engine = GrammarReplay(compiler, {"r": [case["invalid"], case["valid"]]})
    policy = RetryPolicy(feedback=True)
    request = Request(id="r", messages=[{"role": "user", "content": "extract"}], seed=3)
    (out,) = generate_validated(engine, [request], case["schema"], policy)
    assert (out.valid, out.attempts, out.constraint) == (True, 2, "relaxed")
    assert out.value == json.loads(case["valid"])
    retry = engine.calls[1][0]
    assert retry.seed != 3 and retry.temperature > 0
    feedback = retry.messages[-1]["content"]  # the validator's reason goes back to the model
    assert case["error"] in feedback and retry.messages[-2]["content"] == case["invalid"]


@pytest.mark.parametrize("case", RELAXED, ids=[k["kind"] for k in RELAXED])
def test_when_every_attempt_fails_the_error_row_gives_the_validators_reason(compiler, case):
    engine = GrammarReplay(compiler, {"d1:0": [case["invalid"]] * 2})
    task = TaskConfig(schema=case["schema"], retry=RetryPolicy(max_attempts=2))
    prompt = PromptRequest(
        item=("d1", 0), origin=Origin("d1", "in.jsonl", 1), shared_chars=0, input_text="doc",
        request=Request(id="d1:0", messages=[{"role": "user", "content": "doc"}]),
    )  # fmt: skip
    (outcome,) = run_prompts(engine, [prompt], task, "tiny")
    assert outcome.constraint == "relaxed"
    row = finish_outcome(outcome)
    assert row.stage == "validate" and row.output == case["invalid"]
    assert row.reason.startswith("output invalid after 2 attempt(s) (constraint relaxed): ")
    assert case["error"] in row.reason
    assert row.stats.constraint == "relaxed"


def test_exact_cases_validate_on_the_first_attempt(compiler):
    (case,) = [k for k in KINDS if k["level"] == "exact"]
    engine = GrammarReplay(compiler, {"r": [case["valid"]]})
    (out,) = generate_validated(engine, [Request(id="r")], case["schema"])
    assert (out.valid, out.attempts, out.constraint) == (True, 1, "exact")


def test_constraint_exact_is_refused_by_the_engine_with_the_grammar_engines_reason(compiler):
    case = RELAXED[0]
    engine = GrammarReplay(compiler, {"r": [case["valid"]]})
    (out,) = generate_validated(engine, [Request(id="r")], case["schema"], constraint="exact")
    assert not out.valid and out.attempts == 1  # an engine error is not retried
    assert "cannot be used for constrained decoding: Unimplemented keys" in out.errors[0]


def test_task_constraint_exact_refuses_up_front_and_auto_reports_the_relaxations():
    case = next(k for k in KINDS if k["kind"] == "not")
    with pytest.raises(ValueError, match="task.constraint is exact, but task.schema is not: "
                       'schema "output" cannot be used for constrained decoding'):  # fmt: skip
        TaskConfig(schema=case["schema"], constraint="exact")
    report = constraint_report(TaskConfig(schema=case["schema"]))
    assert report["task"]["level"] == "relaxed"
    assert report["task"]["relaxed"][0]["path"] == "$.properties.code"
    assert report["task"]["relaxed"][0]["change"] == "dropped 'not'"
    assert TaskConfig(schema={"type": "object"}, constraint="exact").constraint == "exact"


def test_the_levels_without_a_vocabulary_agree_with_the_engines_compiler(compiler):
    for case in KINDS:
        fmt = {"type": "json_schema", "json_schema": {"name": "t", "schema": case["schema"]}}
        plan = schema_constraint(case["schema"])
        assert plan.level == compiler.compile(fmt).level, case["kind"]
        assert constraint_summary(plan)["level"] == plan.level


def test_a_pathological_pattern_makes_an_invalid_output_not_a_hang():
    schema = {"type": "object", "properties": {"s": {"type": "string", "pattern": "^(a|aa)+$"}},
              "patternProperties": {"^(b|bb)+$": {"type": "integer"}}}  # fmt: skip
    validator = SchemaValidator(schema)
    started = time.monotonic()
    errors = validator.errors({"s": "a" * 60 + "!", "b" * 60 + "!": 1})
    assert time.monotonic() - started < 30  # backtracking would take hours
    assert len(errors) == 2 and all("did not finish matching" in e for e in errors)
    assert validator.errors({"s": "aaa", "bb": 1}) == []
    assert validator.errors({"s": "ab"}) == ["$.s: 'ab' does not match '^(a|aa)+$'"]


def test_patterns_outputs_cannot_be_checked_with_are_refused_when_loading():
    with pytest.raises(SchemaError, match=r"pattern '\(unclosed' at \$.properties.s is not a "):
        SchemaValidator({"properties": {"s": {"type": "string", "pattern": "(unclosed"}}})


def test_unicode_property_patterns_validate():
    validator = SchemaValidator({"type": "string", "pattern": r"^\p{Lu}\p{Ll}+$"})
    assert validator.errors("Émile") == [] and validator.errors("émile") != []
