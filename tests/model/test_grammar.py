"""Grammar-constrained decoding: compile, batch masks, thinking gating, vocab padding, steering.

A walk samples from random logits through the grammar's masks (no model): every output it
produces must parse and validate, which is what the grammar promises the engine.
"""

import json
from pathlib import Path

import llguidance
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from flashbeam.model.grammar.compiler import (
    GrammarCompiler,
    GrammarError,
    GrammarState,
    allocate_bitmask,
    apply_bitmask_,
    fill_bitmasks,
)
from flashbeam.schemas import SchemaValidator, builtin_names, load_schema

SPECIALS = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<think>", "</think>"]
EOS = 1
CORPUS = [
    '{"name": "Alice", "age": 30, "tags": ["a", "b"], "ok": true, "v": null}',
    '{"id": 7, "items": [{"sku": "X-1", "qty": 2}], "total": 12.5, "date": "2024-05-01"}',
    "The quick brown fox jumps over the lazy dog. Invoices list a vendor and a total.",
] * 20
SCHEMA_SAMPLE = Path(__file__).parents[1] / "data" / "jsonschemabench" / "sample.jsonl"


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=500,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        max_token_length=16,
    )
    tok.train_from_iterator(CORPUS, trainer)
    return tok


@pytest.fixture(scope="module")
def compiler(tokenizer) -> GrammarCompiler:
    return GrammarCompiler(tokenizer.to_str(), EOS)


def fmt(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "t", "schema": schema}}


def walk(state: GrammarState, seed: int, steps: int = 400, bias: dict[int, float] | None = None):
    """Sample through the masks from random logits; returns the committed tokens."""
    width = state.vocab.n_vocab
    bitmask = allocate_bitmask(1, width)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        if state.is_finished:
            break
        fill_bitmasks([state], bitmask)
        logits = torch.randn(1, width, generator=gen) * 3
        for token, value in (bias or {}).items():
            logits[0, token] += value
        apply_bitmask_(logits, bitmask)
        token = int(torch.multinomial(torch.softmax(logits, -1), 1, generator=gen))
        out.append(state.advance(token))
        assert state.error is None
    return out


def text_of(tokenizer: Tokenizer, tokens: list[int]) -> str:
    return tokenizer.decode([t for t in tokens if t != EOS], skip_special_tokens=False)


FEATURES = {
    "types": {
        "type": "object",
        "properties": {
            "s": {"type": "string", "maxLength": 8},
            "i": {"type": "integer", "minimum": -50, "maximum": 50},
            "n": {"type": "number", "minimum": 0, "maximum": 10},
            "b": {"type": "boolean"},
            "z": {"type": "null"},
        },
        "required": ["s", "i", "n", "b", "z"],
        "additionalProperties": False,
    },
    "enum_const": {
        "type": "object",
        "properties": {
            "color": {"enum": ["red", "green", "blue"]},
            "kind": {"const": "invoice"},
            "level": {"enum": [1, 2, 3, None]},
        },
        "required": ["color", "kind", "level"],
        "additionalProperties": False,
    },
    "required_optional": {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "string", "maxLength": 5}},
        "required": ["b"],
        "additionalProperties": False,
    },
    "nested": {
        "type": "object",
        "properties": {
            "user": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 10},
                    "emails": {"type": "array", "items": {"type": "string", "maxLength": 12}},
                },
                "required": ["name", "emails"],
                "additionalProperties": False,
            },
            "matrix": {
                "type": "array",
                "items": {"type": "array", "items": {"type": "integer"}, "maxItems": 3},
                "maxItems": 3,
            },
        },
        "required": ["user", "matrix"],
        "additionalProperties": False,
    },
    "lengths_items": {
        "type": "object",
        "properties": {
            "code": {"type": "string", "minLength": 3, "maxLength": 5},
            "tags": {
                "type": "array",
                "items": {"type": "string", "maxLength": 4},
                "minItems": 2,
                "maxItems": 3,
            },
        },
        "required": ["code", "tags"],
        "additionalProperties": False,
    },
    "patterns": {
        "type": "object",
        "properties": {
            "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
            "sku": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]+$"},
        },
        "required": ["zip", "sku"],
        "additionalProperties": False,
    },
    "numeric_bounds": {
        "type": "object",
        "properties": {
            "pct": {"type": "number", "minimum": 0, "maximum": 1},
            "pos": {"type": "integer", "exclusiveMinimum": 0, "maximum": 999},
            "neg": {"type": "integer", "maximum": -1, "minimum": -99},
        },
        "required": ["pct", "pos", "neg"],
        "additionalProperties": False,
    },
    "ref_defs": {
        "type": "object",
        "properties": {"home": {"$ref": "#/$defs/addr"}, "work": {"$ref": "#/$defs/addr"}},
        "required": ["home", "work"],
        "additionalProperties": False,
        "$defs": {
            "addr": {
                "type": "object",
                "properties": {"city": {"type": "string", "maxLength": 8}},
                "required": ["city"],
                "additionalProperties": False,
            }
        },
    },
    "any_of": {
        "type": "object",
        "properties": {
            "id": {"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 6}]},
            "maybe": {"anyOf": [{"type": "boolean"}, {"type": "null"}]},
        },
        "required": ["id", "maybe"],
        "additionalProperties": False,
    },
    "formats": {
        "type": "object",
        "properties": {
            "day": {"type": "string", "format": "date"},
            "at": {"type": "string", "format": "date-time"},
            "id": {"type": "string", "format": "uuid"},
        },
        "required": ["day", "at", "id"],
        "additionalProperties": False,
    },
}


