"""From request outcomes to one result per item: pass-through, field merges, reduce prompts.

- An item that was not split: its one outcome is its result (or its error row).
- A split item, `merge` mode: the parts' JSON objects are merged field by field with the job's
  rules, and the merged object must validate against the schema.
- A split item, `prompt` mode: the parts' outputs (in `reduce.part_schema`, when set) are
  packed into reduce prompts that fit the reduce input budget; while more than one prompt is
  needed, their outputs are reduced again (up to `ReduceConfig.rounds` rounds; the last round
  takes all remaining parts in one prompt). Reduce outputs follow the task schema.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from flashbeam.model.text.tokenizer import Tokenizer
from flashbeam.schemas import SchemaValidator

from .config import MergeRule, ReduceConfig, TaskConfig
from .prompts import reduce_request, render_part
from .records import ErrorRow, ItemKey, ItemResult, ItemStats, Origin, PromptRequest, RequestOutcome


@dataclass
class ReduceState:
    """A split item between reduce rounds: the outputs still to combine, in document order, and
    the `reduce.rules` fields already merged from the map outputs."""

    item: ItemKey
    origin: Origin
    parts: list[str]
    document_text: str
    stats: ItemStats
    merged: dict[str, Any] | None = None


# ---- single outcomes ---------------------------------------------------------------------------


def finish_outcome(outcome: RequestOutcome) -> ItemResult | ErrorRow:
    """The result (or error row) of an item whose outcome is final."""
    prompt = outcome.prompt
    stats = _stats_with_carry(outcome)
    if outcome.failed:
        return outcome_error(outcome, stats)
    return ItemResult(
        origin=prompt.origin,
        question_index=prompt.item[1],
        value=outcome.value,
        text=outcome.text,
        reasoning_content=outcome.reasoning_content,
        valid=outcome.valid,
        finish_reason=outcome.finish_reason,
        model=outcome.model,
        stats=stats,
    )


def finish_reduce(outcome: RequestOutcome, task: TaskConfig) -> ItemResult | ErrorRow:
    """The result (or error row) of a final reduce request: the fields of `reduce.rules`,
    merged from the map outputs, replace what the model wrote, `reduce.exclude` drops its
    entries, and the whole must validate."""
    result = finish_outcome(outcome)
    merged = outcome.prompt.merged or {}
    if isinstance(result, ErrorRow) or not isinstance(result.value, dict):
        return result
    value = drop_excluded({**result.value, **merged}, task.reduce.exclude)
    if value == result.value:
        return result
    text = json.dumps(value, ensure_ascii=False)
    problems = SchemaValidator(task.schema).errors(value) if task.schema is not None else []
    if problems:
        exclude = task.reduce.exclude
        changed = [f"the fields merged by reduce.rules ({', '.join(merged)})"] if merged else []
        changed += [f"reduce.exclude ({_pairs(exclude)}) applied"] if exclude else []
        reason = f"with {' and '.join(changed)} the output "
        prompt = outcome.prompt
        return _invalid_merge(prompt, reason, problems, prompt.input_text, text,
                              finish_reason=result.finish_reason, model=result.model,
                              stats=result.stats)  # fmt: skip
    return dataclasses.replace(result, value=value, text=text)


def _invalid_merge(
    prompt: PromptRequest, what: str, problems: list[str], document: str, text: str, **row: Any
) -> ErrorRow:
    """The error row of an item whose merged value (`text`) does not validate; `row` sets the
    row's other fields (model, stats, ...)."""
    return ErrorRow(
        id=prompt.origin.id,
        stage="reduce",
        reason=what + "does not validate: " + "; ".join(problems),
        source=prompt.origin.source,
        line=prompt.origin.line,
        input=document,
        question_index=prompt.item[1],
        output=text,
        **row,
    )


def outcome_error(outcome: RequestOutcome, stats: ItemStats, input_text: str | None = None):
    prompt = outcome.prompt
    if outcome.finish_reason == "error":
        stage, reason = "engine", "; ".join(outcome.errors) or "engine error"
    else:
        stage = "validate"
        level = outcome.constraint
        at = f" (constraint {level})" if level not in (None, "exact") else ""
        reason = f"output invalid after {outcome.attempts} attempt(s){at}: " + "; ".join(
            outcome.errors
        )
    if prompt.level > 0:
        stage, reason = "reduce", f"reduce round {prompt.level}: {reason}"
    elif prompt.chunk_count > 1:
        reason = f"part {prompt.chunk_index + 1} of {prompt.chunk_count}: {reason}"
    return ErrorRow(
        id=prompt.origin.id,
        stage=stage,
        reason=reason,
        source=prompt.origin.source,
        line=prompt.origin.line,
        input=prompt.input_text if input_text is None else input_text,
        question_index=prompt.item[1],
        output=outcome.text or None,
        finish_reason=outcome.finish_reason,
        model=outcome.model,
        stats=stats,
    )


