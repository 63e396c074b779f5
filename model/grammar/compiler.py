"""Grammar-constrained decoding with llguidance: compile `response_format`, mask logits per step.

`compile` never refuses a valid schema: refs are bundled (model/schema_refs.py) and the schema
gets the tightest constraint level the grammar engine accepts (model/constraint.py: exact,
relaxed or none), which the compiled grammar carries with the relaxed paths. A response_format
that asks for `"constraint": "exact"` in its `json_schema` is refused when exact is out of reach.

The engine's sampling step uses three things from here:

    compiler = GrammarCompiler(tokenizer_json, eos_id, vocab_size=model_vocab)   # once per engine
    state = GrammarState(compiler.compile(request.response_format), thinking=..., max_tokens=...)
    fill_bitmasks(states, bitmask); apply_bitmask_(logits, bitmask)
    token = state.advance(sampled_token)        # may steer to a shorter closing token, see below

Budget steering. A weak or verbose model that runs out of `max_tokens` mid-object leaves
truncated JSON. Each state keeps a *closing plan* (`closing`): tokens that take the current
prefix to a complete, grammar-accepted output. Once the remaining budget comes within reach of the
plan (the "window"), each sampled token is checked: it is kept only if a plan from the state after
it still fits the remaining budget; otherwise the next plan token is committed instead and the
state follows its plan to the end (its mask becomes one-hot). "A plan that fits exists" then holds
at every step, so the output ends complete whenever the plan found at the start fits `max_tokens`
(`CompiledGrammar.min_tokens`).
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import llguidance
import numpy as np
import torch
from tokenizers import Tokenizer as HFTokenizer

# In place: disallowed logits (and padding past the mask) -> -inf; Triton on CUDA, torch otherwise.
from flashbeam.kernels import apply_token_bitmask_ as apply_bitmask_
from flashbeam.model.grammar.closing import JsonDepth, PlanVocab, closing_plan, sample_strings
from flashbeam.model.grammar.constraint import ConstraintPlan, plan_bounded
from flashbeam.model.grammar.refs import RefError, bundle_refs, subschemas

__all__ = [
    "CompiledGrammar",
    "GrammarCompiler",
    "GrammarError",
    "GrammarState",
    "allocate_bitmask",
    "apply_bitmask_",
    "canonical_hash",
    "fill_bitmasks",
    "subschemas",
]

THINK_END = "</think>"
CONSTRAINTS = ("auto", "exact")  # what a response_format may ask for
_PLAN_LIMIT = 4096  # longest closing plan searched for at compile time
# Outside the window (remaining budget > plan + _SLACK) the plan is refreshed every
# _REPLAN_EVERY tokens; the slack covers how much the plan can grow in between.
_REPLAN_EVERY = 8
_SLACK = 48


class GrammarError(ValueError):
    """A response_format that cannot be compiled for constrained decoding."""


class _Vocab:
    """What every grammar of one tokenizer shares: the llguidance tokenizer and special ids."""

    def __init__(self, tokenizer: str | HFTokenizer, eos_id: int, vocab_size: int | None):
        hf = HFTokenizer.from_str(tokenizer) if isinstance(tokenizer, str) else tokenizer
        self.n_tokens = hf.get_vocab_size(with_added_tokens=True)
        self.n_vocab = vocab_size or self.n_tokens
        if self.n_vocab < self.n_tokens:
            raise ValueError(f"vocab_size {self.n_vocab} < tokenizer vocabulary {self.n_tokens}")
        self.eos_id = eos_id
        self.think_end_id = hf.token_to_id(THINK_END)
        try:
            self.lltok = llguidance.LLTokenizer(hf.to_str(), n_vocab=self.n_vocab, eos_token=eos_id)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # llguidance panics (a BaseException) on some vocabularies
            raise ValueError(f"llguidance cannot use this tokenizer: {e}") from None
        self.words = (self.n_vocab + 31) // 32
        # Thinking rows: any real token but EOS (the answer must follow); padding rows never.
        allowed = np.zeros(self.words * 32, dtype=bool)
        allowed[: self.n_tokens] = True
        allowed[eos_id] = False
        self.free_row = torch.from_numpy(_pack_bits(allowed))
        self.plan = PlanVocab(self.lltok, self.n_tokens, eos_id)

    def one_hot(self, token: int) -> torch.Tensor:
        row = torch.zeros(self.words, dtype=torch.int32)
        bit = 1 << (token % 32)
        row[token // 32] = bit - (1 << 32) if bit >= 1 << 31 else bit
        return row


def _pack_bits(allowed: np.ndarray) -> np.ndarray:
    return np.packbits(allowed, bitorder="little").view(np.int32)


def canonical_hash(obj: Any) -> str:
    """sha256 of the sorted-keys, compact JSON form: equal schemas share one compiled grammar."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class CompiledGrammar:
    """One compiled response_format; shared by every sequence that uses the same schema.

    `plan` holds the constraint level the schema got and what was relaxed to get it."""

    key: str
    name: str
    plan: ConstraintPlan
    vocab: _Vocab = field(repr=False)
    matcher: Any = field(repr=False)  # fresh llguidance.LLMatcher; sequences deep-copy it
    start_plan: tuple[int, ...] = field(repr=False)
    samples: tuple[bytes, ...] = field(repr=False)  # string contents for closing plans

    @property
    def level(self) -> str:
        """exact | relaxed | none: how much of the schema the grammar enforces."""
        return self.plan.level

    @property
    def relaxed(self) -> tuple[str, ...]:
        """The relaxed keywords and subschemas, each as `path: change (reason)`."""
        return self.plan.relaxed

    @property
    def warnings(self) -> tuple[str, ...]:
        return self.plan.warnings

    @property
    def grammar(self) -> str:
        return self.plan.grammar

    @property
    def min_tokens(self) -> int:
        """Tokens of the shortest complete output found (0 when none was found)."""
        return len(self.start_plan)


