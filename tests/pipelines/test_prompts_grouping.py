"""Prompts put shared content first; prefix keys and groups keep a document's requests together."""

from __future__ import annotations

import pytest

from flashbeam.pipelines.config import ReduceConfig, TaskConfig
from flashbeam.pipelines.grouping import prefix_keys, split_group
from flashbeam.pipelines.prompts import (
    check_template,
    document_requests,
    prompt_text,
    reduce_request,
    shared_prefix_chars,
)
from flashbeam.pipelines.records import Chunk, Document, ItemStats, Origin

QUESTIONS = ("Who sent it?", "When is it due?", "What is the total?", "Which currency?")


def _chunk(doc_id: str, text: str, index: int = 0, count: int = 1) -> Chunk:
    return Chunk(Document(Origin(doc_id, "src", 1), text=text), index, count, text, 0, len(text))


def test_requests_over_a_document_share_everything_but_the_question(tiny_schema):
    task = TaskConfig(kind="extract", schema=tiny_schema, questions=QUESTIONS)
    prompts = document_requests(_chunk("d1", "Invoice INV-1 from Acme, 12 USD."), task)
    assert [p.item for p in prompts] == [("d1", i) for i in range(4)]
    assert [p.request.id for p in prompts] == [f"d1#q{i}" for i in range(4)]
    texts = [prompt_text(p.request) for p in prompts]
    shared = texts[0][: prompts[0].shared_chars]
    assert all(t.startswith(shared) for t in texts)
    assert "Invoice INV-1" in shared and '"ok"' in shared  # document and schema are shared
    for text, question, p in zip(texts, QUESTIONS, prompts):
        assert question in text[p.shared_chars :]
        assert text.index("Invoice") < text.index(question)


def test_an_empty_question_leaves_the_document_as_the_last_turn():
    task = TaskConfig(kind="extract", instructions="Extract.", questions=("",))
    (prompt,) = document_requests(_chunk("d", "Invoice 7"), task)
    assert prompt.request.messages == [
        {"role": "system", "content": "Extract."},
        {"role": "user", "content": "Invoice 7"},
    ]


def test_chunk_prompts_name_the_part_and_are_not_final():
    task = TaskConfig(kind="summarize")
    (prompt,) = document_requests(_chunk("d", "middle text", index=1, count=3), task)
    assert "Part 2 of 3 of document d" in prompt_text(prompt.request)
    assert not prompt.final and prompt.request.id == "d#q0#c1"
    assert prompt.schema_source == "none"


def test_parts_of_a_split_document_are_held_to_the_part_schema(tiny_schema):
    part = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    reduce = ReduceConfig(mode="prompt", part_schema=part)
    task = TaskConfig(kind="summarize", schema=tiny_schema, reduce=reduce)

    def shown(prompt):  # the schema attached to the system turn
        return prompt.request.messages[0]["response_format"]["json_schema"]["schema"]

    (split,) = document_requests(_chunk("d", "middle text", index=1, count=3), task)
    assert split.schema_source == "part" and shown(split) == part
    assert '"n"' in prompt_text(split.request) and '"ok"' not in prompt_text(split.request)
    (whole,) = document_requests(_chunk("d", "the whole text"), task)  # a final output
    assert whole.schema_source == "task" and shown(whole) == tiny_schema
    reduced = reduce_request(("d", 0), Origin("d", "s"), ['{"n": 1}'], task, 1, 0, False, "doc",
                             ItemStats())  # fmt: skip
    assert reduced.schema_source == "task" and shown(reduced) == tiny_schema
    # Without a part schema the parts use the task schema, as before.
    plain = TaskConfig(kind="summarize", schema=tiny_schema)
    (part_plain,) = document_requests(_chunk("d", "middle text", index=1, count=3), plain)
    assert part_plain.schema_source == "task" and shown(part_plain) == tiny_schema
    hidden = TaskConfig(kind="summarize", schema=tiny_schema, reduce=reduce,
                        schema_in_prompt=False)  # fmt: skip
    (quiet,) = document_requests(_chunk("d", "middle text", index=1, count=3), hidden)
    assert quiet.schema_source == "part" and "response_format" not in quiet.request.messages[0]


