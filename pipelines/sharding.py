"""Token-aware chunking: documents over the budget become overlapping chunks cut at token
boundaries, preferably at a paragraph, line or sentence break near the end of each window.

Chunk texts are exact substrings of the document (cut by the tokenizer's character offsets),
so no character is lost or mangled at a cut, and consecutive chunks overlap by about
`overlap_tokens` tokens.
"""

from __future__ import annotations

import threading

from flashbeam.model.checkpoint.loading import resolve_checkpoint
from flashbeam.model.text.tokenizer import Tokenizer

from .records import Chunk, Document

_tokenizers: dict[str, Tokenizer] = {}
_tokenizers_lock = threading.Lock()


def tokenizer_for(model: str) -> Tokenizer:
    """The checkpoint's tokenizer, loaded once per process and shared across threads."""
    with _tokenizers_lock:
        if model not in _tokenizers:
            _tokenizers[model] = Tokenizer.from_file(resolve_checkpoint(model))
        return _tokenizers[model]


def shard_document(
    document: Document, tokenizer: Tokenizer, max_tokens: int | None, overlap_tokens: int
) -> list[Chunk]:
    """The document as one chunk when it fits `max_tokens` tokens (or is a chat request, or
    `max_tokens` is None), else as overlapping chunks of at most `max_tokens` tokens each."""
    text = document.text or ""
    whole = [Chunk(document, 0, 1, text, 0, len(text))]
    if document.is_chat or max_tokens is None:
        return whole
    offsets = tokenizer.backend.encode(text, add_special_tokens=False).offsets
    if len(offsets) <= max_tokens:
        return whole
    windows = token_windows(text, offsets, max_tokens, overlap_tokens)
    chunks = []
    for index, (start, end) in enumerate(windows):
        char_start, char_end = offsets[start][0], offsets[end - 1][1]
        if end == len(offsets):
            char_end = len(text)  # keep trailing characters the tokenizer does not cover
        if start == 0:
            char_start = 0
        chunks.append(
            Chunk(document, index, len(windows), text[char_start:char_end], char_start, char_end)
        )
    return chunks


def token_windows(
    text: str, offsets: list[tuple[int, int]], max_tokens: int, overlap_tokens: int
) -> list[tuple[int, int]]:
    """[start, end) token windows covering all tokens: each at most `max_tokens` long, the next
    starting `overlap_tokens` before the previous end. A window that does not reach the end
    is cut at the best break within its last eighth."""
    n = len(offsets)
    slack = max(max_tokens // 8, 1)
    windows: list[tuple[int, int]] = []
    start = 0
    while True:
        end = min(start + max_tokens, n)
        if end < n:
            end = _best_cut(text, offsets, max(end - slack, start + 1), end)
        windows.append((start, end))
        if end >= n:
            return windows
        start = max(end - overlap_tokens, start + 1)


def _best_cut(text: str, offsets: list[tuple[int, int]], lo: int, hi: int) -> int:
    """The cut in [lo, hi] (a chunk ends before token `cut`) with the strongest break before
    the next token: paragraph > line > sentence > none; the latest among equals."""
    best, best_score = hi, -1
    for cut in range(lo, hi + 1):
        score = _break_strength(text, offsets[cut][0])
        if score >= best_score:
            best, best_score = cut, score
    return best


def _break_strength(text: str, at: int) -> int:
    before = text[max(at - 2, 0) : at]
    if before.endswith("\n\n") or text.startswith("\n\n", at):
        return 3
    if before.endswith("\n") or text.startswith("\n", at):
        return 2
    if before[-1:] in (".", "!", "?") or before in (". ", "! ", "? "):
        return 1
    return 0