class GrammarCompiler:
    """Compiles response formats for one tokenizer, caching by canonical schema hash.

    The cache keeps the `cache_size` most recently used grammars: a job whose requests each
    carry their own schema (grounded fields) must not grow it without bound.

    `tokenizer` is a tokenizer.json string or a `tokenizers.Tokenizer`; `vocab_size` is the model's
    logits width when it pads the vocabulary (padding ids are never allowed). Each schema gets
    `compile_budget_s` seconds of compilation over all its levels and grammars of at most
    `max_grammar_size` symbols from schemas of at most `max_schema_bytes` bytes; past a bound it
    drops to the next level, the reason recorded.
    """

    def __init__(
        self,
        tokenizer: str | HFTokenizer,
        eos_id: int,
        vocab_size: int | None = None,
        *,
        cache_size: int = 256,
        compile_budget_s: float = 5.0,
        max_schema_bytes: int = 1 << 20,
        max_grammar_size: int = 500_000,
    ):
        self.vocab = _Vocab(tokenizer, eos_id, vocab_size)
        self.cache_size = cache_size
        self.compile_budget_s = compile_budget_s
        self.max_schema_bytes = max_schema_bytes
        self.limits = llguidance.LLParserLimits(max_grammar_size=max_grammar_size)
        self._cache: OrderedDict[str, CompiledGrammar] = OrderedDict()

    def compile(self, response_format: dict[str, Any]) -> CompiledGrammar:
        name, schema, constraint = _schema_of(response_format)
        key = canonical_hash(schema)
        if key in self._cache:
            self._cache.move_to_end(key)
        else:
            self._cache[key] = self._compile(name, schema, key)
            while len(self._cache) > max(self.cache_size, 1):
                self._cache.popitem(last=False)
        compiled = self._cache[key]
        if constraint == "exact" and compiled.level != "exact":
            raise GrammarError(compiled.plan.exact_refusal(name))
        return compiled

    def _compile(self, name: str, schema: Any, key: str) -> CompiledGrammar:
        try:
            schema = bundle_refs(schema, where=f'schema "{name}"')
        except RefError as e:
            raise GrammarError(str(e)) from None
        plan, steering = plan_bounded(
            schema, self._check, budget_s=self.compile_budget_s,
            max_bytes=self.max_schema_bytes, then=self._start_plan,
        )  # fmt: skip
        # Past the bound only the closing plan is missing: the grammar holds, steering is off.
        samples, start = steering or (sample_strings(plan.schema, subschemas), [])
        return CompiledGrammar(key, name, plan, self.vocab, plan.payload, tuple(start), samples)

    def _check(self, grammar: str) -> tuple[str, Any]:
        matcher = llguidance.LLMatcher(self.vocab.lltok, grammar, log_level=0, limits=self.limits)
        return (matcher.get_error() if matcher.is_error() else ""), matcher

    def _start_plan(self, plan: ConstraintPlan) -> tuple[tuple[bytes, ...], list[int]]:
        """The strings closing plans may use, and the shortest closing plan from the start
        (searched on a copy of the matcher)."""
        samples = sample_strings(plan.schema, subschemas)
        matcher = plan.payload.deep_copy()
        start = closing_plan(matcher, JsonDepth(), self.vocab.plan, _PLAN_LIMIT, samples) or []
        return samples, start


