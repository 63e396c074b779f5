"""Grounded fields: the dates, numbers and word spans a text states, and schemas limited to them."""

from __future__ import annotations

import json

import jsonschema
import pytest

from flashbeam.model.training import common, report_tasks, synthetic
from flashbeam.model.training import reports as synthetic_reports
from flashbeam.schemas import ground_schema, load_schema
from flashbeam.schemas.grounding import (
    property_nodes,
    property_paths,
    text_counts,
    text_dates,
    text_headings,
    text_lines,
    text_numbers,
    text_sentences,
    text_spans,
)

INVOICE = """Schmidt & Jensen LLP         INVOICE
43 Bridge Street             Invoice No: INV-2023-1230
Dublin D02 X285              Date of Issue: September 22nd, 2023
                             Payment Due Date: 06.10.2023
Sold To:                   Delivery Address:
Northwind Works & Co.      89 Station Street
                   Amount Due:        $1,486.56
Thank you for choosing Schmidt & Jensen LLP!"""


@pytest.mark.parametrize(
    "text, dates",
    [
        ("Issued: Saturday, November 19, 2022", ["2022-11-19"]),
        ("Paid On : 2023-04-02   18:47", ["2023-04-02"]),
        ("date - 17.02.2023", ["2023-02-17"]),
        ("Purchase Date: 11 January 2022", ["2022-01-11"]),
        ("purchase date: 14-Aug-2023", ["2023-08-14"]),
        ("Paid On:  31st July 2024", ["2024-07-31"]),
        ("effective the 3rd of March 2024", ["2024-03-03"]),
        ("Sept. 5, 2021 and 2021/12/30", ["2021-09-05", "2021-12-30"]),
        ("due 17/02/23", ["2023-02-17"]),
        ("no date here, only 2023 and 12/2023", []),
    ],
)
def test_text_dates_reads_the_common_layouts_as_iso(text, dates):
    assert text_dates(text) == dates


def test_a_numeric_date_that_reads_both_ways_gives_both_and_impossible_readings_none():
    assert set(text_dates("on 03/04/2023")) == {"2023-04-03", "2023-03-04"}
    assert text_dates("on 31/02/2023 or 13/13/2023") == []


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Amount Due: $1,486.56.", [1486.56]),
        ("Total : SEK 361,12", [361.12]),
        ("INR 1,075.20 or EUR 1.075,20", [1075.2]),
        ("1,024 units", [1024, 1.024]),
        ("Cash tendered: 60 AUD", [60]),
    ],
)
def test_text_numbers_reads_separators(text, expected):
    assert text_numbers(text) == expected


def test_text_numbers_reads_space_grouped_thousands_and_skips_digits_inside_identifiers():
    assert 1024.5 in text_numbers("Total 1 024,50 EUR")
    assert text_numbers("inv # INV0030777, ref R202230176") == []
    numbers = text_numbers("Invoice No: INV-2023-1230 dated 17.02.2023")
    assert 2023 in numbers and 1230 in numbers and 17 in numbers  # every group a number
    assert all(isinstance(n, int) for n in text_numbers("60 and 1,024.00"))  # integral: ints


def test_text_counts_are_whole_numbers_that_are_no_percentage_time_or_date():
    text = (
        "At 06:01 UTC the team opened a channel; latency rose by 28% (12 percent later). "
        "We logged 1,566 tickets and 22.513 refunds on 17.04.2025, Nov 19, 2022, in 3.5 hours."
    )
    assert text_counts(text) == [1566, 22513]
    assert text_numbers(text)[:3] == [6, 1, 28]  # a plain number field keeps them all
    assert text_counts("") == [] and text_counts("14:05:33 and 3:1") == [3, 1]


def test_a_number_marked_count_is_grounded_in_counts_only():
    count = {"type": "integer", "minimum": 0, "x-ground": "count"}
    schema = {"type": "object", "properties": {"n": count, "any": {"type": "number"}}}
    text = "Latency rose by 28% at 06:01, and 4,120 orders shipped."
    props = ground_schema(schema, text, ["n", "any"])["properties"]
    assert props["n"] == {"enum": [4120]} and 28 in props["any"]["enum"]
    with pytest.raises(ValueError, match="'span' is not a grounding kind of a number"):
        ground_schema({**schema, "properties": {"n": {**count, "x-ground": "span"}}}, text, ["n"])


