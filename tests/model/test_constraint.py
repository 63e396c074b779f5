"""Constraint levels: each kind of schema the grammar engine refuses compiles at the expected level,
its relaxed grammar is a superset of the schema (it lets the valid output through, and for the
negative case an invalid one the validator then catches), and the compile bounds hold."""

import json
from pathlib import Path

import pytest

from flashbeam.model.checkpoint.loading import TINY_DIR
from flashbeam.model.grammar.compiler import GrammarCompiler, GrammarError
from flashbeam.schemas import SchemaValidator

KINDS = json.loads(
    (Path(__file__).parents[1] / "data" / "constraint" / "refusal_kinds.json").read_text()
)
# 330 alternatives of 30 properties: it compiles exact, but takes about a second to.
SLOW = {"type": "array", "items": {"anyOf": [
    {"type": "object", "properties": {f"k{j}_{i}": {"type": "integer"} for j in range(30)}}
    for i in range(330)
]}}  # fmt: skip


@pytest.fixture(scope="module")
def compiler() -> GrammarCompiler:
    return GrammarCompiler((TINY_DIR / "tokenizer.json").read_text(), eos_id=1)


def fmt(schema: dict, constraint: str | None = None) -> dict:
    spec = {"name": "t", "schema": schema}
    if constraint:
        spec["constraint"] = constraint
    return {"type": "json_schema", "json_schema": spec}


def grammar_accepts(compiled, text: str) -> bool:
    matcher = compiled.matcher.deep_copy()
    tokens = compiled.vocab.lltok.tokenize_str(text)
    return matcher.consume_tokens(tokens) and matcher.is_accepting()


@pytest.mark.parametrize("case", KINDS, ids=[k["kind"] for k in KINDS])
def test_each_refusal_kind_compiles_at_its_level_as_a_superset(compiler, case):
    compiled = compiler.compile(fmt(case["schema"]))
    assert compiled.level == case["level"]
    if case["relaxed"]:
        assert any(r.startswith(case["relaxed"]) for r in compiled.relaxed), compiled.relaxed
    else:
        assert compiled.relaxed == ()
    validator = SchemaValidator(case["schema"])
    assert grammar_accepts(compiled, case["valid"])
    assert validator.check(case["valid"])[1] == []
    if case["invalid"] is not None:  # the relaxed grammar lets it through; validation does not
        assert grammar_accepts(compiled, case["invalid"])
        assert any(case["error"] in e for e in validator.check(case["invalid"])[1])


RELAXED = [k for k in KINDS if k["level"] != "exact"]


@pytest.mark.parametrize("case", RELAXED, ids=[k["kind"] for k in RELAXED])
def test_exact_constraint_refuses_with_the_engines_reason(compiler, case):
    with pytest.raises(GrammarError, match="cannot be used for constrained decoding") as e:
        compiler.compile(fmt(case["schema"], "exact"))
    assert "Simplify the schema, or run unconstrained with validation and retries." in str(e.value)


def test_an_unsupported_pattern_is_dropped_and_the_rest_of_the_field_kept(compiler):
    schema = {"type": "object", "properties": {"s": {"type": "string", "pattern": "(?<!x)y",
                                                    "maxLength": 2}}}  # fmt: skip
    compiled = compiler.compile(fmt(schema))
    assert compiled.level == "relaxed"
    assert compiled.relaxed[0].startswith("$.properties.s: dropped 'pattern'")
    assert grammar_accepts(compiled, '{"s":"xy"}') and not grammar_accepts(compiled, '{"s":"xyz"}')


def test_a_subschema_no_fix_names_is_replaced_by_its_type(compiler):
    unsatisfiable = {"allOf": [{"type": "string"}, {"type": "integer"}]}
    schema = {"type": "object", "properties": {"s": unsatisfiable, "n": {"type": "integer"}},
              "required": ["s", "n"], "additionalProperties": False}  # fmt: skip
    compiled = compiler.compile(fmt(schema))
    assert compiled.level == "relaxed"
    assert [r.split(" (")[0] for r in compiled.relaxed] == ["$.properties.s: replaced by {}"]
    assert grammar_accepts(compiled, '{"s":true,"n":1}')
    assert not grammar_accepts(compiled, '{"s":true,"n":"x"}')  # the rest is still enforced


def test_compilation_past_its_time_bound_falls_back_to_plain_json(compiler):
    bounded = GrammarCompiler((TINY_DIR / "tokenizer.json").read_text(), 1, compile_budget_s=0.05)
    compiled = bounded.compile(fmt(SLOW))
    assert compiled.level == "none"
    assert "exceeded the 0.05 s bound" in compiled.plan.reason
    assert grammar_accepts(compiled, '"any JSON at all"')


def test_schemas_over_the_size_bound_get_plain_json(compiler):
    small = GrammarCompiler((TINY_DIR / "tokenizer.json").read_text(), 1, max_schema_bytes=200)
    compiled = small.compile(fmt({"type": "object", "description": "x" * 300}))
    assert compiled.level == "none" and "over the 200-byte bound" in compiled.plan.reason


def test_refs_are_resolved_for_the_grammar_and_remote_ones_refused(compiler):
    anchored = {"$defs": {"c": {"$anchor": "code", "enum": ["DE"]}}, "type": "object",
                "properties": {"c": {"$ref": "#code"}}, "required": ["c"]}  # fmt: skip
    compiled = compiler.compile(fmt(anchored))
    assert compiled.level == "exact"
    assert grammar_accepts(compiled, '{"c":"DE"}') and not grammar_accepts(compiled, '{"c":"FR"}')
    with pytest.raises(GrammarError, match="'https://example.com/s.json' at .* never fetched"):
        compiler.compile(fmt({"properties": {"x": {"$ref": "https://example.com/s.json"}}}))


def test_a_bad_constraint_value_is_refused(compiler):
    with pytest.raises(GrammarError, match="constraint 'strict' is not one of auto, exact"):
        compiler.compile(fmt({"type": "object"}, "strict"))