def test_template_check():
    check_template("Document {id}:\n{document}")
    with pytest.raises(ValueError, match="must contain"):
        check_template("{doc}")
    with pytest.raises(ValueError, match="must contain"):
        check_template("no fields")


def test_chat_record_becomes_one_request_with_its_params():
    doc = Document(
        Origin("req-1", "b.jsonl", 1),
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        params={"max_tokens": 5, "temperature": 0.5, "response_format": {"type": "json_object"}},
    )
    (prompt,) = document_requests(Chunk(doc, 0, 1, "", 0, 0), TaskConfig(kind="generate"))
    r = prompt.request
    assert (r.id, r.max_tokens, r.temperature) == ("req-1", 5, 0.5)
    assert r.response_format == {"type": "json_object"} and prompt.schema_source == "request"
    assert "Be brief." in prompt_text(r)[: prompt.shared_chars]


def test_reduce_request_lists_the_parts():
    task = TaskConfig(kind="summarize", questions=("Summarize.", "List risks."))
    prompt = reduce_request(
        ("d", 1), Origin("d", "s"), ["first", "second"], task, 2, 0, True, "doc", ItemStats()
    )
    text = prompt_text(prompt.request)
    assert "Part 1:\nfirst" in text and "Part 2:\nsecond" in text
    assert text.rstrip().find("List risks.") > text.find("second")
    assert prompt.request.id == "d#q1#r2.0" and prompt.level == 2 and prompt.final


def test_shared_prefix_chars_single_message():
    assert shared_prefix_chars([{"role": "user", "content": "x"}], False) == 0


def test_prefix_keys_group_one_document_and_separate_others(tokenizer):
    task = TaskConfig(kind="generate", instructions="Answer.", questions=QUESTIONS)
    a = document_requests(_chunk("a", "Alpha document text."), task)
    b = document_requests(_chunk("b", "Beta document, different."), task)
    keys_a = {prefix_keys(p, tokenizer, 128) for p in a}
    keys_b = {prefix_keys(p, tokenizer, 128) for p in b}
    assert len(keys_a) == len(keys_b) == 1 and keys_a != keys_b
    assert next(iter(keys_a))[0].startswith("t")  # shorter than a block: exact text key


def test_prefix_keys_are_block_aligned(tokenizer):
    long_doc = "Invoice number INV-2041 issued on 2024-03-05 by Northwind Traders. " * 20
    task = TaskConfig(kind="generate", instructions="Answer.", questions=QUESTIONS)
    one = document_requests(_chunk("a", long_doc), task)
    # The same long document with a different tail: same first blocks, same key.
    two = document_requests(_chunk("b", long_doc + " Extra."), task)
    key_one, exact_one = prefix_keys(one[0], tokenizer, 128)
    key_two, exact_two = prefix_keys(two[0], tokenizer, 128)
    assert key_one.startswith("b") and key_one == key_two and exact_one != exact_two
    assert prefix_keys(two[0], tokenizer, 4096)[0].startswith("t")


def test_split_group_keeps_exact_prefixes_together(tokenizer):
    task = TaskConfig(kind="generate", questions=QUESTIONS)
    keyed = []
    for doc in ("a", "b", "c"):
        for p in document_requests(_chunk(doc, f"Document {doc}."), task):
            keyed.append((prefix_keys(p, tokenizer, 128)[1], p))
    groups = split_group(reversed(keyed), max_requests=5)
    assert [len(g) for g in groups] == [4, 4, 4]
    assert all(len({p.item[0] for p in g}) == 1 for g in groups)
    assert groups == split_group(keyed, max_requests=5)  # deterministic
    small = split_group(keyed, max_requests=3)
    assert max(len(g) for g in small) == 3 and sum(len(g) for g in small) == 12
