"""Loading schemas from every source, and rejecting bad ones with messages that say where."""

import json
from typing import Literal

import pydantic
import pytest

from flashbeam.schemas import SchemaError, builtin_names, check_schema, load_schema


class Invoice(pydantic.BaseModel):
    vendor: str
    total: float | None = None
    status: Literal["paid", "open"]


def test_sources_dict_file_pydantic_and_builtin(tmp_path):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert load_schema(schema) == schema
    path = tmp_path / "s.json"
    path.write_text(json.dumps(schema))
    assert load_schema(path) == schema and load_schema(str(path)) == schema
    loaded = load_schema(Invoice)
    assert loaded["properties"]["status"]["enum"] == ["paid", "open"]
    assert set(builtin_names()) >= {"summary", "entities", "classification"}
    for name in ("summary", "entities", "classification"):
        assert load_schema(name)["title"] == name


def test_load_returns_a_copy():
    schema = {"type": "object"}
    load_schema(schema)["type"] = "array"
    assert schema == {"type": "object"}


@pytest.mark.parametrize(
    "schema, where, keyword",
    [
        ({"type": "object", "properties": {"age": {"type": "integr"}}}, "$.properties.age.type",
         "'type'"),
        ({"type": "string", "minLength": -1}, "$.minLength", "'minLength'"),
        ({"type": "object", "required": "name"}, "$.required", "'required'"),
        ({"items": [{"type": "string"}], "type": "array"}, "$.items", "'items'"),
    ],
)  # fmt: skip
def test_invalid_schema_names_keyword_and_path(schema, where, keyword):
    with pytest.raises(SchemaError) as e:
        load_schema(schema, where="jobs/x.yaml:task.schema")
    message = str(e.value)
    assert message.startswith("jobs/x.yaml:task.schema: invalid schema at ")
    assert where in message and keyword in message


def test_schema_keyword_selects_the_dialect():
    draft4 = {"$schema": "http://json-schema.org/draft-04/schema#", "type": "number",
              "minimum": 0, "exclusiveMinimum": True}  # fmt: skip
    load_schema(draft4)  # valid in draft 4
    with pytest.raises(SchemaError, match="exclusiveMinimum"):
        load_schema({k: v for k, v in draft4.items() if k != "$schema"})  # not in 2020-12
    with pytest.raises(SchemaError, match="dialect"):
        load_schema({"$schema": "https://example.com/my-dialect", "type": "object"})


def test_refs_resolve_locally_or_fail_with_path():
    ok = {"$defs": {"a": {"type": "string"}}, "properties": {"x": {"$ref": "#/$defs/a"}}}
    load_schema(ok)
    draft7 = {"$schema": "http://json-schema.org/draft-07/schema#",
              "definitions": {"a": {"type": "string"}}, "properties": {"x": {"$ref": "#/definitions/a"}}}  # fmt: skip # noqa: E501
    load_schema(draft7)
    by_id = {"$id": "https://example.com/s.json", "$defs": {"a": {"type": "string"}},
             "properties": {"x": {"$ref": "https://example.com/s.json#/$defs/a"}}}  # fmt: skip
    load_schema(by_id)
    with pytest.raises(
        SchemaError, match=r"\$ref '#/\$defs/b' at \$.properties.x does not resolve"
    ):
        load_schema({"$defs": {}, "properties": {"x": {"$ref": "#/$defs/b"}}})
    with pytest.raises(SchemaError, match="'https://example.com/s.json' .* never fetched"):
        load_schema({"properties": {"x": {"$ref": "https://example.com/s.json"}}})


def test_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"type": "object",\n "properties": }')
    with pytest.raises(SchemaError, match=r"bad.json:2:16: not valid JSON"):
        load_schema(bad)
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"type": "objekt"}')
    with pytest.raises(SchemaError, match=r"wrong.json: invalid schema at \$.type"):
        load_schema(wrong)
    with pytest.raises(SchemaError, match="neither a file nor a built-in schema"):
        load_schema("no-such-schema")


def test_non_schema_values_are_rejected():
    with pytest.raises(SchemaError, match="must be a JSON object"):
        check_schema([{"type": "object"}])
    with pytest.raises(SchemaError, match="expected a dict"):
        load_schema(42)
