"""Closing plans for budget steering: a short token sequence that finishes a grammar's output.

`closing_plan` rolls a copy of an llguidance matcher forward greedily: it takes the grammar's
forced tokens as they come, prefers tokens that close strings and containers (the depth of a
small JSON scanner), and otherwise steps toward a state where a closer fits: a comma outside
strings (a required key or item is due), a sample string for the schema's patterns and formats
inside them, a one-token lookahead, and finally a rotation through the candidates so a rollout
cannot cycle on a few bytes. It is a heuristic search; `GrammarState` turns it into a guarantee
by checking, near the end of the budget, that a plan still fits after each sampled token.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np

try:
    from re import _parser as sre_parse  # Python >= 3.11
except ImportError:  # pragma: no cover - Python 3.10
    import sre_parse  # type: ignore[no-redef]

# Candidates, preferred in this order among tokens that leave the same depth; merged closers
# ('"}') win when they close more.
_FIRST = ['"', "}", "]", ",", ":", "1", "0", *"23456789", "n", "t", "f", "-", "[", "{", ".", "e"]
_MERGED = ['"}', '"]', "}}", "]}", "}]", "]]", '""', "[]", "{}", "null", "true", "false"]
_PRINTABLE = [chr(c) for c in range(32, 127)]
_LOOKAHEAD = 16  # candidates probed one token ahead once no closer has fit for a step
_MAX_STALL = 64  # steps without a closer before a rollout gives up
_MAX_SAMPLES = 32
FORMAT_SAMPLES = {
    "date": "2024-01-01", "date-time": "2024-01-01T00:00:00Z", "time": "00:00:00Z",
    "duration": "P1D", "email": "a@example.com", "hostname": "example.com", "ipv4": "127.0.0.1",
    "ipv6": "::1", "uri": "https://example.com", "uuid": "00000000-0000-4000-8000-000000000000",
}  # fmt: skip


class PlanVocab:
    """Single-token candidates of a tokenizer for closing rollouts."""

    def __init__(self, lltok, n_tokens: int, eos_id: int):
        self.lltok, self.n_tokens, self.eos_id = lltok, n_tokens, eos_id
        seen: set[int] = set()
        self.candidates: list[tuple[int, bytes]] = []
        for text in _FIRST + _MERGED + _PRINTABLE:
            ids = lltok.greedy_tokenize(text)
            if len(ids) == 1 and ids[0] not in seen and ids[0] < n_tokens:
                seen.add(ids[0])
                self.candidates.append((ids[0], text.encode()))
        self.closers = [(t, d) for t, d in self.candidates if any(b in d for b in b'"}]')]
        self.comma = next((t for t, d in self.candidates if d == b","), None)


class JsonDepth:
    """Open strings and containers of a JSON prefix: the rollout's distance-to-done estimate."""

    __slots__ = ("stack", "in_string", "escape", "text")

    def __init__(self) -> None:
        self.stack: list[int] = []
        self.in_string = False
        self.escape = False
        self.text = bytearray()  # the open string's content so far, as written (escaped)

    def copy(self) -> JsonDepth:
        other = JsonDepth()
        other.stack, other.in_string, other.escape = list(self.stack), self.in_string, self.escape
        other.text = bytearray(self.text)
        return other

    @property
    def depth(self) -> int:
        return len(self.stack) + self.in_string

    def feed(self, data: bytes) -> JsonDepth:
        for b in data:
            if self.in_string:
                if self.escape:
                    self.escape = False
                elif b == 0x5C:  # backslash
                    self.escape = True
                elif b == 0x22:
                    self.in_string = False
                    continue
                self.text.append(b)
            elif b == 0x22:
                self.in_string = True
                self.text = bytearray()
            elif b in (0x7B, 0x5B):  # { [
                self.stack.append(b)
            elif b in (0x7D, 0x5D) and self.stack:
                self.stack.pop()
        return self

    def depth_after(self, data: bytes) -> int:
        if len(data) > 1 or self.escape:
            return self.copy().feed(data).depth
        b = data[0]  # one byte: the common case, without a copy
        if self.in_string:
            return self.depth - (b == 0x22)
        if b in (0x22, 0x7B, 0x5B):
            return self.depth + 1
        return self.depth - (b in (0x7D, 0x5D) and bool(self.stack))


def closing_plan(
    matcher, scan: JsonDepth, vocab: PlanVocab, limit: int, samples: tuple = ()
) -> list[int] | None:
    """Tokens that take `matcher` to a finished output (EOS included when needed), or None if no
    plan of at most `limit` tokens was found. Works on copies; `matcher` is left as it was."""
    m, scan, plan = matcher.deep_copy(), scan.copy(), []
    stall = 0  # choices since the depth last went down
    while len(plan) < limit:
        if m.is_error():
            return None
        if m.is_stopped():
            return plan
        if m.is_accepting():
            plan.append(vocab.eos_id)
            return plan
        tokens = m.compute_ff_tokens()
        if not tokens:
            closer = _closer(m, scan, vocab)
            if closer is not None:
                tokens, stall = [closer], 0
            elif stall >= _MAX_STALL:
                return None
            else:
                tokens, stall = _step_toward_closer(m, scan, vocab, stall, samples), stall + 1
        if not m.consume_tokens(tokens):
            return None
        scan.feed(vocab.lltok.decode_bytes(tokens))
        plan.extend(tokens)
    return None