def test_text_spans_keep_names_whole_and_do_not_cross_layout_gaps_or_lines():
    spans = text_spans(INVOICE)
    for name in [
        "Schmidt & Jensen LLP",
        "Northwind Works & Co.",
        "INV-2023-1230",
        "Dublin D02 X285",
    ]:
        assert name in spans
    assert "Schmidt & Jensen LLP!" in spans and "Schmidt & Jensen LLP" in spans  # outer punctuation
    assert "LLP INVOICE" not in spans  # two columns of the layout
    assert "X285 Date" not in spans
    assert "LLP 43" not in spans  # two lines
    assert all(len(s.split()) <= 3 for s in text_spans(INVOICE, max_words=3))


def test_text_lines_are_whole_lines_and_their_parts_without_their_markup():
    text = "# Q3 Report\n\n## 2. Budget\n**Key Metrics**\nDone.  Section 4: Risks\n- tickets: 12\n"
    lines = text_lines(text)
    for line in ["# Q3 Report", "Q3 Report", "2. Budget", "**Key Metrics**", "Key Metrics"]:
        assert line in lines
    assert "tickets: 12" in lines and "- tickets: 12" in lines
    assert "Budget" not in lines and "Q3" not in lines  # whole lines only, no runs of words
    assert "Done." in lines and "Section 4: Risks" in lines  # the parts between layout gaps
    assert "Done.  Section 4: Risks" in lines  # and the whole line
    assert "" not in text_lines("\n\n  \n")


def test_text_sentences_end_at_sentence_marks_and_blank_lines_not_at_line_breaks():
    text = (
        "Section 2: Progress\n\nWe logged 1,566 tickets (see above.) Costs fell by\n"
        'a third! Sales were "strong." Is it 22.513 or 3.5?  Yes.\n  \nDone'
    )
    assert text_sentences(text) == [
        "Section 2: Progress",
        "We logged 1,566 tickets (see above.)",
        "Costs fell by\na third!",  # a hard-wrapped sentence stays whole
        'Sales were "strong."',
        "Is it 22.513 or 3.5?",  # no cut inside a number
        "Yes.",
        "Done",
    ]
    listed = "Key Figures\n- support tickets: 1,566\n* refunds: 17\n2. orders: 3\n| a | 4 |\n"
    assert text_sentences(listed) == [
        "Key Figures", "- support tickets: 1,566", "* refunds: 17", "2. orders: 3", "| a | 4 |"
    ]  # fmt: skip
    assert text_sentences(" \n\n ") == []


FIGURE = {
    "type": "object",
    "x-ground": "sentence",
    "properties": {"name": {"type": "string", "maxLength": 20}, "value": {"type": "number"}},
    "required": ["name", "value"],
    "additionalProperties": False,
}
FIGURES = {"type": "object", "properties": {"figures": {"type": "array", "items": FIGURE}}}


def test_an_object_marked_sentence_takes_its_grounded_properties_from_one_sentence():
    text = (
        "The team logged 1,566 support tickets. Overall 1,715 customer refunds were issued.\n"
        "A note without any number."
    )
    grounded = ground_schema(FIGURES, text, ["figures.name", "figures.value"])
    items = grounded["properties"]["figures"]["items"]
    assert "x-ground" not in json.dumps(items) and len(items["anyOf"]) == 2  # a number each
    figure = jsonschema.Draft202012Validator(items)
    assert figure.is_valid({"name": "support tickets", "value": 1566})
    assert figure.is_valid({"name": "customer refunds", "value": 1715})
    assert figure.is_valid({"name": "customer refunds", "value": 1.715})  # both readings
    assert not figure.is_valid({"name": "support tickets", "value": 1715})  # another sentence
    assert not figure.is_valid({"name": "note", "value": 1566})  # a sentence with no number
    only_values = ground_schema(FIGURES, text, ["figures.value"])["properties"]["figures"]
    alternative = only_values["items"]["anyOf"][0]["properties"]
    assert alternative["name"] == FIGURE["properties"]["name"]  # not named: not grounded
    assert FIGURE["x-ground"] == "sentence"  # the input schema is not changed


