"""Run prompt requests on an engine, validate the outputs and retry (`generate_validated`).

Requests are validated against the schema their `schema_source` names: the task's, the
parts' (`reduce.part_schema`, map requests of a split document), the request's own
`response_format` (OpenAI batch input), or none (free text: one attempt, valid when the output
ended by itself). Fields named in `task.grounded` are constrained to values the request's text
states (`grounded_request`); outputs are still validated against the schema. A `UsageMeter`
between the retry driver and the engine sums every attempt's usage and wall time per request,
and counts the pipeline metrics.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from flashbeam.model.request import Request, Result, Usage
from flashbeam.schemas import SchemaError, generate_validated, ground_schema, response_format_for
from flashbeam.schemas.levels import constraint_summary, schema_constraint

from .config import TaskConfig
from .metrics import count
from .records import PromptRequest, RequestOutcome, add_usage


class Generates(Protocol):
    def generate(self, requests: list[Request]) -> list[Result]: ...


class UsageMeter:
    """An engine wrapper that sums usage and latency per request id over all calls.

    If a whole `generate` call raises, its requests are run one by one, so that only the
    request that fails gets an error result and the others still run.
    """

    def __init__(self, engine: Generates):
        self.engine = engine
        self.usage: dict[str, Usage] = defaultdict(Usage)
        self.latency: dict[str, float] = defaultdict(float)

    def generate(self, requests: list[Request]) -> list[Result]:
        started = time.perf_counter()
        results = self._generate_isolated(requests)
        elapsed = time.perf_counter() - started
        for result in results:
            add_usage(self.usage[result.id], result.usage)
            self.latency[result.id] += elapsed
        count("engine_calls")
        count("prompt_tokens", sum(r.usage.prompt_tokens for r in results))
        count("cached_tokens", sum(r.usage.prompt_cache_hit_tokens for r in results))
        count("completion_tokens", sum(r.usage.completion_tokens for r in results))
        return results

    def _generate_isolated(self, requests: list[Request]) -> list[Result]:
        try:
            return self.engine.generate(requests)
        except Exception as e:  # noqa: BLE001 - isolate the request that breaks the call
            if len(requests) == 1:
                message = f"request {requests[0].id!r}: engine failure: {type(e).__name__}: {e}"
                return [Result(requests[0].id, finish_reason="error", error=message)]
            return [r for request in requests for r in self._generate_isolated([request])]


def run_prompts(
    engine: Generates, prompts: list[PromptRequest], task: TaskConfig, model: str
) -> list[RequestOutcome]:
    """One RequestOutcome per prompt, in order; never raises for a bad request or output."""
    meter = UsageMeter(engine)
    outcomes: list[RequestOutcome | None] = [None] * len(prompts)
    for key, (schema, indices) in _by_schema(prompts, task).items():
        batch = [prompts[i] for i in indices]
        if key is _BAD_SCHEMA:
            run = _schema_errors
        elif key is None:
            run = _free_text
        else:
            run = _validated(schema, task)
        for i, outcome in zip(indices, run(meter, batch, model)):
            outcomes[i] = outcome
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
Runner = Callable[[UsageMeter, list[PromptRequest], str], list[RequestOutcome]]


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
    def run(meter: UsageMeter, batch: list[PromptRequest], model: str) -> list[RequestOutcome]:
        requests = [grounded_request(p, schema, task.grounded, task.constraint) for p in batch]
        try:
            checked = generate_validated(
                meter, requests, schema, task.retry, constraint=task.constraint
            )
        except SchemaError as e:
            return _schema_errors(meter, batch, model, str(e))
        return [
            RequestOutcome(
                prompt=p,
                valid=v.valid,
                attempts=v.attempts,
                errors=list(v.errors),
                value=v.value,
                text=v.result.text if v.result else "",
                reasoning_content=v.result.reasoning_content if v.result else None,
                finish_reason=v.result.finish_reason if v.result else "error",
                usage=meter.usage[p.request.id],
                latency_s=meter.latency[p.request.id],
                model=model,
                constraint=v.constraint,
            )
            for p, v in zip(batch, checked)
        ]

    return run


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


def _free_text(meter: UsageMeter, batch: list[PromptRequest], model: str) -> list[RequestOutcome]:
    results = meter.generate([p.request for p in batch])
    return [
        RequestOutcome(
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
        for p, r in zip(batch, results)
    ]


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