def _closer(m, scan: JsonDepth, vocab: PlanVocab) -> int | None:
    """The allowed candidate that lowers the depth most, if any."""
    depth, best = scan.depth, None
    for token, data in vocab.closers:
        if m.validate_tokens([token]) == 1:
            after = scan.depth_after(data)
            if after < depth and (best is None or after < best[0]):
                best = (after, token)
    return None if best is None else best[1]


def _step_toward_closer(m, scan: JsonDepth, vocab: PlanVocab, stall: int, samples) -> list[int]:
    depth = scan.depth
    if not scan.in_string and vocab.comma is not None and m.validate_tokens([vocab.comma]) == 1:
        return [vocab.comma]
    if scan.in_string and not scan.escape:
        for sample in samples:  # the rest of a sample the content so far begins, or a whole one
            rest = sample[len(scan.text) :] if sample.startswith(scan.text) else sample
            tokens = vocab.lltok.tokenize_bytes(rest) if rest else []
            if tokens and _leads_to_closer(m, scan, vocab, tokens):
                return tokens
    level, deeper = [], None
    for token, data in vocab.candidates:
        if m.validate_tokens([token]) != 1:
            continue
        if scan.depth_after(data) > depth:
            deeper = deeper or token
            continue
        if not stall:
            return [token]
        level.append(token)
        if len(level) <= _LOOKAHEAD and _leads_to_closer(m, scan, vocab, [token]):
            return [token]
    if level:
        return [level[stall % len(level)]]
    if deeper is not None:
        return [deeper]
    # No short candidate fits (say, a pattern of non-ASCII text): take the lowest allowed id.
    mask = np.frombuffer(m.compute_bitmask(), dtype=np.uint8)
    ids = np.flatnonzero(np.unpackbits(mask, bitorder="little")[: vocab.n_tokens])
    return [int(ids[0]) if len(ids) else vocab.eos_id]


def _leads_to_closer(m, scan: JsonDepth, vocab: PlanVocab, tokens: list[int]) -> bool:
    probe = m.deep_copy()
    if not probe.consume_tokens(tokens):
        return False
    return _closer(probe, scan.copy().feed(vocab.lltok.decode_bytes(tokens)), vocab) is not None


def sample_strings(schema, subschemas: Callable) -> tuple[bytes, ...]:
    """Short strings matching the schema's string patterns and formats, for closing strings;
    each as written between JSON quotes."""
    out, stack = [], [schema]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict):
            continue
        patterns = [node.get("pattern"), *(node.get("patternProperties") or {})]
        out.extend(s for p in patterns if isinstance(p, str) and (s := shortest_match(p)))
        if node.get("format") in FORMAT_SAMPLES:
            out.append(FORMAT_SAMPLES[node["format"]])
        stack.extend(s for _, s in subschemas(node))
    escaped = (json.dumps(t, ensure_ascii=False)[1:-1].encode() for t in dict.fromkeys(out))
    return tuple(e for e in escaped if e)[:_MAX_SAMPLES]


def shortest_match(pattern: str) -> str | None:
    """A short printable string matching `pattern` (Python regex syntax), or None."""
    try:
        text = _example(sre_parse.parse(pattern))
    except Exception:  # noqa: BLE001 - a regex we cannot read gets no sample
        return None
    return text if text is not None and text.isprintable() else None


_CHARS = "a0A_-. " + "".join(_PRINTABLE)
_CATEGORY = {
    "CATEGORY_DIGIT": str.isdigit, "CATEGORY_NOT_DIGIT": lambda c: not c.isdigit(),
    "CATEGORY_SPACE": str.isspace, "CATEGORY_NOT_SPACE": lambda c: not c.isspace(),
    "CATEGORY_WORD": lambda c: c.isalnum() or c == "_",
    "CATEGORY_NOT_WORD": lambda c: not (c.isalnum() or c == "_"),
}  # fmt: skip


def _example(items) -> str | None:
    parts = []
    for op, arg in items:
        name = op.name
        if name == "LITERAL":
            parts.append(chr(arg))
        elif name in ("NOT_LITERAL", "ANY", "IN", "CATEGORY"):
            parts.append(_char_for(name, arg))
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, _, sub = arg
            one = _example(sub)
            parts.append(None if one is None else one * low)
        elif name == "SUBPATTERN":
            parts.append(_example(arg[-1]))
        elif name == "ATOMIC_GROUP":
            parts.append(_example(arg))
        elif name == "BRANCH":
            options = [e for e in (_example(b) for b in arg[1]) if e is not None]
            parts.append(min(options, key=len) if options else None)
        elif name not in ("AT", "ASSERT", "ASSERT_NOT"):
            return None  # back-references and the like
        if parts and parts[-1] is None:
            return None
    return "".join(parts)


def _char_for(name: str, arg) -> str | None:
    if name == "NOT_LITERAL":
        test = lambda c: ord(c) != arg  # noqa: E731
    elif name == "ANY":
        return "a"
    elif name == "CATEGORY":
        test = _CATEGORY.get(arg.name)
    else:
        test = lambda c: _in_set(c, arg)  # noqa: E731
    return next((c for c in _CHARS if test and test(c)), None)


def _in_set(char: str, items) -> bool:
    negate = hit = False
    for op, arg in items:
        name = op.name
        if name == "NEGATE":
            negate = True
        elif name == "LITERAL":
            hit = hit or ord(char) == arg
        elif name == "RANGE":
            hit = hit or arg[0] <= ord(char) <= arg[1]
        elif name == "CATEGORY" and arg.name in _CATEGORY:
            hit = hit or _CATEGORY[arg.name](char)
    return hit != negate
