"""One request in flight: its prompt, model state, output so far and how it ended."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .cache import SequenceState
from .request import FinishReason, Request


@dataclass
class Sequence:
    index: int  # position in the caller's request list
    request: Request
    prompt: list[int]
    max_tokens: int
    snapshot_points: list[int]  # prompt positions whose state goes into the prefix cache
    generator: torch.Generator
    state: SequenceState | None = None
    restore_length: int = 0  # prompt tokens the batch plan expects to restore from the cache
    computed: int = 0  # prompt tokens whose effect is in `state`
    cache_hit: int = 0
    output: list[int] = field(default_factory=list)
    text: str = ""
    detokenizer: Any = None
    grammar: Any = None
    pinned: Any = None  # prefix-cache handle of the snapshot this sequence restored
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

    def finish(self, reason: FinishReason, error: str | None = None) -> None:
        if self.finish_reason is None:
            self.finish_reason, self.error = reason, error
            self.state = None  # free the per-layer state as soon as the sequence is done