def _stats_with_carry(outcome: RequestOutcome) -> ItemStats:
    stats = outcome.stats()
    if outcome.prompt.carry is not None:
        carried = outcome.prompt.carry
        stats.add(carried)
        stats.chunk_count = carried.chunk_count
    return stats


# ---- collecting the parts of a split item ------------------------------------------------------


def collect_parts(
    outcomes: list[RequestOutcome], config: ReduceConfig
) -> tuple[list[RequestOutcome], ItemStats, str] | ErrorRow:
    """The usable outcomes of a split item's parts (in order), their summed stats and the
    reassembled document; or the item's error row when parts failed and the job says fail."""
    outcomes = sorted(outcomes, key=lambda o: (o.prompt.chunk_index, o.prompt.request.id))
    stats = ItemStats(chunk_count=outcomes[0].prompt.chunk_count)
    for outcome in outcomes:
        stats.add(_stats_with_carry(outcome))
    document = reassemble([(o.prompt.char_start, o.prompt.input_text) for o in outcomes])
    failed = [o for o in outcomes if o.failed]
    stats.parts_failed += len(failed)
    ok = [o for o in outcomes if not o.failed]
    if failed and (config.on_part_error == "fail" or not ok):
        first = outcome_error(failed[0], stats, document)
        if len(failed) > 1:
            first.reason = f"{len(failed)} of {len(outcomes)} parts failed; first: {first.reason}"
        return first
    return ok, stats, document


def reassemble(parts: list[tuple[int, str]]) -> str:
    """The text covered by overlapping (char_start, text) parts, each character once."""
    text, end = [], 0
    for start, part in sorted(parts, key=lambda p: p[0]):
        if start + len(part) > end:
            text.append(part[max(end - start, 0) :])
            end = start + len(part)
    return "".join(text)


# ---- merge mode --------------------------------------------------------------------------------


def merge_item(
    outcomes: list[RequestOutcome], stats: ItemStats, document: str, task: TaskConfig
) -> ItemResult | ErrorRow:
    """Merge the parts' values with the job's rules; the merged value must validate."""
    first = outcomes[0].prompt
    value = merge_values([o.value for o in outcomes], task.schema or {}, task.reduce)
    value = drop_excluded(value, task.reduce.exclude)
    problems = SchemaValidator(task.schema).errors(value) if task.schema is not None else []
    text = json.dumps(value, ensure_ascii=False)
    if problems:
        return _invalid_merge(first, "merged value ", problems, document, text,
                              model=outcomes[0].model, stats=stats)  # fmt: skip
    reasons = {o.finish_reason for o in outcomes}
    return ItemResult(
        origin=first.origin,
        question_index=first.item[1],
        value=value,
        text=text,
        reasoning_content=None,
        valid=all(o.valid for o in outcomes),
        finish_reason="stop" if reasons == {"stop"} else sorted(reasons)[0],
        model=outcomes[0].model,
        stats=stats,
    )


def merge_values(values: list[Any], schema: dict[str, Any], config: ReduceConfig) -> Any:
    """Merge JSON values field by field (top-level properties of objects); values that are not
    all objects are merged whole with the default rule."""
    if not values:
        return None
    properties = schema.get("properties", {}) if isinstance(schema, dict) else {}
    if not all(isinstance(v, dict) for v in values):
        return apply_rule(config.default_rule or _default_rule(schema, values), values)
    keys = [k for k in properties if any(k in v for v in values)]
    keys += [k for v in values for k in v if k not in properties and k not in keys]
    merged = {}
    for key in dict.fromkeys(keys):
        present = [v[key] for v in values if key in v]
        rule = config.rules.get(key) or config.default_rule
        merged[key] = apply_rule(rule or _default_rule(properties.get(key, {}), present), present)
    return merged


def drop_excluded(value: Any, exclude: dict[str, str]) -> Any:
    """`value` with each list that `exclude` names rid of the entries its paired property holds
    (`{"people": "author"}`: the author's name; a list property: each of its entries)."""
    if not exclude or not isinstance(value, dict):
        return value
    out = dict(value)
    for name, other in exclude.items():
        entries, held = out.get(name), out.get(other)
        if not isinstance(entries, list) or held is None:
            continue
        drop = {_canonical(v) for v in (held if isinstance(held, list) else [held])}
        out[name] = [e for e in entries if _canonical(e) not in drop]
    return out