@pytest.mark.parametrize("name", sorted(FEATURES))
def test_walks_through_each_feature_class_validate(compiler, tokenizer, name):
    schema = FEATURES[name]
    compiled = compiler.compile(fmt(schema))
    validator = SchemaValidator(schema)
    for seed in range(4):
        state = GrammarState(compiled, max_tokens=compiled.min_tokens + 60)
        tokens = walk(state, seed)
        text = text_of(tokenizer, tokens)
        assert state.is_finished, text
        value, errors = validator.check(text)
        assert errors == [], (text, errors)
        assert len(tokens) <= compiled.min_tokens + 60


@pytest.mark.parametrize("name", builtin_names())
def test_builtin_schemas_constrain(compiler, tokenizer, name):
    schema = load_schema(name)
    compiled = compiler.compile(fmt(schema))
    state = GrammarState(compiled, max_tokens=compiled.min_tokens + 40)
    tokens = walk(state, 0)
    assert state.is_finished
    assert SchemaValidator(schema).check(text_of(tokenizer, tokens))[1] == []


def test_json_object_mode_gives_an_object(compiler, tokenizer):
    compiled = compiler.compile({"type": "json_object"})
    for seed in range(3):
        state = GrammarState(compiled, max_tokens=80)
        tokens = walk(state, seed)
        assert state.is_finished
        assert isinstance(json.loads(text_of(tokenizer, tokens)), dict)


def test_compile_is_cached_by_canonical_schema(compiler):
    a = compiler.compile(fmt({"type": "object", "properties": {"x": {"type": "integer"}}}))
    b = compiler.compile(
        {"type": "json_schema", "json_schema": {"schema": {"properties": {"x": {"type": "integer"}},
                                                           "type": "object"}, "name": "other"}}
    )  # fmt: skip
    assert a is b


def test_compile_cache_keeps_only_the_most_recently_used_grammars(tokenizer):
    # A job whose requests each carry their own schema (grounded fields) must not grow it.
    compiler = GrammarCompiler(tokenizer.to_str(), EOS, cache_size=2)
    schemas = [fmt({"type": "string", "enum": [f"v{i}"]}) for i in range(3)]
    first, second = compiler.compile(schemas[0]), compiler.compile(schemas[1])
    assert compiler.compile(schemas[0]) is first  # used again: now the most recent
    compiler.compile(schemas[2])  # evicts schemas[1], the least recently used
    assert compiler.compile(schemas[0]) is first
    assert compiler.compile(schemas[1]) is not second


