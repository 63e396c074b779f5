"""Token-aware chunking: bounded chunks, overlap, exact substrings, breaks at paragraphs."""

from __future__ import annotations

from flashbeam.pipelines.records import Document, Origin
from flashbeam.pipelines.reduce import reassemble
from flashbeam.pipelines.sharding import shard_document, token_windows, tokenizer_for

PARAGRAPH = (
    "The quarterly report summarises revenue, incidents, staffing and the project roadmap. "
    "Invoice number INV-2041 issued on 2024-03-05 by Northwind Traders to Contoso Ltd.\n\n"
)


def _doc(text: str) -> Document:
    return Document(Origin("d", "src"), text=text)


def _tokens(tokenizer, text: str) -> int:
    return len(tokenizer.encode(text))


def test_short_document_is_one_chunk(tokenizer):
    (chunk,) = shard_document(_doc("A short note."), tokenizer, 64, 8)
    assert (chunk.index, chunk.count, chunk.text) == (0, 1, "A short note.")


def test_long_document_chunks_are_bounded_overlapping_and_cover_the_text(tokenizer):
    text = PARAGRAPH * 12 + "The end ünïcödé 日本."
    chunks = shard_document(_doc(text), tokenizer, 96, 16)
    assert len(chunks) > 3
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert {c.count for c in chunks} == {len(chunks)}
    for chunk in chunks:
        assert text[chunk.char_start : chunk.char_end] == chunk.text
        assert _tokens(tokenizer, chunk.text) <= 96 + 1  # re-tokenizing a cut may merge one
    for a, b in zip(chunks, chunks[1:]):
        assert b.char_start < a.char_end  # overlap
    assert reassemble([(c.char_start, c.text) for c in chunks]) == text


def test_chunks_prefer_paragraph_breaks(tokenizer):
    text = PARAGRAPH * 10
    chunks = shard_document(_doc(text), tokenizer, 80, 8)
    inner_ends = [c.text for c in chunks[:-1]]
    at_break = [t.endswith("\n\n") or text.startswith("\n\n", c.char_end)
                for t, c in zip(inner_ends, chunks)]  # fmt: skip
    assert sum(at_break) >= len(at_break) // 2


def test_no_chunking_for_chat_records_or_without_budget(tokenizer):
    chat = Document(Origin("c", "s"), messages=[{"role": "user", "content": PARAGRAPH * 20}])
    assert len(shard_document(chat, tokenizer, 32, 4)) == 1
    assert len(shard_document(_doc(PARAGRAPH * 20), tokenizer, None, 4)) == 1


def test_token_windows_make_progress_and_respect_overlap():
    text = "x" * 1000
    offsets = [(i, i + 1) for i in range(1000)]
    windows = token_windows(text, offsets, 100, 50)
    assert windows[0][0] == 0 and windows[-1][1] == 1000
    for (s1, e1), (s2, _) in zip(windows, windows[1:]):
        assert e1 - s1 <= 100 and s2 == e1 - 50


def test_tokenizer_is_loaded_once_per_process(checkpoint):
    assert tokenizer_for(checkpoint) is tokenizer_for(checkpoint)
