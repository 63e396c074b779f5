"""Run prompt requests on an engine, validate the outputs and retry (`generate_validated`).

Requests are validated against the schema their `schema_source` names: the task's, the
parts' (`reduce.part_schema`, map requests of a split document), the request's own
`response_format` (OpenAI batch input), or none (free text: one attempt, valid when the output
ended by itself). Fields named in `task.grounded` are constrained to values the request's text
states (`grounded_request`); outputs are still validated against the schema. A `UsageMeter`
between the retry driver and the engine sums every attempt's usage and time per request; the
pipeline metrics are counted from it once the prompts are done, in the calling thread (Beam's
counters belong to the bundle's thread, and results arrive on the engine's).
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from typing import Any, Protocol

from flashbeam.model.engine.request import Request, Result, Usage
from flashbeam.schemas import SchemaError, generate_validated, ground_schema, response_format_for
from flashbeam.schemas.levels import constraint_summary, schema_constraint
from flashbeam.schemas.retry import ValidatedResult, send

from .config import TaskConfig
from .metrics import count
from .records import PromptRequest, RequestOutcome, add_usage


class Generates(Protocol):
    """An engine: `submit_many(list) -> list[Future[Result]]` (the Engine), or `generate(list)`."""

    def generate(self, requests: list[Request]) -> list[Result]: ...


class UsageMeter:
    """An engine wrapper that sums usage and latency per request id over all attempts.

    `submit_many` hands requests to the engine at once, together. A request the engine
    refuses, or cannot finish because the engine failed, gets an error result naming why; the
    others still run. Safe from any thread: results are recorded on the thread that delivers
    them.
    """

    def __init__(self, engine: Generates):
        self.engine = engine
        self.usage: dict[str, Usage] = defaultdict(Usage)
        self.latency: dict[str, float] = defaultdict(float)
        self.submissions = 0  # attempts that reached an end, refused ones included
        self._lock = threading.Lock()

    def submit_many(self, requests: list[Request]) -> list[Future[Result]]:
        started = time.perf_counter()
        try:
            attempts = send(self.engine, requests)
        except Exception as e:  # noqa: BLE001 - the engine refused them
            if len(requests) > 1:  # one by one, so only the request it refuses fails
                return [f for request in requests for f in self.submit_many([request])]
            outcome: Future[Result] = Future()
            self._record(outcome, requests[0], started, _engine_failure(requests[0], e))
            return [outcome]
        outcomes: list[Future[Result]] = [Future() for _ in requests]
        for outcome, request, attempt in zip(outcomes, requests, attempts):
            attempt.add_done_callback(
                lambda f, outcome=outcome, request=request: self._record(
                    outcome, request, started, f
                )
            )
        return outcomes

    def _record(
        self, outcome: Future, request: Request, started: float, done: Future | Result
    ) -> None:
        if isinstance(done, Result):
            result = done
        elif done.cancelled():
            result = _engine_failure(request, RuntimeError("the request was cancelled"))
        elif done.exception() is not None:
            result = _engine_failure(request, done.exception())
        else:
            result = done.result()
        with self._lock:
            self.submissions += 1
            add_usage(self.usage[result.id], result.usage)
            self.latency[result.id] += time.perf_counter() - started
        outcome.set_result(result)

    def count_metrics(self) -> None:
        """Add what went through this meter to the pipeline counters."""
        count("engine_calls", self.submissions)
        count("prompt_tokens", sum(u.prompt_tokens for u in self.usage.values()))
        count("cached_tokens", sum(u.prompt_cache_hit_tokens for u in self.usage.values()))
        count("completion_tokens", sum(u.completion_tokens for u in self.usage.values()))


def _engine_failure(request: Request, error: BaseException) -> Result:
    message = f"request {request.id!r}: engine failure: {type(error).__name__}: {error}"
    return Result(request.id, finish_reason="error", error=message)


def run_prompts(
    engine: Generates,
    prompts: list[PromptRequest],
    task: TaskConfig,
    model: str,
    on_outcome: Callable[[RequestOutcome], None] | None = None,
) -> list[RequestOutcome]:
    """One RequestOutcome per prompt, in order; never raises for a bad request or output.
    Prompts held to different schemas run at the same time, each set in its own thread.
    `on_outcome(outcome)` is called as soon as a prompt's outcome is final, from the thread
    that runs its schema's prompts (so the caller can keep it before the others are done)."""
    meter = UsageMeter(engine)
    outcomes: list[RequestOutcome | None] = [None] * len(prompts)
    runs: list[tuple[Runner, list[int]]] = []
    for key, (schema, indices) in _by_schema(prompts, task).items():
        if key is _BAD_SCHEMA:
            run = _bad_schema
        elif key is None:
            run = _free_text
        else:
            run = _validated(schema, task)
        runs.append((run, indices))

    def finish(run: Runner, indices: list[int]) -> None:
        reported: set[int] = set()

        def report(j: int, outcome: RequestOutcome) -> None:
            reported.add(j)
            if on_outcome is not None:
                on_outcome(outcome)

        batch = [prompts[i] for i in indices]
        for j, outcome in enumerate(run(meter, batch, model, report)):
            outcomes[indices[j]] = outcome
            if j not in reported:
                report(j, outcome)

    if len(runs) > 1:
        with ThreadPoolExecutor(len(runs), thread_name_prefix="flashbeam-schema") as pool:
            for future in [pool.submit(finish, run, indices) for run, indices in runs]:
                future.result()
    else:
        for run, indices in runs:
            finish(run, indices)
    meter.count_metrics()
    count("requests", len(prompts))
    for outcome in outcomes:
        count("retries", max(outcome.attempts - 1, 0))
        if outcome.constraint is not None:
            count(f"constraint_{outcome.constraint}")
        if outcome.finish_reason == "error":
            count("engine_errors")
        elif outcome.failed:
            count("invalid_outputs")
    return outcomes  # type: ignore[return-value]