def _pairs(exclude: dict[str, str]) -> str:
    return ", ".join(f"{name}: {other}" for name, other in exclude.items())


def apply_rule(rule: MergeRule, values: list[Any]) -> Any:
    present = [v for v in values if v is not None]
    if rule == "first_non_null" or not present:
        return present[0] if present else None
    if rule == "last_non_null":
        return present[-1]
    if rule == "most_common":
        keys = [_canonical(v) for v in present]
        counts = Counter(keys)
        best = max(counts.values())
        return present[next(i for i, k in enumerate(keys) if counts[k] == best)]
    if rule == "concat_unique":
        if all(isinstance(v, list) for v in present):
            first: dict[str, Any] = {}  # each item once, where it first appears
            for item in (item for v in present for item in v):
                first.setdefault(_canonical(item), item)
            return list(first.values())
        if all(isinstance(v, str) for v in present):
            return "\n".join(dict.fromkeys(v for v in present if v))
        return present[0]
    if rule in ("min", "max"):
        numbers = [v for v in present if isinstance(v, int | float) and not isinstance(v, bool)]
        strings = [v for v in present if isinstance(v, str)]
        pool = numbers if len(numbers) == len(present) else strings
        if len(pool) != len(present):
            return present[0]
        return min(pool) if rule == "min" else max(pool)
    raise ValueError(f"unknown merge rule {rule!r}")


def _default_rule(schema: Any, values: list[Any]) -> MergeRule:
    kind = schema.get("type") if isinstance(schema, dict) else None
    if kind == "array" or (values and all(isinstance(v, list) for v in values if v is not None)):
        return "concat_unique" if any(v is not None for v in values) else "first_non_null"
    return "most_common"


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


# ---- prompt mode -------------------------------------------------------------------------------


def start_reduce(
    outcomes: list[RequestOutcome], stats: ItemStats, document: str, task: TaskConfig
) -> ReduceState:
    first = outcomes[0].prompt
    has_schema = task.schema is not None
    parts = [render_part(o.value, o.text, has_schema) for o in outcomes]
    merged = None
    if task.reduce.rules and has_schema:
        values = [o.value if isinstance(o.value, dict) else {} for o in outcomes]
        merged = {
            key: apply_rule(rule, [v[key] for v in values if key in v])
            for key, rule in task.reduce.rules.items()
        }
    return ReduceState(first.item, first.origin, parts, document, stats, merged)


def plan_round(
    state: ReduceState, task: TaskConfig, tokenizer: Tokenizer, level: int, last: bool
) -> list[PromptRequest]:
    """The requests of reduce round `level` for one item: one final request when the parts fit
    the budget (`reduce.max_input_tokens`, else `chunking.max_tokens`) together (or this is the
    last round), else one request per packed group."""
    budget = task.reduce.max_input_tokens
    if budget is None:
        budget = task.chunking.max_tokens
    sizes = [len(tokenizer.encode(part)) for part in state.parts]
    groups = [list(range(len(sizes)))]
    if not last and budget is not None and sum(sizes) > budget:
        groups = pack(sizes, budget)
    final = len(groups) == 1
    return [
        reduce_request(
            state.item,
            state.origin,
            [state.parts[i] for i in group],
            task,
            level,
            g,
            final,
            state.document_text,
            carry=state.stats if g == 0 else None,
            merged=state.merged if g == 0 else None,
        )
        for g, group in enumerate(groups)
    ]


def next_state(outcomes: list[RequestOutcome], config: ReduceConfig) -> ReduceState | ErrorRow:
    """The state after an intermediate round: its groups' outputs become the new parts."""
    collected = collect_parts(outcomes, config)
    if isinstance(collected, ErrorRow):
        return collected
    ok, stats, _ = collected
    first = ok[0].prompt
    has_schema = ok[0].prompt.schema_source != "none"
    parts = [render_part(o.value, o.text, has_schema) for o in ok]
    carrier = next(o.prompt for o in outcomes if o.prompt.carry is not None)
    stats.chunk_count = carrier.carry.chunk_count
    return ReduceState(first.item, first.origin, parts, first.input_text, stats, carrier.merged)


def pack(sizes: list[int], budget: int) -> list[list[int]]:
    """Consecutive indices packed into groups whose sizes sum to at most `budget` (a single
    size over the budget gets a group of its own)."""
    groups: list[list[int]] = []
    current: list[int] = []
    total = 0
    for i, size in enumerate(sizes):
        if current and total + size > budget:
            groups.append(current)
            current, total = [], 0
        current.append(i)
        total += size
    if current:
        groups.append(current)
    return groups
