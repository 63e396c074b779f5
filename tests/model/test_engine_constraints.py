"""Engine.generate with a json_schema response_format the grammar engine cannot enforce whole:
it runs relaxed (the result says so) instead of failing, unless exact is asked for."""

import json

import pytest

from flashbeam.model import Engine, Request, tiny_config
from flashbeam.model.checkpoint.random_init import write_random_checkpoint

SCHEMA = {
    "type": "object",
    "properties": {"code": {"type": "string", "enum": ["a", "b"], "not": {"const": "a"}}},
    "required": ["code"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    path = write_random_checkpoint(tmp_path_factory.mktemp("tiny"), tiny_config("tiny"), seed=0)
    return Engine.load(path)


def request(id: str, constraint: str | None = None) -> Request:
    spec = {"name": "code", "schema": SCHEMA}
    if constraint:
        spec["constraint"] = constraint
    fmt = {"type": "json_schema", "json_schema": spec}
    return Request(id=id, prompt_token_ids=[5, 6, 7], max_tokens=24, response_format=fmt)


def test_a_schema_the_grammar_cannot_enforce_whole_runs_relaxed_unless_exact_is_asked(engine):
    relaxed, exact = engine.generate([request("r"), request("x", "exact")])
    assert relaxed.finish_reason == "stop" and relaxed.constraint == "relaxed"
    assert json.loads(relaxed.text)["code"] in ("a", "b")  # the grammar holds what it can
    assert exact.finish_reason == "error" and exact.constraint is None
    assert "cannot be used for constrained decoding: Unimplemented keys" in exact.error
    plain = engine.generate([Request(id="p", prompt_token_ids=[5, 6], max_tokens=2)])[0]
    assert plain.constraint is None
