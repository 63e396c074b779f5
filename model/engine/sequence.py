"""One request in flight: its prompt, the scheduler's marks, output so far and how it ended.

The model state of a sequence lives in the runner, keyed by `id`; a Sequence holds what the
engine and the scheduler decide with, and the future its caller waits on.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch

from flashbeam.model.engine.request import FinishReason, Request


@dataclass(eq=False)
class Sequence:
    id: int  # unique in its engine; the runner's key for the sequence's state
    request: Request
    prompt: list[int]
    max_tokens: int
    generator: torch.Generator
    arrival: int = 0  # submission stamp: the requests of one `generate` share one
    snapshot_points: list[int] = field(default_factory=list)  # prompt positions to cache
    branch_points: list[int] = field(default_factory=list)  # those later sequences restore
    restore_length: int = 0  # prompt tokens the plan expects to restore from the cache
    computed: int = 0  # prompt tokens whose effect is in the sequence's state
    cache_hit: int = 0
    output: list[int] = field(default_factory=list)
    text: str = ""
    detokenizer: Any = None
    grammar: Any = None
    pinned: Any = None  # cache handle of the snapshot it restored, until its first chunk
    overdue: bool = False  # overtaken by so many later arrivals that it is admitted first
    deadline: float | None = None  # time.monotonic() after which the request fails
    future: Future | None = None
    tally: Any = None  # the progress counters of the `generate` call it belongs to
    finish_reason: FinishReason | None = None
    error: str | None = None

    @property
    def prefilling(self) -> bool:
        return self.computed < len(self.prompt)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def last_token(self) -> int:
        return self.output[-1] if self.output else self.prompt[-1]

    @property
    def max_length(self) -> int:
        """Positions the sequence may reach: its prompt and every token it may generate."""
        return len(self.prompt) + self.max_tokens

    def finish(self, reason: FinishReason, error: str | None = None) -> None:
        if self.finish_reason is None:
            self.finish_reason, self.error = reason, error
