"""The Engine: batched generation with continuous batching, chunked prefill and exact prefix reuse.

One `generate` call takes a whole batch of requests. Each step of the loop:
1. admits waiting sequences (in prefix-sharing order) up to `max_batch_size`, restoring the
   longest cached prefix state for each;
2. runs one decode token for every sequence that is generating, then spends the rest of the
   `max_batch_tokens` budget on prefill chunks, so a long prompt never stalls the others;
3. samples (grammar-masked where a response_format asks for it), checks stops, finishes.

The state exactly at the positions where another request in the batch diverges (and every
`snapshot_interval` tokens, and one token before each prompt's end) goes into the prefix cache,
taken inside the prefill chunk that passes it (`forward_step(keep_at=...)`), so snapshots do not
cut prefills into more chunks. Per-sequence state is immutable; the cache keeps a compact copy
(exactly the bytes it counts), and restoring it reproduces recomputation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .chat import ChatFormatError, encode_messages, parse_completion
from .checkpoint import load_model, resolve_checkpoint
from .decode import DecodeBatch
from .grammar import GrammarCompiler, GrammarError, GrammarState, apply_bitmask_, fill_bitmasks
from .network import Transformer
from .prefix_cache import PrefixCache
from .request import Request, Result, Usage
from .sampling import SamplingParams, make_generator, sample_next
from .scheduling import plan_prefix_reuse
from .sequence import Sequence
from .tokenizer import Tokenizer


@dataclass
class EngineProgress:
    """Counters passed to the `progress` callback after every step."""

    finished: int
    total: int
    prompt_tokens: int
    cached_tokens: int
    generated_tokens: int
    errors: int
    elapsed_s: float


class Engine:
    def __init__(
        self,
        model: Transformer,
        tokenizer: Tokenizer,
        max_batch_tokens: int = 2048,
        max_batch_size: int = 64,
        cache_bytes: int = 1 << 30,
        snapshot_interval: int = 1024,
        name: str = "model",
    ) -> None:
        if max_batch_tokens < 1 or max_batch_size < 1:
            raise ValueError("max_batch_tokens and max_batch_size must be >= 1")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.snapshot_interval = snapshot_interval
        self.cache = PrefixCache(cache_bytes)
        self.name = name
        self.context = model.config.max_position_embeddings
        self._grammars: GrammarCompiler | None = None
        self._batch: DecodeBatch | None = None  # generating sequences, packed (see _decode)
        self._rows: list[Sequence] = []
        # Prefixes that waiting requests of this batch plan to restore: count of such requests,
        # and the pinned cache handles of those already computed (see _snapshot).
        self._awaited: dict[tuple[int, ...], int] = {}
        self._held: dict[tuple[int, ...], object] = {}

    @classmethod
    def load(
        cls,
        path: str | Path = "tiny",
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        kv_quant_sim: bool | None = None,
        **options,
    ) -> Engine:
        """Load a checkpoint directory (or "tiny", the embedded default) with its tokenizer;
        `kv_quant_sim` as in `load_model`, the rest are the Engine's options."""
        directory = resolve_checkpoint(path)
        model = load_model(directory, device=device, dtype=dtype, kv_quant_sim=kv_quant_sim)
        tokenizer = Tokenizer.from_file(directory)
        return cls(model, tokenizer, name=str(path), **options)

    @property
    def grammars(self) -> GrammarCompiler:
        if self._grammars is None:
            json = self.tokenizer.backend.to_str()
            self._grammars = GrammarCompiler(
                json, self.tokenizer.eos_id, self.model.config.vocab_size
            )
        return self._grammars

    # ---- public ------------------------------------------------------------------------------
    def generate(
        self, requests: list[Request], progress: Callable[[EngineProgress], None] | None = None
    ) -> list[Result]:
        """Run every request to completion; results come back in request order.

        A request that cannot run (bad messages, prompt too long, schema the grammar engine
        rejects, a failure inside the model) gets `finish_reason="error"`; the rest proceed.
        """
        started = time.perf_counter()
        seqs = [self._prepare(i, r) for i, r in enumerate(requests)]
        live = [s for s in seqs if not s.finished]
        waiting = self._plan(live)
        running: list[Sequence] = []
        self._batch, self._rows = None, []
        try:
            with torch.inference_mode():
                while waiting or running:
                    waiting = self._admit_ready(waiting, running)
                    self._step(running)
                    for seq in running:
                        if seq.finished:
                            self._release(seq)
                    running = [s for s in running if not s.finished]
                    if progress is not None:
                        progress(self._progress(seqs, started))
        finally:
            self._batch, self._rows = None, []
            for handle in self._held.values():
                self.cache.unpin(handle)
            self._awaited, self._held = {}, {}
        return [self._result(s) for s in seqs]

    # ---- preparation ---------------------------------------------------------------------------
    def _prepare(self, index: int, request: Request) -> Sequence:
        seq = Sequence(index, request, [], 0, [], make_generator(request.seed, request.id))
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
                compiled = self.grammars.compile(request.response_format)
                seq.grammar = GrammarState(
                    compiled, thinking=request.thinking_enabled, max_tokens=seq.max_tokens
                )
        except (ChatFormatError, GrammarError, ValueError, TypeError) as e:
            seq.finish("error", f"request {request.id!r}: {e}")
        return seq

    def _prompt_ids(self, request: Request) -> list[int]:
        if request.prompt_token_ids is not None:
            bad = [t for t in request.prompt_token_ids if not 0 <= t < self.model.config.vocab_size]
            if bad:
                raise ValueError(f"prompt_token_ids contains ids outside the vocabulary: {bad[:5]}")
            return list(request.prompt_token_ids)
        if request.messages is None:
            raise ValueError("give either messages or prompt_token_ids")
        text = encode_messages(request.messages, thinking=request.thinking_enabled)
        return self.tokenizer.encode(text)

    def _plan(self, seqs: list[Sequence]) -> list[Sequence]:
        """Admission order (shared prefixes adjacent) and snapshot positions: where prompts in
        this batch diverge, every `snapshot_interval` tokens (for later batches), and one token
        before the end (a repeat of the same prompt, e.g. a retry, reuses all but one token)."""
        plan = plan_prefix_reuse([s.prompt for s in seqs])
        for seq, restore, branch in zip(seqs, plan.restore_lengths, plan.branch_points):
            n = len(seq.prompt)
            regular = range(self.snapshot_interval, n - 1, self.snapshot_interval)
            points = {*branch, *regular, n - 1} - {0}
            # A disabled cache stores nothing, so no snapshots are planned.
            seq.snapshot_points = sorted(points) if self.cache.capacity_bytes else []
            seq.restore_length = restore
            if restore:
                key = tuple(seq.prompt[:restore])
                self._awaited[key] = self._awaited.get(key, 0) + 1
        return [seqs[i] for i in plan.order]

    # ---- admission / release -------------------------------------------------------------------
    def _admit_ready(self, waiting: list[Sequence], running: list[Sequence]) -> list[Sequence]:
        """Admit waiting sequences in order while there is room, except those whose shared prefix
        a running sequence is still computing: they wait for its snapshot instead of redoing it.
        Producers run ahead of their consumers in the order, so no one waits forever."""
        still: list[Sequence] = []
        for i, seq in enumerate(waiting):
            if len(running) >= self.max_batch_size:
                return still + waiting[i:]
            if self._prefix_in_progress(seq, running):
                still.append(seq)
                continue
            self._admit(seq)
            running.append(seq)
        return still

    def _prefix_in_progress(self, seq: Sequence, running: list[Sequence]) -> bool:
        need = seq.restore_length
        if need == 0:
            return False
        shared = seq.prompt[:need]
        return any(
            r.prefilling and r.computed < need and r.prompt[:need] == shared for r in running
        )

    def _admit(self, seq: Sequence) -> None:
        match = self.cache.match(seq.prompt, max_length=len(seq.prompt) - 1)
        if match.snapshot is not None:
            seq.state, seq.computed, seq.cache_hit = match.snapshot, match.length, match.length
            seq.pinned = match.handle
            self.cache.pin(match.handle)
        else:
            seq.state = self.model.empty_state()
        if seq.restore_length:  # one consumer of a planned prefix fewer to hold it for
            key = tuple(seq.prompt[: seq.restore_length])
            self._awaited[key] -= 1
            if self._awaited[key] == 0 and key in self._held:
                self.cache.unpin(self._held.pop(key))

    def _release(self, seq: Sequence) -> None:
        if seq.pinned is not None:
            self.cache.unpin(seq.pinned)
            seq.pinned = None

    # ---- one step ------------------------------------------------------------------------------
    def _step(self, running: list[Sequence]) -> None:
        decoding = [s for s in running if not s.prefilling and not s.finished]
        budget = max(self.max_batch_tokens - len(decoding), 0)
        chunks: list[tuple[Sequence, int]] = []
        for seq in running:
            if seq.prefilling and not seq.finished and budget > 0:
                size = self._chunk_size(seq, budget)
                chunks.append((seq, size))
                budget -= size
        if decoding:
            self._decode(decoding)
        by_size: dict[int, list[Sequence]] = {}
        for seq, size in chunks:
            by_size.setdefault(size, []).append(seq)
        for size, group in by_size.items():
            self._prefill(group, size)

    def _chunk_size(self, seq: Sequence, budget: int) -> int:
        """Up to the prompt's end, within the step's token budget. With snapshots planned, a
        chunk that stops short of the end stops at a multiple of `snapshot_interval`, so
        sequences at equal progress keep equal chunk sizes and share forward passes; snapshots
        are taken inside the chunk (`keep_at`), which is not cut there."""
        end = min(len(seq.prompt), seq.computed + budget)
        if end < len(seq.prompt) and seq.snapshot_points:
            aligned = end // self.snapshot_interval * self.snapshot_interval
            if aligned > seq.computed:
                end = aligned
        return end - seq.computed

    def _prefill(self, group: list[Sequence], size: int) -> None:
        ids = torch.tensor(
            [s.prompt[s.computed : s.computed + size] for s in group], device=self.model.device
        )
        keep_at = [
            [p - seq.computed for p in seq.snapshot_points if 0 < p - seq.computed < size]
            for seq in group
        ]
        outcome = self._forward(group, ids, keep_at)
        for seq, _, kept in outcome:
            for state in kept:  # snapshots inside the chunk, in prompt order
                self._snapshot(seq, state)
            seq.computed += size
            if seq.computed in seq.snapshot_points:
                self._snapshot(seq, seq.state)
        self._emit([(seq, logits) for seq, logits, _ in outcome if not seq.prefilling])

    def _snapshot(self, seq: Sequence, state) -> None:
        """Cache the state after `state.length` prompt tokens. A prefix that requests of this
        batch still waiting to be admitted plan to restore stays pinned until the last of them
        is admitted: otherwise the snapshots that concurrent prefills insert meanwhile could
        evict it first."""
        prefix = seq.prompt[: state.length]
        handle = self.cache.insert(prefix, state.compact())
        key = tuple(prefix)
        if handle is not None and self._awaited.get(key) and key not in self._held:
            self.cache.pin(handle)
            self._held[key] = handle

    def _decode(self, group: list[Sequence]) -> None:
        """One token for every generating sequence, all in one `decode_step` over the packed
        batch (rows of finished sequences leave it, new generators join it)."""
        rows = self._sync_batch(group)
        ids = torch.tensor([[s.last_token] for s in rows], device=self.model.device)
        try:
            logits = self.model.decode_step(ids, self._batch)
        except Exception as e:  # noqa: BLE001 - the batch state is unusable after this
            for seq in rows:
                seq.finish("error", f"request {seq.request.id!r}: model failure in decode: {e}")
            self._batch, self._rows = None, []
            return
        self._emit([(seq, logits[i, -1]) for i, seq in enumerate(rows)])

    def _sync_batch(self, group: list[Sequence]) -> list[Sequence]:
        keep = [i for i, seq in enumerate(self._rows) if not seq.finished]
        joining = [seq for seq in group if seq.state is not None]
        parts = []
        if keep and len(keep) < len(self._rows):
            parts.append(self._batch.select(torch.tensor(keep, device=self.model.device)))
        elif keep:
            parts.append(self._batch)
        if joining:
            room = max(seq.max_tokens - len(seq.output) for seq in joining)
            states = [seq.state for seq in joining]
            parts.append(DecodeBatch.build(self.model, states, extra_tokens=room))
            for seq in joining:
                seq.state = None  # the batch owns it now
        self._rows = [self._rows[i] for i in keep] + joining
        self._batch = DecodeBatch.concat(parts) if parts else None
        return self._rows

    def _forward(self, group: list[Sequence], ids: torch.Tensor, keep_at: list[list[int]]):
        """Run the model for `group` -> (sequence, next-token logits, states kept inside the
        chunk at `keep_at`); on failure retry one by one so only the culprit fails."""
        states = [s.state for s in group]
        try:
            if any(keep_at):
                logits, states, kept = self.model.forward_step(
                    ids, states, last_only=True, keep_at=keep_at
                )
            else:
                logits, states = self.model.forward_step(ids, states, last_only=True)
                kept = [[] for _ in group]
        except Exception as e:  # noqa: BLE001 - a model failure ends the requests it hits only
            if len(group) == 1:
                group[0].finish("error", f"request {group[0].request.id!r}: model failure: {e}")
                return []
            return [
                out
                for i, seq in enumerate(group)
                for out in self._forward([seq], ids[i : i + 1], keep_at[i : i + 1])
            ]
        for seq, state in zip(group, states):
            seq.state = state
        return [(seq, logits[i, -1], kept[i]) for i, seq in enumerate(group)]

    # ---- sampling and stopping -----------------------------------------------------------------
    def _emit(self, outcome: list[tuple[Sequence, torch.Tensor]]) -> None:
        """Sample one token for each (sequence, next-token logits) pair, as one batch."""
        if not outcome:
            return
        seqs = [seq for seq, _ in outcome]
        logits = torch.stack([lg for _, lg in outcome]).float()
        try:
            self._mask_with_grammars(seqs, logits)
            params = [
                SamplingParams(
                    s.request.temperature, s.request.top_p, s.request.top_k, s.request.seed
                )
                for s in seqs
            ]
            tokens = sample_next(logits, params, [s.generator for s in seqs]).tolist()
        except Exception as e:  # noqa: BLE001 - isolate the request that failed
            if len(outcome) == 1:
                seqs[0].finish("error", f"request {seqs[0].request.id!r}: {e}")
            else:
                for pair in outcome:
                    self._emit([pair])
            return
        for seq, token in zip(seqs, tokens):
            try:
                self._accept(seq, token)
            except Exception as e:  # noqa: BLE001 - a grammar failure ends this request only
                seq.finish("error", f"request {seq.request.id!r}: {e}")

    def _mask_with_grammars(self, seqs: list[Sequence], logits: torch.Tensor) -> None:
        rows = [i for i, s in enumerate(seqs) if s.grammar is not None]
        if not rows:
            return
        words = (logits.shape[-1] + 31) // 32
        bitmask = torch.empty(len(rows), words, dtype=torch.int32)
        fill_bitmasks([seqs[i].grammar for i in rows], bitmask)
        sub = logits[rows]
        apply_bitmask_(sub, bitmask)
        logits[rows] = sub

    def _accept(self, seq: Sequence, token: int) -> None:
        if seq.grammar is not None:
            # Near the end of the budget the grammar may swap in a token of its closing plan.
            token = seq.grammar.advance(token)
            if seq.grammar.error:
                seq.finish("error", f"request {seq.request.id!r}: {seq.grammar.error}")
                return
        if token == self.tokenizer.eos_id and not seq.request.ignore_eos:
            self._finish_text(seq, "stop")
            return
        seq.output.append(token)
        if seq.detokenizer is not None and self._extend_text(seq, seq.detokenizer.add(token)):
            seq.finish("stop")
        elif seq.grammar is not None and seq.grammar.is_finished:
            self._finish_text(seq, "stop")
        elif len(seq.output) >= seq.max_tokens:
            self._finish_text(seq, "length")

    def _finish_text(self, seq: Sequence, reason) -> None:
        if seq.detokenizer is None:  # no stop strings: decode the output once, at the end
            seq.text = self.tokenizer.decode(seq.output)
        else:
            self._extend_text(seq, seq.detokenizer.flush())
        seq.finish(reason)

    def _extend_text(self, seq: Sequence, piece: str) -> bool:
        """Append a completed piece of text; True when a stop string now ends it (cut there)."""
        seq.text += piece
        for stop in seq.request.stop_strings:
            at = seq.text.find(stop)
            if stop and at >= 0:
                seq.text = seq.text[:at]
                return True
        return False

    # ---- results -------------------------------------------------------------------------------
    def _result(self, seq: Sequence) -> Result:
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

    def _progress(self, seqs: list[Sequence], started: float) -> EngineProgress:
        done = [s for s in seqs if s.finished]
        return EngineProgress(
            finished=len(done),
            total=len(seqs),
            prompt_tokens=sum(s.computed for s in seqs),
            cached_tokens=sum(s.cache_hit for s in seqs),
            generated_tokens=sum(len(s.output) for s in seqs),
            errors=sum(1 for s in done if s.finish_reason == "error"),
            elapsed_s=time.perf_counter() - started,
        )
