"""Requests in: prompt ids, limits and grammar state for each request, before it is scheduled.

Runs in the thread that submits, so tokenizing and compiling grammars overlap the engine's
steps. A request that cannot run comes out as a Sequence already finished with an error that
names the request and what to change.
"""

from __future__ import annotations

import threading

from flashbeam.model.engine.request import Request
from flashbeam.model.engine.sampling import make_generator
from flashbeam.model.engine.sequence import Sequence
from flashbeam.model.grammar.compiler import GrammarCompiler, GrammarError, GrammarState
from flashbeam.model.text.chat import ChatFormatError, encode_messages
from flashbeam.model.text.tokenizer import Tokenizer


class Intake:
    def __init__(self, tokenizer: Tokenizer, vocab_size: int, context: int) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.context = context
        self._grammars: GrammarCompiler | None = None
        self._lock = threading.Lock()  # the compiler's cache is shared by every submitter

    @property
    def grammars(self) -> GrammarCompiler:
        with self._lock:
            if self._grammars is None:
                json = self.tokenizer.backend.to_str()
                self._grammars = GrammarCompiler(json, self.tokenizer.eos_id, self.vocab_size)
            return self._grammars

    def sequence(self, seq_id: int, request: Request) -> Sequence:
        seq = Sequence(seq_id, request, [], 0, make_generator(request.seed, request.id))
        try:
            seq.prompt = self._prompt_ids(request)
            if not seq.prompt:
                raise ValueError("the prompt is empty")
            if len(seq.prompt) >= self.context:
                raise ValueError(
                    f"prompt has {len(seq.prompt)} tokens but the model's context is "
                    f"{self.context}; shorten the input or split it into chunks"
                )
            if request.max_tokens < 1:
                raise ValueError(f"max_tokens must be >= 1, got {request.max_tokens}")
            seq.max_tokens = min(request.max_tokens, self.context - len(seq.prompt))
            if request.stop_strings:  # the text is needed as it grows, to find them
                seq.detokenizer = self.tokenizer.incremental_decoder()
            if request.response_format and request.response_format.get("type") != "text":
                compiler = self.grammars
                with self._lock:
                    seq.grammar = GrammarState(
                        compiler.compile(request.response_format),
                        thinking=request.thinking_enabled,
                        max_tokens=seq.max_tokens,
                    )
        except (ChatFormatError, GrammarError, ValueError, TypeError) as e:
            seq.finish("error", f"request {request.id!r}: {e}")
        return seq

    def _prompt_ids(self, request: Request) -> list[int]:
        if request.prompt_token_ids is not None:
            bad = [t for t in request.prompt_token_ids if not 0 <= t < self.vocab_size]
            if bad:
                raise ValueError(f"prompt_token_ids contains ids outside the vocabulary: {bad[:5]}")
            return list(request.prompt_token_ids)
        if request.messages is None:
            raise ValueError("give either messages or prompt_token_ids")
        text = encode_messages(request.messages, thinking=request.thinking_enabled)
        return self.tokenizer.encode(text)