def _schema_of(response_format: dict[str, Any]) -> tuple[str, Any, str]:
    """(name, schema, constraint asked for) of a response_format."""
    kind = (response_format or {}).get("type")
    if kind == "json_object":
        return "json_object", {"type": "object"}, "auto"
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        if "schema" not in spec:
            raise GrammarError("response_format json_schema needs a 'schema'")
        constraint = spec.get("constraint", "auto")
        if constraint not in CONSTRAINTS:
            raise GrammarError(
                f"response_format json_schema constraint {constraint!r} is not one of "
                f"{', '.join(CONSTRAINTS)}"
            )
        return spec.get("name", "schema"), spec["schema"], constraint
    raise GrammarError(
        f"response_format type {kind!r} is not supported; use 'json_schema' or 'json_object'"
    )


class GrammarState:
    """One sequence's position in its grammar.

    With `thinking=True` tokens are free (except EOS) until `</think>`, then the grammar applies.
    `max_tokens` (all generated tokens, thinking included) turns on budget steering.
    """

    def __init__(
        self, compiled: CompiledGrammar, *, thinking: bool = False, max_tokens: int | None = None
    ):
        self.compiled = compiled
        self.vocab = compiled.vocab
        self.matcher = compiled.matcher.deep_copy()
        if thinking and self.vocab.think_end_id is None:
            raise GrammarError(f"thinking needs a {THINK_END} token, and the tokenizer has none")
        self.thinking = thinking
        self.max_tokens = max_tokens
        self.n_tokens = 0
        self.closing = False  # out of budget for anything but the plan: follow it to the end
        self._scan = JsonDepth()
        # The closing plan from the current state; stale after a token we did not check.
        self._plan = [self.vocab.think_end_id] * self.thinking + list(compiled.start_plan)
        self._plan_fresh = bool(compiled.start_plan)
        self._steering = max_tokens is not None and bool(compiled.start_plan)
        self._since_plan = 0

    @property
    def is_finished(self) -> bool:
        """The output is complete: the grammar accepted and nothing but EOS may follow."""
        return not self.thinking and self.matcher.is_stopped() and not self.matcher.is_error()

    @property
    def error(self) -> str | None:
        if not self.matcher.is_error():
            return None
        return self.matcher.get_error() or "token rejected by the grammar"

    @property
    def remaining(self) -> int | None:
        return None if self.max_tokens is None else self.max_tokens - self.n_tokens

    def advance(self, token: int) -> int:
        """Commit the sampled token and return the token actually committed: the sampled one, or
        the next closing-plan token when keeping the sampled one would leave no room to finish."""
        if self._steering and not self.is_finished:
            token = self._steer(token)
            if self._plan and self._plan[0] == token:
                self._plan.pop(0)
            else:
                self._plan_fresh = False
        self.n_tokens += 1
        if self.thinking:
            self.thinking = token != self.vocab.think_end_id
            return token
        self.matcher.consume_token(token)
        self._scan.feed(self.vocab.lltok.decode_bytes([token]))
        return token

    def _steer(self, token: int) -> int:
        if not self._plan:
            return token
        if self.closing:
            return self._plan[0]
        remaining = self.remaining
        self._since_plan += 1
        stale_in_window = remaining <= len(self._plan) + _SLACK
        if not self._plan_fresh and (stale_in_window or self._since_plan >= _REPLAN_EVERY):
            self._refresh(remaining)
            if not self._steering:
                return token
        if remaining > len(self._plan) + _SLACK or token == self._plan[0]:
            return token
        # In the window: keep the token only if some plan still fits after it.
        if len(self._plan) < remaining and self._completes(token, self._plan):
            after = self._plan
        else:
            after = self._plan_after(token, remaining - 1)
        if after is None:
            self.closing = True
            return self._plan[0]
        self._plan = [token, *after]
        return token

    def _refresh(self, remaining: int) -> None:
        """Make the plan fresh for the current state: keep it if it still finishes, else replan;
        when nothing fits the budget any more, stop steering."""
        if len(self._plan) > remaining or not self._completes(None, self._plan):
            plan = self._plan_from(self.matcher, self._scan, remaining)
            if plan is None:
                self._steering, self._plan = False, []
                return
            self._plan = plan
        self._plan_fresh, self._since_plan = True, 0

    def _completes(self, token: int | None, plan: list[int]) -> bool:
        """Whether `plan` finishes the output from this state, after `token` if given."""
        if self.thinking:
            return plan[:1] == [self.vocab.think_end_id] and token != self.vocab.eos_id
        m = self.matcher.deep_copy()
        if token is not None and not m.consume_token(token):
            return False
        return m.consume_tokens(plan) and m.is_stopped() and not m.is_error()

    def _plan_after(self, token: int, limit: int) -> list[int] | None:
        if self.thinking:  # a thinking token leaves the grammar where it was
            return None if token == self.vocab.eos_id else self._plan_from(None, None, limit)
        m = self.matcher.deep_copy()
        if not m.consume_token(token):
            return None
        return self._plan_from(
            m, self._scan.copy().feed(self.vocab.lltok.decode_bytes([token])), limit
        )

    def _plan_from(self, matcher, scan: JsonDepth, limit: int) -> list[int] | None:
        if self.thinking:
            plan = [self.vocab.think_end_id, *self.compiled.start_plan]
            return plan if len(plan) <= limit else None
        return closing_plan(matcher, scan, self.vocab.plan, limit, self.compiled.samples)

    def mask_row(self) -> torch.Tensor | None:
        """This step's row when llguidance need not compute it (thinking or closing), else None."""
        if self.closing and self._plan:
            return self.vocab.one_hot(self._plan[0])
        if self.thinking:
            return self.vocab.free_row
        return None


