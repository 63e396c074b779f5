"""The synthetic data generator: reproducible, split by template, gold that the text supports."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import random
import re
from pathlib import Path

import jsonschema
import pytest

from flashbeam.model.training import business as biz
from flashbeam.model.training import business_docs, common, report_tasks
from flashbeam.model.training import reports as rep
from flashbeam.model.training import synthetic as S

Validator = jsonschema.Draft202012Validator


def _validator(name: str) -> jsonschema.Draft202012Validator:
    schema = common.load_schema(name)
    Validator.check_schema(schema)
    return Validator(schema, format_checker=Validator.FORMAT_CHECKER)


@pytest.fixture(scope="module")
def docs() -> list[biz.Rendered]:
    out = []
    for split, n in (("train", 400), ("heldout", 150)):
        for i in range(n):
            out.append(biz.business_doc(S.item_rng(11, "test", split, i), split))
    return out


@pytest.fixture(scope="module")
def reports() -> list[rep.Report]:
    """Three reports of every layout (the varied layouts draw a byline and heading style each)."""
    return [
        rep.make_report(random.Random(i), lay.split, lay) for lay in rep.LAYOUTS for i in range(3)
    ]


# ---- reproducibility and splits ------------------------------------------------------------------


@pytest.mark.parametrize("task", S.TASKS)
def test_same_seed_same_examples(task):
    a = S.generate(task, 6, seed=3)
    b = S.generate(task, 6, seed=3)
    assert [(e.id, e.messages, e.target) for e in a] == [(e.id, e.messages, e.target) for e in b]
    other = S.generate(task, 6, seed=4)
    assert [e.target for e in a] != [e.target for e in other]


def test_a_prefix_of_a_run_is_a_smaller_run():
    assert [e.target for e in S.generate("extract", 5, 9)] == [
        e.target for e in S.generate("extract", 20, 9)[:5]
    ]


def test_heldout_templates_are_disjoint_from_train_and_cover_every_kind():
    train = {t.name for t in business_docs.templates_for("train")}
    held = {t.name for t in business_docs.templates_for("heldout")}
    assert train and held and not train & held
    for kind in business_docs.KINDS:
        assert business_docs.templates_for("train", kind) and business_docs.templates_for(
            "heldout", kind
        )
    layouts = {lay.split: set() for lay in rep.LAYOUTS}
    for lay in rep.LAYOUTS:
        layouts[lay.split].add(lay.name)
    assert layouts["train"] and layouts["heldout"] and not layouts["train"] & layouts["heldout"]


def test_generate_uses_only_the_requested_split():
    held = {t.name for t in business_docs.templates_for("heldout")} | {
        lay.name for lay in rep.LAYOUTS if lay.split == "heldout"
    }
    for task in ("extract", "summarize"):
        for split in common.SPLITS:
            used = {e.template for e in S.generate(task, 30, 1, templates=split)}
            assert (used <= held) if split == "heldout" else not (used & held)
    with pytest.raises(ValueError, match="templates must be"):
        S.generate("extract", 1, 1, templates="test")


def test_heldout_documents_do_not_repeat_train_layouts(docs):
    """The layout skeleton (line breaks and punctuation, values and words dropped) of a held-out
    document is rarely that of a train document."""

    def skeleton(text: str) -> str:
        return re.sub(r"[^\n|:#*=-]", "", text)[:60]

    train_names = {t.name for t in business_docs.templates_for("train")}
    train = {skeleton(d.text) for d in docs if d.template in train_names}
    held = [skeleton(d.text) for d in docs if d.template not in train_names]
    assert held and sum(s in train for s in held) < len(held) * 0.2


# ---- extraction gold -----------------------------------------------------------------------------

MONTH = {m[:3].lower(): i for i, m in enumerate(common.MONTHS, 1)}
DATE_PATTERNS = [  # an independent reader of every date style the generator writes
    (r"\b(\d{4})-(\d{2})-(\d{2})\b", "ymd"),
    (r"\b(\d{1,2})/(\d{1,2})/(\d{4}|\d{2})\b", "mdy"),
    (r"\b(\d{2})\.(\d{2})\.(\d{4})\b", "dmy"),
    (r"\b([A-Z][a-z]{2})[a-z]* (\d{1,2})(?:st|nd|rd|th)?, (\d{4})\b", "Mdy"),
    (r"\b(\d{1,2})(?:st|nd|rd|th)?[ -]([A-Za-z]{3})[a-z]*[ -](\d{4})\b", "dMy"),
]


def dates_in(text: str) -> set[dt.date]:
    found = set()
    for pattern, order in DATE_PATTERNS:
        for m in re.finditer(pattern, text):
            parts = dict(zip(order, m.groups()))
            month = parts["m"] if "m" in parts else MONTH.get(parts["M"][:3].lower())
            if month is None:
                continue
            year = int(parts["y"]) + (2000 if len(parts["y"]) == 2 else 0)
            with contextlib.suppress(ValueError):  # not a date after all
                found.add(dt.date(year, int(month), int(parts["d"])))
    return found


def test_every_gold_validates_against_the_schema_with_formats(docs):
    v = _validator("invoice")
    for d in docs:
        v.validate(d.gold)
        assert list(d.gold) == list(business_docs.FIELDS)
        assert (d.gold["total_amount"] is None) == (d.gold["currency"] is None)
        if d.gold["document_type"] == "receipt":
            assert d.gold["due_date"] is None


def test_target_is_the_compact_gold_in_fixed_key_order():
    for ex in S.generate("extract", 50, 2):
        assert json.loads(ex.target) == json.loads(json.dumps(ex.gold))
        assert list(json.loads(ex.target)) == list(business_docs.FIELDS)
        assert ex.target == common.dumps(ex.gold) and '": ' not in ex.target
        assert ex.messages == [
            {"role": "system", "content": common.EXTRACT_INSTRUCTION},
            {"role": "user", "content": ex.text},
        ]


def test_documents_state_their_gold_values(docs):
    for text, gold, name, doc in docs:
        assert gold["vendor"] in text, name
        for key in ("customer", "document_number"):
            assert gold[key] is None or gold[key] in text, (name, key)
        found = dates_in(text)
        assert dt.date.fromisoformat(gold["issue_date"]) in found, name
        if gold["due_date"]:
            assert dt.date.fromisoformat(gold["due_date"]) in found, name
        if gold["total_amount"] is not None:
            cents = round(gold["total_amount"] * 100)
            assert cents == doc.total
            written = common.money_surface_forms(cents, gold["currency"])
            assert any(w in text for w in written), (name, written)


def test_missing_fields_are_really_absent(docs):
    seen = set()
    for text, gold, name, doc in docs:
        dropped = doc.extra["dropped"]
        for key, value in dropped.items():
            seen.add((gold["document_type"], key))
            if value is None:
                continue
            if key == "total":
                assert gold["total_amount"] is None
                assert not any(w in text for w in common.money_surface_forms(value, doc.currency))
            elif key == "due":
                assert gold["due_date"] is None
                assert value not in dates_in(text), name
            else:
                assert gold[{"customer": "customer", "number": "document_number"}[key]] is None
                assert value not in text, (name, key)
        if gold["due_date"] is None:  # no other date than the issue date (or a delivery date)
            issue = dt.date.fromisoformat(gold["issue_date"])
            assert all(0 <= (issue - d).days <= 3 for d in dates_in(text)), name
    assert {("invoice", "due"), ("receipt", "customer"), ("contract", "total")} <= seen


def test_documents_vary_and_have_the_intended_length(docs):
    words = [common.word_count(d.text) for d in docs]
    assert min(words) >= 130 and max(words) <= 420
    assert len({d.text for d in docs}) == len(docs)
    styles = {common.format_date(dt.date(2024, 3, 5), s) for s in common.DOC_DATE_STYLES}
    assert len(styles) == len(common.DOC_DATE_STYLES)
    for cur in common.CURRENCIES:
        assert len(common.money_surface_forms(123450, cur)) >= 3


@pytest.mark.parametrize(
    ("cents", "cur", "style", "trim", "written", "raw"),
    [
        (123450, "USD", "sym_us", False, "$1,234.50", "1234.50"),
        (123450, "EUR", "eu_code_post", False, "1.234,50 EUR", "1234.50"),
        (123450, "USD", "code_pre_plain", True, "USD 1234.5", "1234.5"),
        (120000, "USD", "sym_us", True, "$1,200", "1200"),
        (120000, "EUR", "eu_sym_post", True, "1.200,00 €", "1200.00"),
        (12345600, "JPY", "code_pre_us", False, "JPY 123,456", "123456"),
        (123450, "CHF", "swiss", False, "CHF 1'234.50", "1234.50"),
        (123450, "SEK", "space_code_post", False, "1 234,50 SEK", "1234.50"),
    ],
)
def test_money_formats(cents, cur, style, trim, written, raw):
    text, num = common.format_money(cents, cur, style, trim)
    assert (text, num.raw, float(num)) == (written, raw, cents / 100)
    assert common.dumps({"total_amount": num}) == '{"total_amount":' + raw + "}"


# ---- reports -------------------------------------------------------------------------------------


def test_report_gold_validates_and_is_stated_in_the_text(reports):
    v, vc = _validator("report_summary"), _validator("report_chunk_summary")
    for r in reports:
        gold = r.gold()
        v.validate(gold)
        assert 1500 <= common.word_count(r.text) <= 3200
        for key in ("title", "author"):
            assert r.text.count(gold[key]) == 1
        header = r.text[: r.text.index(r.heading_lines[0])]
        assert dates_in(header) == {dt.date.fromisoformat(gold["report_date"])}
        assert gold["section_count"] == len(r.headings) >= 5
        assert all(line in r.text for line in r.heading_lines)
        assert gold["people"] and all(p in r.text for p in gold["people"])
        assert r.author not in gold["people"]
        assert 3 <= len(gold["figures"]) <= 5
        for f, fig in zip(
            gold["figures"], sorted(r.figures, key=lambda f: r.text.index(f.written))
        ):
            assert f == {"name": fig.name, "value": fig.value}
            assert re.search(rf"\b{fig.value:,}\b|\b{fig.value}\b", fig.written)
        assert gold["summary"] in r.text
        for chunk in report_tasks.chunk_report(r.text, 300):
            vc.validate(rep.partial_summary(r, chunk))


def test_train_reports_never_use_the_heldout_bylines_or_headings():
    """`By <name>, <date>`, `Section N` headings and dash-underlined headings appear only in
    held-out reports, so the sample job measures layouts the model never saw."""
    for i in range(300):
        r = rep.make_report(random.Random(i), "train")
        header = r.text[: r.text.index(r.heading_lines[0])]
        assert not re.search(rf"^By {re.escape(r.author)}", header, re.M), r.layout
        for line in r.heading_lines:
            assert not line.startswith("Section ") and "\n-" not in line, (r.layout, line)
    for i in range(20):
        for lay in (lay for lay in rep.LAYOUTS if lay.split == "heldout"):
            r = rep.make_report(random.Random(i), "heldout", lay)
            assert f"By {r.author}, " in r.text or r.heading_lines[0].startswith("Section 1")


def test_partial_summaries_of_any_chunking_merge_to_the_gold(reports):
    for r in reports:
        for budget in (150, 230, 400, 10_000):
            chunks = report_tasks.chunk_report(r.text, budget)
            assert all(common.word_count(c) <= budget + 25 for c in chunks)
            assert re.sub(r"\s+", " ", " ".join(chunks)) == re.sub(r"\s+", " ", r.text.strip())
            partials = [rep.partial_summary(r, c) for c in chunks]
            assert report_tasks.merge_partials(partials) == r.gold()
            assert sum(len(p["section_headings"]) for p in partials) == len(r.headings)


def test_chunk_many_draws_the_chunks_that_list_several_headings_or_figures():
    """A chunk that states two headings or figures is rare in the plain chunk task (its sections
    are longer than most chunks); chunk_many draws such chunks when the report has one."""

    def many(examples: list[common.Example]) -> int:
        return sum(
            len(e.gold["section_headings"]) >= 2 or len(e.gold["figures"]) >= 2 for e in examples
        )

    plain, rich = S.generate("chunk", 60, seed=8), S.generate("chunk_many", 60, seed=8)
    assert many(plain) < 15 < 30 < many(rich)
    assert all(
        e.task == "chunk" and e.messages[0]["content"] == common.CHUNK_INSTRUCTION for e in rich
    )


def test_map_reduce_examples_chain():
    examples = report_tasks.map_reduce_examples(random.Random(5))
    chunks = [e for e in examples if e.task == "chunk"]
    reduces = [e for e in examples if e.task == "reduce"]
    assert len(chunks) >= 4 and len(reduces) == 2
    # Chunks are framed and their outputs listed as the pipelines do it, one document id for all.
    first = chunks[0].messages[1]["content"]
    doc_id = first.split(" of document ", 1)[1].split(":", 1)[0]
    assert first.startswith(f"Part 1 of {len(chunks)} of document {doc_id}:\n\n")
    partials = [json.loads(e.target) for e in chunks]
    assert reduces[0].messages[1]["content"] == report_tasks.reduce_user_content(partials, doc_id)
    assert (
        "Part 2:\n" + json.dumps(partials[1], ensure_ascii=False)
        in reduces[0].messages[1]["content"]
    )
    assert reduces[0].target == reduces[1].target
    assert all(e.messages[0]["content"] == common.CHUNK_INSTRUCTION for e in chunks)
    assert reduces[0].messages[0]["content"] == common.REDUCE_INSTRUCTION


# ---- sample data and command line ----------------------------------------------------------------


# Written by hand, apart from the generators: the extraction job's independent held-out set.
HAND_WRITTEN = {"ocr_docs.jsonl", "ocr_docs.gold.jsonl"}


def test_committed_sample_data_is_what_the_generator_writes(tmp_path):
    S.write_sample_data(tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    committed = {p.name for p in common.DATA_DIR.iterdir() if p.suffix == ".jsonl"}
    assert committed >= HAND_WRITTEN and names == sorted(committed - HAND_WRITTEN)
    for name in names:
        assert (tmp_path / name).read_bytes() == (common.DATA_DIR / name).read_bytes(), name


def test_sample_data_is_heldout_valid_and_in_the_job_formats():
    rows = {
        p.name: [json.loads(x) for x in p.read_text().splitlines()]
        for p in Path(common.DATA_DIR).glob("*.jsonl")
    }
    docs, gold = rows["business_docs.jsonl"], rows["business_docs.gold.jsonl"]
    assert [d["id"] for d in docs] == [g["id"] for g in gold] and len(docs) >= 20
    assert all(set(d) == {"id", "text"} for d in docs)
    v = _validator("invoice")
    for g in gold + rows["chat_requests.gold.jsonl"]:
        v.validate({k: x for k, x in g.items() if k != "id"})
    for g in rows["reports.gold.jsonl"]:
        _validator("report_summary").validate({k: x for k, x in g.items() if k != "id"})
    assert {g["document_type"] for g in gold} == set(business_docs.KINDS)
    for req in rows["chat_requests.jsonl"]:
        assert set(req) == {"custom_id", "method", "url", "body"}
        assert req["method"] == "POST" and req["url"] == "/v1/chat/completions"
        assert req["body"]["messages"][0]["content"] == common.EXTRACT_INSTRUCTION
    train_texts = {
        d.text for d in (biz.business_doc(S.item_rng(0, "extract", "train", i)) for i in range(50))
    }
    assert not train_texts & {d["text"] for d in docs}


def test_train_data_command(tmp_path, capsys):
    out = tmp_path / "x.jsonl"
    assert (
        S.main(["train-data", "--task", "summarize", "--n", "7", "--seed", "2", "--out", str(out)])
        == 0
    )
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 7 and {"messages", "target", "task", "template", "id"} <= set(rows[0])
    assert (
        S.main(
            [
                "train-data",
                "--task",
                "extract",
                "--n",
                "1",
                "--seed",
                str(common.SAMPLE_SEED),
                "--out",
                str(out),
            ]
        )
        == 2
    )


# ---- copy sources (pointer supervision) ----------------------------------------------------------


def test_copy_sources_point_at_the_written_value(docs):
    copied = found = 0
    for d in docs:
        target = common.dumps(d.gold)
        sources = biz.copy_sources(d.text, d.gold, target, d.doc)
        for key in ("vendor", "customer", "document_number", "total_amount"):
            value = d.gold[key]
            if value is None:
                continue
            written = common.dumps(value)
            start = target.index(f'"{key}":{written}') + len(key) + 3 + isinstance(value, str)
            copied += 1
            found += start in sources
            for i, ch in enumerate(written.strip('"')):
                for pos in sources.get(start + i, []):
                    if ch == ".":  # the amount's decimal point: the written separator
                        assert d.text[pos] in ".,", (d.text, key)
                    else:  # names and digits copy character for character
                        assert d.text[pos] == ch, (d.text, key, i)
        for key in ("issue_date", "due_date"):
            if d.gold[key] is None:
                continue
            day = dt.date.fromisoformat(d.gold[key])
            start = target.index(f'"{key}":"') + len(key) + 4
            copied += 1
            found += start in sources
            for pos in sources.get(start, []):  # the year's first digit
                assert d.text[pos : pos + 4] == str(day.year)
            for pos in sources.get(start + 5, []):  # the month: its name or its digits
                written = d.text[pos : pos + 3].lower()
                assert written == common.MONTHS[day.month - 1][:3].lower() or (
                    int(re.match(r"\d+", d.text[pos:]).group()) == day.month
                ), (d.text[pos - 10 : pos + 10], d.gold[key])
            for pos in sources.get(start + 8, []):  # the day's digits
                assert int(re.match(r"\d+", d.text[pos:]).group()) == day.day
    # A value written in the document has a source; nearly all are found (a handful of dates
    # split across a line break or written in a form the search does not know stay without).
    assert found >= 0.98 * copied


def test_copy_sources_skip_enums_nulls_and_values_inside_longer_words():
    doc = business_docs.BizDoc("receipt", "Acme", None, "7", dt.date(2024, 3, 5), None, "USD", [])
    gold = {"document_type": "receipt", "vendor": "Acme", "customer": None,
            "document_number": "7", "issue_date": "2024-03-05", "due_date": None,
            "total_amount": None, "currency": None}  # fmt: skip
    text = "Acmeville\nAcme store, receipt 17 and 7\nMarch 5, 2024"
    target = common.dumps(gold)
    sources = biz.copy_sources(text, gold, target, doc)
    vendor = target.index('"vendor":"') + 10
    assert sources[vendor] == [10]  # "Acme" of "Acme store", not the start of "Acmeville"
    number = target.index('"document_number":"') + 19
    assert sources[number] == [text.rindex("7")]  # not the 7 of 17
    month, day = target.index("2024-03-05") + 5, target.index("2024-03-05") + 8
    assert sources[month] == sources[month + 1] == [text.index("March")]
    assert sources[day] == [sources[day + 1][0]] == [text.index("5,")]
    # the document type is an enum: no source, though the text says "receipt"
    assert min(sources) == vendor and '"' not in {target[i] for i in sources}


def test_verbatim_sources_map_report_values_to_their_text():
    gold = {"title": "Q3 Review", "section_count": 5, "people": ["Ana Ruiz", "Bo Li"],
            "figures": [{"name": "orders", "value": 12480}], "report_date": "2024-06-09",
            "note": 'say "hi"', "missing": None}  # fmt: skip
    text = "Q3 Review, 9 June 2024. Ana Ruiz met Bo Li; orders reached 12,480 (of 5 sections)."
    target = common.dumps(gold)
    sources = common.verbatim_sources(text, gold, computed=("section_count",))
    for value in ("Q3 Review", "Ana Ruiz", "Bo Li"):
        start = target.index(f'"{value}"') + 1
        assert [sources[start + i] for i in range(len(value))] == [
            [text.index(value) + i] for i in range(len(value))
        ]
    # an integer's digits map to the written digits, the group separator skipped
    figure = target.index("12480")
    assert [text[sources[figure + i][0]] for i in range(5)] == list("12480")
    assert sources[figure + 2] == [text.index("12,480") + 3]
    # a date not written in ISO form: year, month name and day
    date = target.index("2024-06-09")
    assert sources[date] == [text.index("2024")] and sources[date + 5] == [text.index("June")]
    assert sources[date + 8] == sources[date + 9] == [text.index("9 June")]
    # a computed count has no source (though "5" is in the text), nor escaped strings or nulls
    count = target.index('"section_count":5') + len('"section_count":')
    assert count not in sources
    assert target.index('say \\"hi') + 1 not in sources
    assert common.verbatim_sources("no values here", gold) == {}


def test_report_layouts_limit_the_drawn_layouts_and_name_bad_ones():
    core = ("rep_markdown", "rep_memo")
    for task in ("chunk", "reduce", "summarize", "report"):
        assert {e.template for e in S.generate(task, 12, 3, report_layouts=core)} <= set(core)
    # Without a limit, every train layout is drawn; the limit does not change the random stream
    # of the items, only which layout an item gets.
    assert {e.template for e in S.generate("reduce", 60, 3)} == {
        lay.name for lay in rep.layouts_of("train")
    }
    with pytest.raises(ValueError, match="rep_underlined.*not train layouts; choose from"):
        S.generate("chunk", 1, 3, report_layouts=("rep_underlined",))
    with pytest.raises(ValueError, match=r"\(none\)"):
        rep.layouts_of("train", ())