def test_a_sentence_object_falls_back_to_the_whole_text_and_keeps_its_own_enums():
    figure = {**FIGURE, "properties": {**FIGURE["properties"], "unit": {"enum": ["kg", "t"]}}}
    schema = {"type": "object", "properties": {"figures": {"type": "array", "items": figure}}}
    fields = ["figures.name", "figures.value", "figures.unit"]
    items = ground_schema(schema, "We shipped 40 crates. It weighed 3 t.", fields)
    alternatives = items["properties"]["figures"]["items"]["anyOf"]
    assert [a["properties"]["value"]["enum"] for a in alternatives] == [[40], [3]]
    assert all(a["properties"]["unit"] == {"enum": ["kg", "t"]} for a in alternatives)
    # No sentence states a name (letters only) and a number together: each is grounded in the
    # whole text alone.
    name = {"type": "string", "pattern": "^[A-Za-z ]+$"}
    figure = {**FIGURE, "properties": {**FIGURE["properties"], "name": name}}
    schema = {"type": "object", "properties": {"figures": {"type": "array", "items": figure}}}
    items = ground_schema(schema, "Crates\n\n40", ["figures.name", "figures.value"])
    props = items["properties"]["figures"]["items"]["properties"]
    assert props["value"]["enum"] == [40] and "Crates" in props["name"]["enum"]
    bad = {"type": "object", "properties": {"f": {"items": {**FIGURE, "x-ground": "row"}}}}
    with pytest.raises(ValueError, match="'row' on an object is not a grounding kind"):
        ground_schema(bad, "We shipped 40 crates.", ["f.value"])


def test_a_field_marked_line_is_grounded_in_whole_lines():
    text = "Incident Report\n\nRoot Cause\n----------\nA disk filled up on the primary host.\n"
    heading = {"type": "string", "maxLength": 30, "pattern": "[A-Za-z]", "x-ground": "line"}
    schema = {"type": "object", "properties": {"head": heading, "word": {"type": "string"}}}
    props = ground_schema(schema, text, ["head", "word"])["properties"]
    assert props["head"]["enum"] == ["Incident Report", "Root Cause"]  # too long, no letter: out
    assert "Root" in props["word"]["enum"]  # unmarked: any run of words
    bad = {"type": "object", "properties": {"head": {**heading, "x-ground": "lines"}}}
    with pytest.raises(
        ValueError,
        match="'lines' is not a grounding kind of a string; use one of span, line, heading",
    ):
        ground_schema(bad, text, ["head"])


def test_a_field_marked_heading_takes_the_lines_that_stand_as_headings():
    text = (
        "# Annual Review\n\n**Prepared by** Ana Ruiz\nMay 2024\n\n"
        "Summary\n-------\nThe year went well.\n\n"
        "1. Budget\n\nSpend was flat,\nas planned.\n\n**Outlook**\n\n"
        "- Hiring\n\n| Area | Note |\n\n"
        "Fine.\n\nA line of far too many words to be any kind of heading in a report at all\n\n"
        "Part II: Risks\n"
    )
    assert text_headings(text) == [
        "Annual Review",
        "Summary",
        "1. Budget",
        "Outlook",
        "Part II: Risks",
    ]
    heading = {"type": "string", "maxLength": 30, "x-ground": "heading"}
    schema = {"type": "object", "properties": {"heads": {"type": "array", "items": heading}}}
    items = ground_schema(schema, text, ["heads"])["properties"]["heads"]["items"]
    assert items == {"enum": text_headings(text)}
    none = ground_schema(schema, "Only prose here.\nAnd more of it.", ["heads"])
    assert none["properties"]["heads"]["maxItems"] == 0