_BAD_SCHEMA = "\0bad"
# A runner reports each outcome (its index in the batch) as soon as it is final, if it can.
Report = Callable[[int, RequestOutcome], None]
Runner = Callable[[UsageMeter, list[PromptRequest], str, Report], list[RequestOutcome]]


def _by_schema(prompts: list[PromptRequest], task: TaskConfig) -> dict[Any, tuple[Any, list[int]]]:
    """Per validation schema: (the schema as given, its prompts' indices), keyed by the schema's
    canonical JSON text (None for free text). The schema itself is kept, not its canonical
    form: the grammar writes the properties in the schema's order, which the model follows."""
    groups: dict[Any, tuple[Any, list[int]]] = {}
    for i, prompt in enumerate(prompts):
        if prompt.schema_source == "request":
            schema = _request_schema(prompt.request)
        else:
            schema = task.schema_for(prompt.schema_source)
        if schema is None or schema is _BAD_SCHEMA:
            key = schema
        else:
            key = json.dumps(schema, sort_keys=True)
        groups.setdefault(key, (schema, []))[1].append(i)
    return groups


def _request_schema(request: Request) -> Any:
    response_format = request.response_format
    if not isinstance(response_format, dict):
        return _BAD_SCHEMA
    if response_format.get("type") == "json_object":
        return {}
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    return schema if isinstance(schema, dict) else _BAD_SCHEMA


def _validated(schema: dict[str, Any], task: TaskConfig) -> Runner:
    def run(
        meter: UsageMeter, batch: list[PromptRequest], model: str, report: Report
    ) -> list[RequestOutcome]:
        requests = [grounded_request(p, schema, task.grounded, task.constraint) for p in batch]
        built: list[RequestOutcome | None] = [None] * len(batch)

        def final(i: int, checked: ValidatedResult) -> None:
            built[i] = _checked_outcome(batch[i], checked, meter, model)
            report(i, built[i])

        try:
            checked = generate_validated(
                meter, requests, schema, task.retry, constraint=task.constraint, on_final=final
            )
        except SchemaError as e:
            return _schema_errors(meter, batch, model, str(e))
        return [
            built[i] or _checked_outcome(p, v, meter, model)
            for i, (p, v) in enumerate(zip(batch, checked))
        ]

    return run


