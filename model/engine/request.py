"""Request and Result: what callers hand the Engine and what they get back.

Field names follow the DeepSeek / OpenAI chat API so a hosted-API request body maps one to one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

FinishReason = Literal["stop", "length", "error"]


@dataclass
class Request:
    """One generation request.

    Give either `messages` (chat turns, encoded with the V4 chat format) or `prompt_token_ids`.
    `thinking={"type": "enabled"}` opens a `<think>` block whose text goes to
    `Result.reasoning_content`; batch work defaults to disabled.
    `response_format` is `{"type": "json_object"}` or
    `{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}`. The grammar enforces
    as much of the schema as it can (`Result.constraint`); add `"constraint": "exact"` to
    `json_schema` to have a schema it cannot enforce whole refused instead.
    """

    id: str
    messages: list[dict[str, Any]] | None = None
    prompt_token_ids: list[int] | None = None
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: list[str] | str | None = None
    thinking: dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    ignore_eos: bool = False  # keep generating through EOS (benchmarks want fixed lengths)

    @property
    def thinking_enabled(self) -> bool:
        return bool(self.thinking) and self.thinking.get("type") == "enabled"

    @property
    def stop_strings(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


@dataclass
class Usage:
    prompt_tokens: int = 0
    prompt_cache_hit_tokens: int = 0
    prompt_cache_miss_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Result:
    """The outcome of one Request; `finish_reason="error"` carries a message in `error`.

    `constraint` is how much of the request's response_format the grammar enforced: "exact",
    "relaxed" or "none" (model/constraint.py); None without a response_format.
    """

    id: str
    text: str = ""
    reasoning_content: str | None = None
    token_ids: list[int] = field(default_factory=list)
    finish_reason: FinishReason = "stop"
    error: str | None = None
    usage: Usage = field(default_factory=Usage)
    constraint: str | None = None
