"""Validation with format checking on, into readable messages."""

import pytest

from flashbeam.schemas import SchemaValidator, parse_json_output

SCHEMA = {
    "type": "object",
    "properties": {
        "day": {"type": "string", "format": "date"},
        "at": {"type": "string", "format": "date-time"},
        "mail": {"type": "string", "format": "email"},
        "link": {"type": "string", "format": "uri"},
        "id": {"type": "string", "format": "uuid"},
        "ip": {"type": "string", "format": "ipv4"},
        "age": {"type": "integer", "minimum": 0},
        "items": {"type": "array", "items": {"type": "object", "required": ["sku"]}},
    },
    "required": ["day"],
}
GOOD = {
    "day": "2024-02-29",
    "at": "2024-02-29T10:00:00Z",
    "mail": "a@example.com",
    "link": "https://example.com/x",
    "id": "12345678-1234-1234-1234-123456789abc",
    "ip": "10.0.0.1",
    "age": 3,
    "items": [{"sku": "x"}],
}


@pytest.mark.parametrize(
    "field, bad",
    [("day", "2023-02-29"), ("at", "2024-02-29 10:00"), ("mail", "nobody"),
     ("link", "not a uri"), ("id", "1234"), ("ip", "300.1.1.1")],
)  # fmt: skip
def test_formats_are_checked(field, bad):
    validator = SchemaValidator(SCHEMA)
    assert validator.errors(GOOD) == []
    errors = validator.errors({**GOOD, field: bad})
    assert len(errors) == 1 and errors[0].startswith(f"$.{field}: ") and bad in errors[0]


def test_messages_name_paths_shallowest_first():
    errors = SchemaValidator(SCHEMA).errors({"age": -1, "items": [{"sku": "a"}, {}]})
    assert errors == [
        "$: 'day' is a required property",
        "$.age: -1 is less than the minimum of 0",
        "$.items[1]: 'sku' is a required property",
    ]


def test_check_parses_text_and_reports_json_errors():
    validator = SchemaValidator(SCHEMA)
    assert validator.check('  {"day": "2024-01-01"}\n') == ({"day": "2024-01-01"}, [])
    value, errors = validator.check('{"day": "2024-01-01", "age": ')
    assert value is None and errors[0].startswith("output is not valid JSON")
    assert validator.check("")[1] == ["output is empty, expected JSON"]


def test_fenced_json_is_accepted_for_unconstrained_outputs():
    assert parse_json_output('Here:\n```json\n{"a": 1}\n```\n') == {"a": 1}
    with pytest.raises(ValueError):
        parse_json_output("no json here")


def test_time_format_is_rfc3339():
    from flashbeam.schemas.validate import SchemaValidator

    v = SchemaValidator({"type": "string", "format": "time"})
    assert v.errors("05:05:23+07:03") == []
    assert v.errors("00:00:00Z") == []
    assert v.errors("25:00") != []