def test_an_ordered_array_takes_each_value_once_in_the_texts_order():
    heads = {"type": "array", "x-ground": "ordered", "items": {"type": "string",
             "x-ground": "heading"}}  # fmt: skip
    schema = {"type": "object", "properties": {"heads": heads}}
    text = "Scope\n\nWe plan.\n\nBudget\n\nWe spend.\n\nRisks\n"
    lists = ground_schema(schema, text, ["heads"])["properties"]["heads"]["enum"]
    assert sorted(lists, key=len) == [[], ["Scope"], ["Budget"], ["Risks"], ["Scope", "Budget"],
        ["Scope", "Risks"], ["Budget", "Risks"], ["Scope", "Budget", "Risks"]]  # fmt: skip
    bounded = {**heads, "type": ["array", "null"], "minItems": 1, "maxItems": 2}
    schema = {"type": "object", "properties": {"heads": bounded}}
    lists = ground_schema(schema, text, ["heads"])["properties"]["heads"]["enum"]
    assert None in lists and all(v is None or 1 <= len(v) <= 2 for v in lists)
    assert len(lists) == 3 + 3 + 1
    many = "\n\n".join(f"Heading {i}\n\nText {i}." for i in range(12))  # 4096 lists: too many
    schema = {"type": "object", "properties": {"heads": heads}}
    left = ground_schema(schema, many, ["heads"])["properties"]["heads"]
    assert left["x-ground"] == "ordered" and len(left["items"]["enum"]) == 12
    bad = {"type": "object", "properties": {"heads": {**heads, "x-ground": "sorted"}}}
    with pytest.raises(ValueError, match="'sorted' on an array is not a grounding kind"):
        ground_schema(bad, text, ["heads"])


def test_every_report_heading_is_a_grounded_candidate_of_the_chunk_schema():
    """The summarization job grounds chunk headings in the lines that stand as headings: each
    heading the generator writes, in every train and held-out layout, is one of its report's
    candidates, and so are few other lines (the title, a memo's first line)."""
    schema = common.load_schema("report_chunk_summary")
    assert schema["properties"]["section_headings"]["items"]["x-ground"] == "heading"
    for i, layout in enumerate(synthetic_reports.LAYOUTS * 3):
        rng = synthetic.item_rng(11, "report", layout.split, i)
        report = synthetic_reports.make_report(rng, layout.split, layout, "quarterly")
        candidates = text_headings(report.text)
        assert set(report.headings) <= set(candidates), layout.name
        assert len(candidates) <= len(report.headings) + 2, (layout.name, candidates)
        # Cut as the job cuts it, each chunk's headings are one of the lists it may give.
        for chunk in report_tasks.chunk_report(report.text, 400):
            heads = ground_schema(schema, chunk, ["section_headings"])["properties"]
            gold = synthetic_reports.partial_summary(report, chunk)["section_headings"]
            allows = jsonschema.Draft202012Validator(heads["section_headings"]).is_valid
            spelled_out = "enum" in heads["section_headings"] or not gold  # lists, or none
            assert allows(gold) and spelled_out, (layout.name, chunk)


def test_ground_schema_limits_fields_to_what_the_text_states():
    schema = common.load_schema("invoice")
    fields = ["vendor", "customer", "document_number", "issue_date", "due_date", "total_amount"]
    grounded = ground_schema(schema, INVOICE, fields)
    props = grounded["properties"]
    assert "Schmidt & Jensen LLP" in props["vendor"]["enum"]
    assert None not in props["vendor"]["enum"]  # vendor is required and not nullable
    assert None in props["customer"]["enum"]  # customer may be null: it still may
    assert set(props["issue_date"]["enum"]) == {"2023-09-22", "2023-10-06", "2023-06-10"}
    assert 1486.56 in props["total_amount"]["enum"]
    assert props["currency"] == schema["properties"]["currency"]  # not named: untouched
    assert schema == common.load_schema("invoice")  # the input schema is not changed
    # Every allowed value is one the original field accepts.
    for name in fields:
        check = jsonschema.Draft202012Validator(schema["properties"][name]).is_valid
        assert all(check(v) for v in props[name]["enum"])
    assert list(props) == list(schema["properties"])  # same properties, same order


