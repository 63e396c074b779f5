"""Currency grounding: only the ISO codes a document's codes, symbols and words support, and
null when it states no currency."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest

from flashbeam.schemas import ground_schema, load_schema
from flashbeam.schemas.currency import text_currencies, unglue_currency
from flashbeam.schemas.grounding import text_numbers


@pytest.mark.parametrize(
    "text, codes",
    [
        ("TOTAL RM 42.90", ["MYR"]),
        ("NETT T0TAL RM31.70", ["MYR"]),
        ("GRAND\nTOTAL\nRM\n20.50", ["MYR"]),  # OCR: the unit on the line above its amount
        ("CODE AMOUNT(RM) TAX(RM)", ["MYR"]),
        ("TOTAL S$ 12.40", ["SGD"]),
        ("Grand Total ₹ 1,13,400.00", ["INR"]),
        ("TOTAL 21,95 €", ["EUR"]),
        ("SUMME EUR 11,70", ["EUR"]),
        ("Total £2,202.00", ["GBP"]),
        ("Total CHF 23.10", ["CHF"]),
        ("TOTAL Rp 79.200", ["IDR"]),
        ("C$1,200 then A$5", ["CAD", "AUD"]),
        ("Rupees Four Hundred Twenty Only", ["INR", "PKR", "LKR", "NPR"]),
        ("Summe 12,50 kr", ["SEK", "NOK", "DKK", "ISK"]),
    ],
)
def test_codes_symbols_and_local_abbreviations_name_their_currencies(text, codes):
    assert text_currencies(text) == codes


def test_a_bare_dollar_supports_every_dollar_and_a_written_code_is_among_them():
    codes = text_currencies("Total $8.80\nAll prices in SGD.")
    assert codes[0] == "USD" and {"SGD", "AUD", "CAD", "NZD", "HKD"} <= set(codes)
    assert "EUR" not in codes and "MYR" not in codes


@pytest.mark.parametrize(
    "text",
    [
        "TOTAL 42.90\nCASH 50.00\nCHANGE 7.10",  # no currency at all
        "PASARAYA SEGAR INDAH SDN BHD\n1120034-V",  # Berhad, not Bahraini dinars
        "ABC TRADING SDN BHD 772310-W",
        "PEN GEL 0.5MM BIRU\nTOP UP CARD",  # words that are also codes, beside no amount
        "ROOM SERVICE, FORM 7, ARM REST",  # RM inside words
    ],
)
def test_words_and_abbreviations_that_are_no_currency_support_none(text):
    assert text_currencies(text) == []


def test_an_amount_written_against_its_currency_reads_as_a_number():
    assert unglue_currency("T0TAL: RM73.00 USD1,200") == "T0TAL: RM 73.00 USD 1,200"
    assert text_numbers("T0TAL: RM73.00 CA5H: RM100.00") == [73, 100]
    assert text_numbers("inv # INV0030777") == []  # not a currency: the identifier stays whole


def test_indian_comma_groups_read_as_lakhs_and_crores():
    assert text_numbers("₹ 1,13,400.00 and 18,60,000") == [113400, 1860000]
    assert text_numbers("1,024") == [1024, 1.024]  # thousands as before


SCHEMA = load_schema(str(Path(__file__).resolve().parents[2] / "jobs/schemas/invoice.json"))


def _currency(text: str) -> dict:
    return ground_schema(SCHEMA, text, ["currency"])["properties"]["currency"]


def test_a_currency_field_takes_only_the_codes_the_document_supports_within_its_enum():
    assert SCHEMA["properties"]["currency"]["x-ground"] == "currency"
    assert _currency("TOTAL RM 42.90") == {"enum": ["MYR", None]}
    dollar = _currency("Total $8.80")["enum"]
    assert "USD" in dollar and "SGD" in dollar and "TWD" not in dollar  # TWD: not in the enum
    assert None in dollar and "EUR" not in dollar
    # A code outside the schema's enum is no candidate; with none left the field is null.
    assert _currency("Total PLN 120,00") == {"type": "null"}


def test_a_document_that_states_no_currency_holds_the_field_to_null():
    grounded = _currency("RESTORAN DAUN\nTotal\n42.90\nCash\n50.00")
    assert grounded == {"type": "null"}
    check = jsonschema.Draft202012Validator(grounded)
    assert check.is_valid(None) and not check.is_valid("USD") and not check.is_valid("MYR")


def test_a_currency_field_must_hold_a_value_keeps_its_schema_when_none_is_stated():
    schema = {"type": "object", "properties": {
        "cur": {"type": "string", "enum": ["USD", "EUR"], "x-ground": "currency"},
    }}  # fmt: skip
    assert ground_schema(schema, "Total 12.00", ["cur"]) == schema
    assert ground_schema(schema, "Total 12,00 €", ["cur"])["properties"]["cur"] == {"enum": ["EUR"]}
