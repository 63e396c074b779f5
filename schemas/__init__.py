"""JSON Schema in; validation, retries and Arrow types out (the grammar lives in model.grammar)."""

from flashbeam.schemas.arrow import (
    ArrowConversionError,
    schema_to_arrow,
    to_arrow_row,
    to_arrow_rows,
)
from flashbeam.schemas.grounding import ground_schema
from flashbeam.schemas.loading import (
    SchemaError,
    builtin_names,
    check_schema,
    load_schema,
    response_format_for,
)
from flashbeam.schemas.retry import RetryPolicy, ValidatedResult, generate_validated
from flashbeam.schemas.validate import SchemaValidator, parse_json_output

__all__ = [
    "ArrowConversionError",
    "RetryPolicy",
    "SchemaError",
    "SchemaValidator",
    "ValidatedResult",
    "builtin_names",
    "check_schema",
    "generate_validated",
    "ground_schema",
    "load_schema",
    "parse_json_output",
    "response_format_for",
    "schema_to_arrow",
    "to_arrow_row",
    "to_arrow_rows",
]