def test_ground_schema_respects_the_fields_own_bounds():
    schema = {"type": "object", "properties": {
        "code": {"type": "string", "maxLength": 4},
        "qty": {"type": "integer", "minimum": 2},
        "price": {"type": "number", "exclusiveMaximum": 100},
    }}  # fmt: skip
    text = "Code AB12 qty 1 or 3, price 19.99 or 250"
    props = ground_schema(schema, text, ["code", "qty", "price"])["properties"]
    assert all(len(v) <= 4 for v in props["code"]["enum"]) and "AB12" in props["code"]["enum"]
    assert props["qty"]["enum"] == [3, 250]  # 1 is below the minimum, 19.99 no integer
    assert props["price"]["enum"] == [1, 3, 19.99]  # 250 is not below 100


def test_a_field_with_an_enum_of_its_own_or_no_grounding_kind_keeps_its_schema():
    schema = {"type": "object", "properties": {
        "kind": {"type": "string", "enum": ["a", "b"]},
        "flag": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string", "const": "x"}},
    }}  # fmt: skip
    assert ground_schema(schema, "a text with no date at all", ["kind", "flag", "tags"]) == schema


def test_a_field_the_text_states_nothing_for_is_null_or_empty_where_it_may_be():
    schema = {"type": "object", "properties": {
        "when": {"type": ["string", "null"], "format": "date"},
        "due": {"type": "string", "format": "date"},
        "dates": {"type": "array", "items": {"type": "string", "format": "date"}},
        "some": {"type": "array", "minItems": 1, "items": {"type": "string", "format": "date"}},
        "total": {"type": ["number", "null"], "minimum": 1000},
    }}  # fmt: skip
    fields = ["when", "due", "dates", "some", "total"]
    props = ground_schema(schema, "No date here; 12 items.", fields)["properties"]
    assert props["when"] == {"type": "null"} and props["total"] == {"type": "null"}
    assert props["dates"]["maxItems"] == 0  # an empty list is the only grounded answer
    assert props["due"] == schema["properties"]["due"]  # required: left to the model
    assert props["some"] == schema["properties"]["some"]  # must hold one: left to the model
    assert jsonschema.Draft202012Validator(ground_schema(schema, "x", fields)).is_valid(
        {"when": None, "due": "2024-01-02", "dates": [], "some": ["2024-01-02"], "total": None}
    )


def test_ground_schema_reaches_into_arrays_of_strings_and_objects():
    schema = load_schema(
        {"type": "object", "properties": {
            "people": {"type": "array", "items": {"type": "string"}},
            "figures": {"type": "array", "items": {"type": "object", "properties": {
                "name": {"type": "string"}, "value": {"type": "number"}}}},
        }}
    )  # fmt: skip
    text = "Anna Lombardi reported 180 affected servers."
    grounded = ground_schema(schema, text, ["people", "figures.value"])
    assert "Anna Lombardi" in grounded["properties"]["people"]["items"]["enum"]
    figure = grounded["properties"]["figures"]["items"]["properties"]
    assert figure["value"]["enum"] == [180] and figure["name"] == {"type": "string"}
    assert property_nodes(schema, "figures.value") == [{"type": "number"}]
    assert property_nodes(schema, "figures.nope") == [] and property_nodes(schema, "x") == []
    assert property_paths(schema) == ["people", "figures", "figures.name", "figures.value"]


def test_the_sample_documents_state_every_gold_value_of_the_grounded_fields():
    # Grounding may only help if the document writes the value: it does, for every gold value
    # of the example job (held-out layouts) and of fresh training-layout documents.
    schema = common.load_schema("invoice")
    fields = ["vendor", "customer", "document_number", "issue_date", "due_date", "total_amount"]
    fields.append("currency")
    docs = [json.loads(line) for line in (common.DATA_DIR / "business_docs.jsonl").open()]
    gold = {
        (g := json.loads(line))["id"]: g
        for line in (common.DATA_DIR / "business_docs.gold.jsonl").open()
    }
    cases = [(d["text"], gold[d["id"]]) for d in docs]
    cases += [(x.messages[-1]["content"], x.gold) for x in synthetic.generate("extract", 40, 5)]
    for text, want in cases:
        props = ground_schema(schema, text, fields)["properties"]
        for name in fields:
            allowed = [None] if props[name] == {"type": "null"} else [want[name]]
            assert want[name] in props[name].get("enum", allowed), (name, want[name])


