"""What a sequence emits: next tokens sampled under grammar masks, stop checks, its Result.

Each row samples with its request's own generator and row-wise operations only, so a seeded
request draws the same tokens whatever else is in the batch.
"""

from __future__ import annotations

import torch

from flashbeam.model.engine.request import Result, Usage
from flashbeam.model.engine.sampling import SamplingParams, sample_next
from flashbeam.model.engine.sequence import Sequence
from flashbeam.model.grammar.compiler import apply_bitmask_, fill_bitmasks
from flashbeam.model.text.chat import parse_completion
from flashbeam.model.text.tokenizer import Tokenizer


def next_tokens(seqs: list[Sequence], logits: torch.Tensor) -> list[int]:
    """One token per sequence from its next-token logits [B, V] (masked by its grammar)."""
    logits = logits.float()
    _mask_with_grammars(seqs, logits)
    params = [
        SamplingParams(s.request.temperature, s.request.top_p, s.request.top_k, s.request.seed)
        for s in seqs
    ]
    return sample_next(logits, params, [s.generator for s in seqs]).tolist()


def _mask_with_grammars(seqs: list[Sequence], logits: torch.Tensor) -> None:
    rows = [i for i, s in enumerate(seqs) if s.grammar is not None]
    if not rows:
        return
    words = (logits.shape[-1] + 31) // 32
    bitmask = torch.empty(len(rows), words, dtype=torch.int32)
    fill_bitmasks([seqs[i].grammar for i in rows], bitmask)
    sub = logits[rows]
    apply_bitmask_(sub, bitmask)
    logits[rows] = sub


def accept(seq: Sequence, token: int, tokenizer: Tokenizer) -> None:
    """Append a sampled token (or the grammar's replacement) and finish the sequence when it
    reaches EOS, a stop string, the end of its grammar or `max_tokens`."""
    if seq.grammar is not None:
        # Near the end of the budget the grammar may swap in a token of its closing plan.
        token = seq.grammar.advance(token)
        if seq.grammar.error:
            seq.finish("error", f"request {seq.request.id!r}: {seq.grammar.error}")
            return
    if token == tokenizer.eos_id and not seq.request.ignore_eos:
        _finish_text(seq, "stop", tokenizer)
        return
    seq.output.append(token)
    if seq.detokenizer is not None and _extend_text(seq, seq.detokenizer.add(token)):
        seq.finish("stop")
    elif seq.grammar is not None and seq.grammar.is_finished:
        _finish_text(seq, "stop", tokenizer)
    elif len(seq.output) >= seq.max_tokens:
        _finish_text(seq, "length", tokenizer)


def _finish_text(seq: Sequence, reason, tokenizer: Tokenizer) -> None:
    if seq.detokenizer is None:  # no stop strings: decode the output once, at the end
        seq.text = tokenizer.decode(seq.output)
    else:
        _extend_text(seq, seq.detokenizer.flush())
    seq.finish(reason)


def _extend_text(seq: Sequence, piece: str) -> bool:
    """Append a completed piece of text; True when a stop string now ends it (cut there)."""
    seq.text += piece
    for stop in seq.request.stop_strings:
        at = seq.text.find(stop)
        if stop and at >= 0:
            seq.text = seq.text[:at]
            return True
    return False


def result_of(seq: Sequence) -> Result:
    hit = seq.cache_hit
    usage = Usage(len(seq.prompt), hit, len(seq.prompt) - hit, len(seq.output))
    result = Result(seq.request.id, token_ids=list(seq.output), usage=usage)
    result.finish_reason = seq.finish_reason or "error"
    result.error = seq.error
    result.constraint = seq.grammar.compiled.level if seq.grammar is not None else None
    if seq.finish_reason == "error":
        return result
    parsed = parse_completion(seq.text, thinking=seq.request.thinking_enabled)
    result.text, result.reasoning_content = parsed.content, parsed.reasoning_content
    return result
