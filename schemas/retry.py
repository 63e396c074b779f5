"""Generate, validate, retry: every request ends as a ValidatedResult, valid or with its reasons.

With an engine that takes requests as they come (`submit_many(requests) -> [Future[Result]]`,
the Engine's continuous loop), each request's retry is submitted as soon as its previous attempt
fails validation, while the other requests are still running; an engine with only
`generate(list)` gets all of a round's failures in one call. A retry gets a new seed and the
next temperature of the schedule; an output cut at `max_tokens` gets a larger budget (capped);
with `feedback` the failed output and the validator's messages are appended to the chat as a
correction turn. Engine errors (`finish_reason="error"`) are not retried.

Every attempt is validated against the full schema, whatever constraint level the engine's
grammar enforced it at (`Result.constraint`: exact, relaxed or none), and the outcome carries
that level. `constraint="exact"` asks the engine to refuse a schema it cannot enforce whole.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol

from pydantic import ConfigDict, Field, with_config

from flashbeam.model.engine.request import Request, Result
from flashbeam.schemas.loading import response_format_for
from flashbeam.schemas.validate import SchemaValidator


class Generates(Protocol):
    """An engine: `generate(list)`, or `submit_many(list) -> list[Future[Result]]`."""

    def generate(self, requests: list[Request]) -> list[Result]: ...


@with_config(ConfigDict(extra="forbid"))
@dataclass(frozen=True)
class RetryPolicy:
    """How failed outputs are retried.

    Attempt 1 uses the request as given; attempt k >= 2 uses temperature
    `max(request.temperature, retry_temperatures[min(k - 2, len - 1)])` and a seed derived from
    the request's seed (or id) and k. `constrained=False` leaves requests without a
    `response_format` unconstrained (validation and retries still apply).
    """

    max_attempts: Annotated[int, Field(ge=1)] = 3
    retry_temperatures: Annotated[tuple[float, ...], Field(min_length=1)] = (0.7, 1.0)
    length_growth: Annotated[float, Field(ge=1)] = 2.0
    max_tokens_cap: Annotated[int, Field(ge=1)] = 8192
    feedback: bool = False
    constrained: bool = True

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not self.retry_temperatures or self.length_growth < 1:
            raise ValueError("retry_temperatures must not be empty and length_growth must be >= 1")


@dataclass
class ValidatedResult:
    """The outcome of one request after validation and retries."""

    id: str
    valid: bool
    attempts: int
    errors: list[str] = field(default_factory=list)  # the last validator messages; [] when valid
    value: Any = None  # the parsed JSON value of the final output (None when it did not parse)
    result: Result | None = None  # the engine's final Result
    constraint: str | None = None  # exact | relaxed | none: what the grammar enforced


def generate_validated(
    engine: Generates,
    requests: Sequence[Request],
    schema: Any,
    policy: RetryPolicy | None = None,
    *,
    constraint: str = "auto",
    on_final: Callable[[int, ValidatedResult], None] | None = None,
) -> list[ValidatedResult]:
    """Run `requests` on `engine`, validate each output against `schema` (any source
    `load_schema` accepts) and retry failures; one ValidatedResult per request, in order.
    Requests without a response_format get the schema's, asking for `constraint`.
    `on_final(i, outcome)` is called, in this thread, as soon as request i's outcome is final."""
    policy = policy or RetryPolicy()
    validator = SchemaValidator(schema)
    response_format = response_format_for(validator.schema, constraint)
    current = [
        dataclasses.replace(r, response_format=response_format)
        if policy.constrained and r.response_format is None
        else r
        for r in requests
    ]
    outcomes: list[ValidatedResult | None] = [None] * len(current)
    attempts = [0] * len(current)
    ready = list(range(len(current)))  # requests whose next attempt is to be sent
    running: dict[Future[Result], int] = {}
    while ready or running:
        for i, future in zip(ready, send(engine, [current[i] for i in ready])):
            running[future] = i
            attempts[i] += 1
        ready = []
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in sorted(done, key=running.__getitem__):
            i = running.pop(future)
            result = future.result()
            outcomes[i] = _evaluate(validator, result, attempts[i])
            final = outcomes[i].valid or result.finish_reason == "error"
            if not final and attempts[i] < policy.max_attempts:
                current[i] = _next_request(
                    requests[i], current[i], outcomes[i], attempts[i] + 1, policy
                )
                ready.append(i)
            elif on_final is not None:
                on_final(i, outcomes[i])
    return outcomes  # type: ignore[return-value]


def send(engine: Generates, requests: list[Request]) -> list[Future[Result]]:
    """Hand `requests` to `engine` now, together, one future per request: `submit_many` where
    the engine has it (each future completes as its request finishes), else one `generate`
    call (the futures are complete on return)."""
    if not requests:
        return []
    submit_many = getattr(engine, "submit_many", None)
    if submit_many is not None:
        return submit_many(requests)
    results = engine.generate(requests)
    if len(results) != len(requests) or any(q.id != r.id for q, r in zip(requests, results)):
        raise RuntimeError(
            f"engine returned {len(results)} results for {len(requests)} requests, or out of order"
        )
    futures = [Future() for _ in results]
    for future, result in zip(futures, results):
        future.set_result(result)
    return futures


def _evaluate(validator: SchemaValidator, result: Result, attempt: int) -> ValidatedResult:
    level = result.constraint or "none"  # no grammar at all enforces nothing of the schema
    if result.finish_reason == "error":
        errors = [f"engine error: {result.error or 'unknown'}"]
        return ValidatedResult(result.id, False, attempt, errors, None, result, level)
    value, errors = validator.check(result.text)
    if result.finish_reason == "length":
        errors.insert(0, f"output stopped at the token limit ({len(result.token_ids)} tokens)")
    return ValidatedResult(result.id, not errors, attempt, errors, value, result, level)


def _next_request(
    original: Request, last: Request, outcome: ValidatedResult, attempt: int, policy: RetryPolicy
) -> Request:
    temperature = policy.retry_temperatures[min(attempt - 2, len(policy.retry_temperatures) - 1)]
    changes: dict[str, Any] = {
        "seed": retry_seed(original, attempt),
        "temperature": max(original.temperature, temperature),
    }
    if outcome.result is not None and outcome.result.finish_reason == "length":
        grown = math.ceil(last.max_tokens * policy.length_growth)
        changes["max_tokens"] = max(last.max_tokens, min(policy.max_tokens_cap, grown))
    if policy.feedback and original.messages is not None:
        changes["messages"] = [*original.messages, *_feedback_turns(outcome)]
    return dataclasses.replace(last, **changes)


def retry_seed(request: Request, attempt: int) -> int:
    """A reproducible seed for `attempt` of `request`, distinct per attempt."""
    base = request.seed if request.seed is not None else zlib.crc32(request.id.encode())
    digest = hashlib.sha256(f"{base}:{attempt}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _feedback_turns(outcome: ValidatedResult) -> list[dict[str, str]]:
    problems = "\n".join(f"- {e}" for e in outcome.errors)
    return [
        {"role": "assistant", "content": outcome.result.text if outcome.result else ""},
        {
            "role": "user",
            "content": "That reply does not match the required JSON schema:\n"
            f"{problems}\nReply again with only the corrected JSON.",
        },
    ]