def test_the_sample_reports_state_every_gold_value_of_the_grounded_fields():
    schema = common.load_schema("report_summary")
    fields = ["title", "author", "report_date", "people", "figures.name", "figures.value"]
    gold = {
        (g := json.loads(line))["id"]: g for line in (common.DATA_DIR / "reports.gold.jsonl").open()
    }
    for line in (common.DATA_DIR / "reports.jsonl").open():
        doc = json.loads(line)
        want = gold[doc["id"]]
        props = ground_schema(schema, doc["text"], fields)["properties"]
        for name in ["title", "author", "report_date"]:
            assert want[name] in props[name]["enum"]
        assert set(want["people"]) <= set(props["people"]["items"]["enum"])
        figure = jsonschema.Draft202012Validator(props["figures"]["items"])
        assert all(figure.is_valid(f) for f in want["figures"])  # name and value: one sentence


def test_every_gold_figure_of_every_report_layout_is_one_sentence_alternative():
    """The figures are grounded by sentence: each gold figure the generator writes, in every
    train and held-out layout, pairs a name and value from one sentence."""
    schema = common.load_schema("report_summary")
    assert schema["properties"]["figures"]["items"]["x-ground"] == "sentence"
    for i, layout in enumerate(synthetic_reports.LAYOUTS * 3):
        rng = synthetic.item_rng(12, "report", layout.split, i)
        report = synthetic_reports.make_report(rng, layout.split, layout, "incident")
        items = ground_schema(schema, report.text, ["figures.name", "figures.value"])
        figure = jsonschema.Draft202012Validator(items["properties"]["figures"]["items"])
        assert all(figure.is_valid(f) for f in report.gold()["figures"]), layout.name


def test_the_report_schemas_name_pattern_keeps_names_and_drops_other_spans():
    """The summarization job's author and people are full names: every name the generator
    writes passes the schemas' pattern, and grounding offers no span that is not one."""
    from flashbeam.model.training.business_text import FIRST_NAMES, SURNAMES

    for name in ("report_summary", "report_chunk_summary"):
        schema = common.load_schema(name)
        author = schema["properties"]["author"]
        person = schema["properties"]["people"]["items"]
        assert author["pattern"] == person["pattern"]
        check = jsonschema.Draft202012Validator(person)
        assert all(check.is_valid(f"{a} {b}") for a in FIRST_NAMES for b in SURNAMES)
        for fragment in ("The", "Decisions", "handover procedure ahead of", "02/18/2023"):
            assert not check.is_valid(fragment)
    text = json.loads((common.DATA_DIR / "reports.jsonl").open().readline())["text"]
    schema = common.load_schema("report_summary")
    people = ground_schema(schema, text, ["people"])["properties"]["people"]["items"]["enum"]
    spans = text_spans(text)
    assert people and len(people) < len(spans) / 10
    assert "Nadia Sato" in people and "The" not in people and "Sato" not in people


def test_the_invoice_schemas_document_number_is_one_word_with_a_digit():
    """Every number the generator writes (train and held-out layouts) passes the pattern; the
    subject-line spans a renewal letter offers around its number do not."""
    schema = common.load_schema("invoice")
    number = jsonschema.Draft202012Validator(schema["properties"]["document_number"])
    examples = synthetic.generate("extract", 120, 21)
    examples += synthetic.generate("extract", 120, 22, templates="heldout")
    written = [e.gold["document_number"] for e in examples if e.gold["document_number"]]
    assert len(written) > 150 and all(number.is_valid(n) for n in written)
    for span in ("Re", "River", "Renewal of Agreement C-83532", "Re: Renewal", "Agreement"):
        assert not number.is_valid(span)
    assert number.is_valid(None) and number.is_valid("C-83532")
    text = "Re: Renewal of Agreement C-83532\n\nDear Lakeside Works B.V.,"
    grounded = ground_schema(schema, text, ["document_number"])["properties"]["document_number"]
    assert grounded["enum"] == ["C-83532", None]
