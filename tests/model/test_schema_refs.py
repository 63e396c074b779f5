"""$ref bundling: every ref becomes a pointer into the one schema; files next to it are read;
remote refs are refused by name, never fetched."""

import json

import jsonschema
import pytest

from flashbeam.model.grammar.refs import RefError, bundle_refs, json_path

STRING = {"type": "string", "maxLength": 3}


def refs_in(schema) -> list[str]:
    found = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                found.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return found


def resolve(schema, pointer: str):
    node = schema
    for part in filter(None, pointer[1:].split("/")):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


@pytest.mark.parametrize(
    "schema",
    [
        # an $id-named resource, by its absolute $id and relative to the root's
        {"$id": "https://example.com/root.json", "$defs": {"s": {"$id": "s.json", **STRING}},
         "properties": {"x": {"$ref": "s.json"}, "y": {"$ref": "https://example.com/s.json"}}},
        # an $anchor, and a pointer into a nested resource resolved against its own $id
        {"$id": "https://example.com/root.json",
         "$defs": {"a": {"$anchor": "short", **STRING},
                   "sub": {"$id": "sub/", "$defs": {"s": STRING},
                           "properties": {"q": {"$ref": "#/$defs/s"}}}},
         "properties": {"x": {"$ref": "#short"}, "y": {"$ref": "sub/"}}},
        # a resource under a keyword this draft does not know (the engine's "not present in a
        # registry"), and a pointer to a non-$defs location
        {"dependencies": {"q": {"$id": "https://example.com/q.json", **STRING}},
         "properties": {"x": {"$ref": "https://example.com/q.json"},
                        "y": {"$ref": "#/properties/x"}}},
        # draft-07 "#name" ids and draft-04 `id`
        {"$schema": "http://json-schema.org/draft-07/schema#",
         "definitions": {"a": {"$id": "#short", **STRING}},
         "properties": {"x": {"$ref": "#short"}}},
        {"$schema": "http://json-schema.org/draft-04/schema#", "id": "https://example.com/r.json",
         "definitions": {"a": {"id": "a.json", **STRING}},
         "properties": {"x": {"$ref": "a.json"}}},
    ],
)  # fmt: skip
def test_internal_refs_become_root_pointers_that_validate_the_same(schema):
    bundled = bundle_refs(schema)
    refs = refs_in(bundled)
    assert refs and all(r == "#" or r.startswith(("#/$defs/", "#/definitions/")) for r in refs)
    for ref in refs:
        target = resolve(bundled, ref)
        assert "$id" not in target and "id" not in target and "$anchor" not in target
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    for value, ok in (({"x": "abc"}, True), ({"x": "abcd"}, False), ({"x": 5}, False)):
        assert cls(bundled).is_valid(value) is ok, value


def test_plain_pointer_refs_come_back_unchanged():
    schema = {"$defs": {"a": STRING},
              "properties": {"x": {"$ref": "#/$defs/a"}, "y": {"$ref": "#"}}}  # fmt: skip
    assert bundle_refs(schema) is schema


def test_refs_to_files_next_to_the_schema_are_bundled(tmp_path):
    (tmp_path / "common.json").write_text(json.dumps(
        {"$defs": {"name": STRING}, "type": "object", "properties": {"n": {"$ref": "#/$defs/name"}}}
    ))  # fmt: skip
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "age.json").write_text(
        json.dumps({"type": "integer", "not": {"$ref": "../common.json#/$defs/name"}})
    )
    schema = {"$id": "https://example.com/schemas/main.json", "type": "object",
              "properties": {"a": {"$ref": "common.json#/$defs/name"},
                             "b": {"$ref": "common.json"},
                             "c": {"$ref": "sub/age.json"}}}  # fmt: skip
    bundled = bundle_refs(schema, source=tmp_path / "main.json")
    assert all(r.startswith("#/$defs/") for r in refs_in(bundled))
    validator = jsonschema.Draft202012Validator(bundled)
    assert validator.is_valid({"a": "abc", "b": {"n": "xy"}, "c": 4})
    assert not validator.is_valid({"b": {"n": "long"}})
    assert not validator.is_valid({"a": "abcd"})


@pytest.mark.parametrize(
    "ref, source, message",
    [
        ("https://example.com/other.json", None, "remote refs are never fetched"),
        ("http://json-schema.org/draft-07/schema#", "dir", "remote refs are never fetched"),
        ("other.json", None, "need the schema in a .json file"),
        ("missing.json#/$defs/a", "dir", "names no file next to the schema"),
        ("#/$defs/missing", None, "does not resolve"),
        ("#nowhere", None, "no such $anchor"),
    ],
)
def test_unresolvable_refs_raise_naming_the_ref_and_where(tmp_path, ref, source, message):
    schema = {"$defs": {}, "properties": {"x": {"$ref": ref}}}
    with pytest.raises(RefError) as e:
        bundle_refs(schema, source=tmp_path / "s.json" if source else None, where="job.yaml")
    assert str(e.value).startswith(f"job.yaml: $ref {ref!r} at $.properties.x ")
    assert message in str(e.value)


def test_json_path_names_parts_readably():
    assert json_path(("properties", "a b", "anyOf", 0, "$defs")) == (
        '$.properties["a b"].anyOf[0]["$defs"]'
    )
