"""Prefix keys and engine batches: requests that share a prompt prefix go to one engine call.

A request's key is a fingerprint of its shared prompt prefix (system + document, see
`prompts.shared_prefix_chars`) in tokens, cut down to a whole number of `block_tokens` blocks:
the engine's prefix cache reuses state at block granularity, and the cut keeps the key stable
when the token at the boundary merges differently with different questions. A shared prefix
shorter than one block is keyed by its exact text instead.

Within a key, requests with the very same shared prefix stay together when the key's
requests are split into groups of bounded size. (A long system prompt with short documents puts
many documents under one key: its groups still keep each document together, and the groups are
spread over workers after the grouping.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from itertools import groupby

from flashbeam.model.text.tokenizer import Tokenizer

from .prompts import prompt_text
from .records import PromptRequest


def prefix_keys(prompt: PromptRequest, tokenizer: Tokenizer, block_tokens: int) -> tuple[str, str]:
    """(block-aligned prefix fingerprint, exact shared-prefix fingerprint) of one request."""
    text = prompt_text(prompt.request)
    shared_text = text[: prompt.shared_chars]
    exact = _digest(shared_text.encode("utf-8"))
    encoding = tokenizer.backend.encode(text, add_special_tokens=False)
    shared_tokens = 0
    for _, end in encoding.offsets:
        if end > prompt.shared_chars:
            break
        shared_tokens += 1
    aligned = shared_tokens // block_tokens * block_tokens
    if aligned == 0:
        return "t" + exact, exact
    ids = encoding.ids[:aligned]
    return "b" + _digest(b"".join(i.to_bytes(4, "little") for i in ids)), exact


def split_group(
    keyed: Iterable[tuple[str, PromptRequest]], max_requests: int
) -> list[list[PromptRequest]]:
    """The requests of one key (with their exact-prefix fingerprints) as groups of at most
    `max_requests`, ordered so that requests with the same exact prefix are adjacent and, as far
    as the size allows, in the same group. Deterministic for the same input."""
    ordered = sorted(keyed, key=lambda pair: (pair[0], pair[1].request.id))
    groups: list[list[PromptRequest]] = []
    current: list[PromptRequest] = []
    for _, run in groupby(ordered, key=lambda pair: pair[0]):
        same = [prompt for _, prompt in run]
        if current and len(current) + len(same) > max_requests:
            groups.append(current)
            current = []
        while len(same) > max_requests:
            groups.append(same[:max_requests])
            same = same[max_requests:]
        current.extend(same)
    if current:
        groups.append(current)
    return groups


def scatter_key(prompt: PromptRequest) -> str:
    """An ordering key that ignores the prompt: a hash of the request id."""
    return _digest(prompt.request.id.encode("utf-8"))


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=12).hexdigest()