def _checked_outcome(
    prompt: PromptRequest, v: ValidatedResult, meter: UsageMeter, model: str
) -> RequestOutcome:
    return RequestOutcome(
        prompt=prompt,
        valid=v.valid,
        attempts=v.attempts,
        errors=list(v.errors),
        value=v.value,
        text=v.result.text if v.result else "",
        reasoning_content=v.result.reasoning_content if v.result else None,
        finish_reason=v.result.finish_reason if v.result else "error",
        usage=meter.usage[prompt.request.id],
        latency_s=meter.latency[prompt.request.id],
        model=model,
        constraint=v.constraint,
    )


def grounded_request(
    prompt: PromptRequest, schema: dict[str, Any], fields: Sequence[str], constraint: str = "auto"
) -> Request:
    """The prompt's request, with its `fields` grounded in its text (`task.grounded`) when it
    has no response_format of its own. Built here, just before generation, so the (large)
    grounded schema never travels through the pipeline."""
    if not fields or prompt.request.response_format is not None:
        return prompt.request
    grounded = ground_schema(schema, prompt.grounding_text, fields)  # skips fields it lacks
    response_format = response_format_for(grounded, constraint)
    return dataclasses.replace(prompt.request, response_format=response_format)


def _free_text(
    meter: UsageMeter, batch: list[PromptRequest], model: str, report: Report
) -> list[RequestOutcome]:
    futures = send(meter, [p.request for p in batch])
    position = {future: j for j, future in enumerate(futures)}
    outcomes: list[RequestOutcome | None] = [None] * len(batch)
    for future in as_completed(futures):
        j = position[future]
        r, p = future.result(), batch[j]
        outcomes[j] = RequestOutcome(
            prompt=p,
            valid=r.finish_reason == "stop",
            attempts=1,
            errors=[f"engine error: {r.error}"] if r.finish_reason == "error" else [],
            value=None,
            text=r.text,
            reasoning_content=r.reasoning_content,
            finish_reason=r.finish_reason,
            usage=meter.usage[p.request.id],
            latency_s=meter.latency[p.request.id],
            model=model,
        )
        report(j, outcomes[j])
    return outcomes  # type: ignore[return-value]


def _bad_schema(
    meter: UsageMeter, batch: list[PromptRequest], model: str, report: Report
) -> list[RequestOutcome]:
    return _schema_errors(meter, batch, model)


def _schema_errors(
    meter: UsageMeter, batch: list[PromptRequest], model: str, why: str | None = None
) -> list[RequestOutcome]:
    reason = why or (
        "response_format must be {'type': 'json_object'} or {'type': 'json_schema', "
        "'json_schema': {'name': ..., 'schema': {...}}}"
    )
    return [
        RequestOutcome(p, False, 0, [f"bad response_format: {reason}"], None, "", None, "error",
                       Usage(), 0.0, model)
        for p in batch
    ]  # fmt: skip


def constraint_report(task: TaskConfig) -> dict[str, Any]:
    """How much of each of the task's schemas the grammar enforces, before any model runs:
    `{"task": {"level": ..., "relaxed": [...]}, "part": ...}` ("part" with
    `reduce.part_schema`; {} for free text). Grounded requests' schemas are the task schema with
    narrower fields, so they get its level or a tighter one."""
    schemas = {"task": task.schema, "part": task.reduce.part_schema}
    return {
        name: constraint_summary(schema_constraint(schema))
        for name, schema in schemas.items()
        if schema is not None
    }