@pytest.mark.parametrize(
    "schema, feature",
    [
        ({"type": "object", "if": {"required": ["a"]}, "then": {"required": ["b"]}}, "if"),
        ({"type": "string", "pattern": "(?<=a)b"}, "look-around"),
        ({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}, "/$defs/missing"),
    ],
)
def test_exact_constraint_refuses_before_generation_naming_the_feature(compiler, schema, feature):
    exact = {"type": "json_schema", "json_schema": {"name": "t", "schema": schema,
                                                    "constraint": "exact"}}  # fmt: skip
    with pytest.raises(GrammarError) as e:
        compiler.compile(exact)
    assert feature in str(e.value)
    if "$ref" not in json.dumps(schema):  # without exact, the same schema compiles relaxed
        assert compiler.compile(fmt(schema)).level == "relaxed"
        assert "cannot be used for constrained decoding" in str(e.value)


def test_bad_response_formats_raise(compiler):
    with pytest.raises(GrammarError, match="needs a 'schema'"):
        compiler.compile({"type": "json_schema", "json_schema": {"name": "x"}})
    with pytest.raises(GrammarError, match="not supported"):
        compiler.compile({"type": "yaml"})


def test_unsupported_keywords_are_dropped_into_a_relaxed_grammar(compiler):
    compiled = compiler.compile(fmt({"type": "object", "if": {}, "then": {}}))
    assert compiled.level == "relaxed" and compiled.min_tokens > 0
    assert [r.split(" (")[0] for r in compiled.relaxed] == ["$: dropped 'if'", "$: dropped 'then'"]


def test_unknown_format_is_an_annotation(compiler, tokenizer):
    compiled = compiler.compile(fmt({"type": "string", "format": "x-custom", "maxLength": 4}))
    assert any("x-custom" in w for w in compiled.warnings)
    state = GrammarState(compiled, max_tokens=30)
    assert isinstance(json.loads(text_of(tokenizer, walk(state, 0))), str)


def test_one_of_is_coerced_and_warned(compiler):
    schema = {"oneOf": [{"type": "integer"}, {"type": "string"}]}
    assert any("oneOf" in w for w in compiler.compile(fmt(schema)).warnings)


def test_batched_masks_match_single_masks_and_none_rows_allow_all(compiler, tokenizer):
    schemas = [FEATURES["types"], FEATURES["patterns"], FEATURES["any_of"]]
    states = [GrammarState(compiler.compile(fmt(s))) for s in schemas]
    prefixes = ['{"s": "ab', '{"zip": "12', '{"id": ']
    for state, prefix in zip(states, prefixes):
        for token in llguidance.LLTokenizer(tokenizer.to_str()).tokenize_str(prefix):
            state.advance(token)
    batch = [states[0], None, states[1], states[2]]
    bitmask = allocate_bitmask(len(batch), compiler.vocab.n_vocab)
    fill_bitmasks(batch, bitmask)
    for row, state in zip(bitmask, batch):
        if state is None:
            assert bool((row == -1).all())
        else:
            single = torch.frombuffer(bytearray(state.matcher.compute_bitmask()), dtype=torch.int32)
            assert torch.equal(row, single)


