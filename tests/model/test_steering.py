"""Closing-plan helpers: pattern samples and the JSON depth scanner."""

import re

import pytest

from flashbeam.model.grammar.closing import JsonDepth, sample_strings, shortest_match
from flashbeam.model.grammar.compiler import subschemas


@pytest.mark.parametrize(
    "pattern",
    ["response", r"^\d{5}$", r"\d+\.\d+\.\d+-?.*", r"^[A-Z]{2}-[0-9]+$", "[^abc]{2}(x|yy)",
     r"^iglu:[a-zA-Z0-9-_.]+/[a-zA-Z0-9-_]+/[a-zA-Z0-9-_]+/[0-9]+-[0-9]+-[0-9]+$",
     r"\w\s\D", "(?:ab)+c?", "a{3,}"],
)  # fmt: skip
def test_shortest_match_matches(pattern):
    sample = shortest_match(pattern)
    assert sample is not None and re.search(pattern, sample)
    assert len(sample) <= 20


def test_unreadable_patterns_give_no_sample():
    assert shortest_match("(a)\\1") is None  # back-reference
    assert shortest_match("(") is None


def test_samples_come_from_patterns_formats_and_pattern_properties():
    schema = {
        "properties": {"zip": {"pattern": "^[0-9]{5}$"}, "day": {"format": "date"}},
        "patternProperties": {"^x-[a-z]+$": {"type": "string"}},
    }
    assert set(sample_strings(schema, subschemas)) == {b"00000", b"2024-01-01", b"x-a"}
    assert sample_strings({"pattern": 'say "hi"'}, subschemas) == (b'say \\"hi\\"',)


def test_depth_scanner_tracks_strings_escapes_and_containers():
    scan = JsonDepth().feed(b'{"a": ["x\\"y')
    assert scan.depth == 3 and scan.in_string and bytes(scan.text) == b'x\\"y'
    assert scan.depth_after(b'"') == 2 and scan.depth_after(b"]") == 3
    scan.feed(b'"]')
    assert scan.depth == 1 and not scan.in_string
    assert scan.depth_after(b"}") == 0 and scan.depth_after(b"[") == 2
