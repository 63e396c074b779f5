"""The typed records that flow between pipeline steps.

    Document --shard--> Chunk --prompt--> PromptRequest --engine--> RequestOutcome
      --reduce--> ItemResult --rows--> result row | ErrorRow (any step) --rows--> error row

An *item* is one output unit: a (document, question) pair. Every input record becomes its items,
and every item ends as exactly one result row or one error row.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from flashbeam.model.engine.request import Request, Usage

ItemKey = tuple[str, int]  # (document id, question index)


@dataclass(frozen=True)
class Origin:
    """Where a record came from: its id, the file, and the 1-based line (or Parquet row)."""

    id: str
    source: str
    line: int | None = None


@dataclass(frozen=True)
class Document:
    """A plain document (`text`) or a ready chat request (`messages` and `params`, OpenAI
    batch input)."""

    origin: Origin
    text: str | None = None
    messages: list[dict[str, Any]] | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def is_chat(self) -> bool:
        return self.messages is not None


@dataclass(frozen=True)
class Chunk:
    """Part `index` of `count` of a document: `text` is `document.text[char_start:char_end]`."""

    document: Document
    index: int
    count: int
    text: str
    char_start: int
    char_end: int


CONSTRAINT_LEVELS = ("exact", "relaxed", "none")  # tightest first


@dataclass
class ItemStats:
    """What an item has cost so far, summed over its parts, attempts and reduce rounds.

    `constraint` is the loosest grammar level any of its requests ran at (exact, relaxed, none;
    None for free text): the level its output can be trusted at before validation."""

    usage: Usage = field(default_factory=Usage)
    attempts: int = 0
    latency_s: float = 0.0
    chunk_count: int = 1
    parts_failed: int = 0
    constraint: str | None = None
    requests: int = 0  # engine requests behind the item (parts and reduce rounds)
    requests_reused: int = 0  # of which an earlier run's finished outcomes were reused

    def add(self, other: ItemStats) -> None:
        add_usage(self.usage, other.usage)
        self.attempts += other.attempts
        self.latency_s += other.latency_s
        self.parts_failed += other.parts_failed
        self.constraint = loosest(self.constraint, other.constraint)
        self.requests += other.requests
        self.requests_reused += other.requests_reused


def loosest(a: str | None, b: str | None) -> str | None:
    """The looser of two constraint levels (None: no schema, counts as nothing)."""
    known = [c for c in (a, b) if c is not None]
    return max(known, key=CONSTRAINT_LEVELS.index) if known else None


def add_usage(total: Usage, more: Usage) -> None:
    total.prompt_tokens += more.prompt_tokens
    total.prompt_cache_hit_tokens += more.prompt_cache_hit_tokens
    total.prompt_cache_miss_tokens += more.prompt_cache_miss_tokens
    total.completion_tokens += more.completion_tokens


@dataclass(frozen=True)
class PromptRequest:
    """One engine request and what the pipeline needs to know about it.

    `level` is 0 for a request over a document or chunk and r >= 1 for reduce round r;
    `final` says its output is the item's output (not a part to reduce). `shared_chars` is the
    length of the prompt text shared with the item's other requests (system + document), used
    for the prefix fingerprint. `input_text` is the text the request is about, for error rows.
    `carry` holds the stats of earlier levels (on one request per item and level only), and
    `merged` (on the same request, prompt-mode reduce only) the values of the `reduce.rules`
    fields merged from the map outputs, which replace the model's in the final output.
    `schema_source` names the schema outputs are held to and validated against: the task's,
    the parts' (`reduce.part_schema`), the request's own `response_format`, or none (free text).
    `source_text` is the text `task.grounded` fields copy from when it is not `input_text`.
    """

    item: ItemKey
    origin: Origin
    request: Request
    shared_chars: int
    input_text: str
    chunk_index: int = 0
    chunk_count: int = 1
    char_start: int = 0
    level: int = 0
    final: bool = True
    schema_source: str = "task"  # "task" | "part" | "request" | "none"
    carry: ItemStats | None = None
    source_text: str | None = None
    merged: dict[str, Any] | None = None

    @property
    def grounding_text(self) -> str:
        return self.input_text if self.source_text is None else self.source_text


@dataclass
class RequestOutcome:
    """A PromptRequest after generation, validation and retries.

    `usage` and `latency_s` sum over all attempts (latency: wall time of the engine calls the
    request took part in). `value` is the parsed JSON (schema jobs); `text` the final output.
    `constraint` is the level the grammar enforced the schema at (None for free text).
    `reused`: an earlier run's finished outcome, not computed by this run (`pipelines.resume`).
    """

    prompt: PromptRequest
    valid: bool
    attempts: int
    errors: list[str]
    value: Any
    text: str
    reasoning_content: str | None
    finish_reason: str
    usage: Usage
    latency_s: float
    model: str
    constraint: str | None = None
    reused: bool = False

    @property
    def failed(self) -> bool:
        """Failed outputs end as error rows (a truncated free-text output is not a failure)."""
        return not self.valid and not (
            self.prompt.schema_source == "none" and self.finish_reason == "length"
        )

    def stats(self) -> ItemStats:
        return ItemStats(
            usage=Usage(**asdict(self.usage)),
            attempts=self.attempts,
            latency_s=self.latency_s,
            chunk_count=self.prompt.chunk_count,
            constraint=self.constraint,
            requests=1,
            requests_reused=int(self.reused),
        )


@dataclass
class ItemResult:
    """The final output of one item, ready to become a result row."""

    origin: Origin
    question_index: int
    value: Any
    text: str
    reasoning_content: str | None
    valid: bool
    finish_reason: str
    model: str
    stats: ItemStats


@dataclass
class ErrorRow:
    """One row of the errors table: which record (and item), at which step, and why."""

    id: str
    stage: str  # read | shard | prompt | engine | validate | reduce | write
    reason: str
    source: str
    line: int | None
    input: str
    question_index: int | None = None
    output: str | None = None
    finish_reason: str | None = None
    model: str | None = None
    stats: ItemStats | None = None  # what the item cost before it failed (None: never ran)

    @classmethod
    def for_record(cls, origin: Origin, stage: str, reason: str, input: str) -> ErrorRow:
        return cls(origin.id, stage, reason, origin.source, origin.line, input)