@cache
def _executor() -> llguidance.LLExecutor:
    return llguidance.LLExecutor()


def allocate_bitmask(batch: int, vocab_size: int) -> torch.Tensor:
    """An int32 [batch, ceil(vocab_size / 32)] CPU tensor (pinned when CUDA is there).

    Written here rather than taken from `llguidance.torch`, whose import pulls in
    `torch.compile` (2.6 s of start-up in every process, for a kernel this engine does not
    use: `apply_bitmask_` masks the logits)."""
    shape = (batch, (vocab_size + 31) // 32)
    if torch.cuda.is_available():
        try:
            return torch.full(shape, -1, dtype=torch.int32, pin_memory=True)
        except RuntimeError:  # no pinnable memory (e.g. a container's locked-memory limit)
            pass
    return torch.full(shape, -1, dtype=torch.int32)


def fill_bitmasks(states: list[GrammarState | None], bitmask: torch.Tensor) -> None:
    """Write next-token masks for a batch into `bitmask` (int32 [B, ceil(V/32)], CPU, contiguous):
    bit `t % 32` of word `t // 32` set means token t is allowed. Rows of None states allow all.
    Grammar rows are computed by llguidance in parallel threads, outside the GIL."""
    if bitmask.dtype != torch.int32 or bitmask.device.type != "cpu" or not bitmask.is_contiguous():
        raise ValueError("bitmask must be a contiguous int32 CPU tensor")
    pairs = []
    for i, state in enumerate(states):
        if state is None:
            bitmask[i] = -1
            continue
        if bitmask.shape[1] != state.vocab.words:
            raise ValueError(
                f"bitmask has {bitmask.shape[1]} words, grammar needs {state.vocab.words}"
            )
        row = state.mask_row()
        if row is None:
            pairs.append((state.matcher, i))
        else:
            bitmask[i] = row
    if pairs:
        rows, words = bitmask.shape  # llguidance checks each row index against `rows`
        _executor().unsafe_compute_mask_ptr(pairs, bitmask.data_ptr(), words * 4, rows)