def test_vocab_padding_is_never_allowed(tokenizer):
    n = tokenizer.get_vocab_size()
    compiler = GrammarCompiler(tokenizer.to_str(), EOS, vocab_size=n + 45)
    for thinking in (False, True):
        state = GrammarState(compiler.compile({"type": "json_object"}), thinking=thinking)
        bitmask = allocate_bitmask(1, n + 45)
        assert bitmask.shape == (1, (n + 45 + 31) // 32)
        fill_bitmasks([state], bitmask)
        logits = torch.zeros(1, bitmask.shape[1] * 32 + 7)  # wider than the mask as well
        apply_bitmask_(logits, bitmask)
        assert torch.isinf(logits[0, n:]).all()
        assert torch.isfinite(logits[0, :n]).any()


def test_thinking_is_free_until_think_end_then_json(compiler, tokenizer):
    think_end = tokenizer.token_to_id("</think>")
    state = GrammarState(compiler.compile(fmt(FEATURES["types"])), thinking=True)
    n = tokenizer.get_vocab_size()
    bitmask = allocate_bitmask(1, n)
    reasoning = tokenizer.encode("The quick brown fox").ids
    for token in reasoning:
        fill_bitmasks([state], bitmask)
        logits = torch.zeros(1, n)
        apply_bitmask_(logits, bitmask)
        allowed = torch.isfinite(logits[0])
        assert allowed[token] and allowed[think_end] and not allowed[EOS]
        assert state.advance(token) == token
    state.advance(think_end)
    fill_bitmasks([state], bitmask)
    logits = torch.zeros(1, n)
    apply_bitmask_(logits, bitmask)
    allowed = {
        tokenizer.decode([t]) for t in torch.isfinite(logits[0]).nonzero().flatten().tolist()
    }
    assert allowed and all(t.startswith("{") for t in allowed)
    tokens = walk(state, 1, steps=200)
    assert state.is_finished
    assert SchemaValidator(FEATURES["types"]).check(text_of(tokenizer, tokens))[1] == []


def test_verbose_thinker_is_steered_to_close_within_budget(compiler, tokenizer):
    compiled = compiler.compile(fmt(FEATURES["nested"]))
    think_end = tokenizer.token_to_id("</think>")
    budget = compiled.min_tokens + 30
    state = GrammarState(compiled, thinking=True, max_tokens=budget)
    tokens = walk(state, 3, steps=budget, bias={think_end: -1e4})
    assert state.is_finished and len(tokens) <= budget
    answer = tokens[tokens.index(think_end) + 1 :]
    assert SchemaValidator(FEATURES["nested"]).check(text_of(tokenizer, answer))[1] == []


def closer_ids(tokenizer: Tokenizer) -> dict[int, float]:
    """A verbose model: it avoids everything that ends a string, array or object."""
    vocab = tokenizer.get_vocab()
    decoded = {i: tokenizer.decode([i]) for i in vocab.values()}
    return {i: -8.0 for i, s in decoded.items() if any(c in s for c in '"]}')} | {EOS: -8.0}


@pytest.mark.parametrize("name", ["nested", "lengths_items", "any_of", "types"])
def test_budget_steering_ends_verbose_outputs_complete_and_valid(compiler, tokenizer, name):
    compiled = compiler.compile(fmt(FEATURES[name]))
    validator = SchemaValidator(FEATURES[name])
    bias = closer_ids(tokenizer)
    for budget in (compiled.min_tokens, compiled.min_tokens + 5, compiled.min_tokens + 40, 150):
        for seed in range(3):
            state = GrammarState(compiled, max_tokens=budget)
            tokens = walk(state, seed, steps=budget, bias=bias)
            assert state.is_finished, (budget, text_of(tokenizer, tokens))
            assert len(tokens) <= budget
            assert validator.check(text_of(tokenizer, tokens))[1] == []


def test_without_a_budget_a_verbose_model_runs_out(compiler, tokenizer):
    """The control for the steering test: the same model, unsteered, ends truncated."""
    compiled = compiler.compile(fmt(FEATURES["nested"]))
    state = GrammarState(compiled)  # no max_tokens: no steering
    walk(state, 0, steps=compiled.min_tokens + 5, bias=closer_ids(tokenizer))
    assert not state.is_finished


def test_rejected_token_sets_error(compiler, tokenizer):
    state = GrammarState(compiler.compile(fmt(FEATURES["types"])))
    state.advance(tokenizer.token_to_id("]"))
    assert state.error and not state.is_finished


def test_thinking_needs_a_think_end_token():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=SPECIALS[:2],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )  # fmt: skip
    tok.train_from_iterator(CORPUS, trainer)
    compiled = GrammarCompiler(tok, EOS).compile({"type": "json_object"})
    with pytest.raises(GrammarError, match="</think>"):
        GrammarState(compiled, thinking=True)


def test_real_world_schemas_all_compile_and_mostly_exactly(compiler):
    levels = [
        compiler.compile(fmt(json.loads(line)["schema"])).level
        for line in SCHEMA_SAMPLE.read_text().splitlines()
    ]
    assert len(levels) >= 40 and levels.count("exact") / len(levels) >= 0.9
