"""`flashbeam bench schemas PATH.jsonl`: constrained decoding over real-world JSON Schemas.

    flashbeam bench schemas ../shared/data/jsonschemabench-dev/ --limit 200 --threads 1
    python -m flashbeam.schemas.bench ../shared/data/jsonschemabench-dev/ --limit 200 --threads 1

(about 2.5 minutes with `--limit 200` on 2 busy CPU cores). PATH is a JSONL file, or a folder
whose `*.jsonl` files are read in name order; each line is a JSONSchemaBench record
(`{"unique_id", "schema", ...}`) or a bare schema. `--limit N` keeps N records evenly spaced over
the input (deterministic, and it spans the sizes of the benchmark's size-binned files).
Prints one JSON object:

- compile: every schema is checked (`load_schema`: meta-schema, refs bundled) and compiled by the
  engine's own compiler at the tightest constraint level it gets (exact / relaxed / none, see
  model/constraint.py). `accepted` counts the schemas that got a generation attempt (both steps
  passed); `levels` how many got each level, `relaxed_changes` what was relaxed (keyword level,
  paths dropped so equal changes group). Compile time covers distinct schemas only.
- validity: one request per accepted schema through `generate_validated` (default 3 attempts,
  `max_tokens = max(256, min_tokens + 64)`), every output validated against the full schema.
  The requests of all schemas share engine batches: each schema's `generate_validated` runs in its
  own thread and a round batcher merges their calls. `valid_*_ratio` are of the accepted schemas.
- mask time: the final output of every schema is replayed, token by token, through a fresh
  `GrammarState` (without budget steering, so llguidance computes every row), timing
  `fill_bitmasks` for that one sequence per step. `mask_cost_vs_decode_token` is the mean mask
  time per token over the unconstrained decode time per token (batch `--batch`): what masks
  would add if computed serially; `constrained_decode_overhead` is what they do add, measured
  (1 - constrained / unconstrained tokens/s with matched lengths).
- throughput: 32 constrained requests (the first compiled schemas) and the same prompts
  unconstrained with `ignore_eos`; decode tokens/s excludes prefill. `constrained_vs_unconstrained`
  gives every unconstrained request exactly as many tokens as its constrained twin produced (the
  grammar ends a request when its JSON is complete), so both runs decode the same batch shapes;
  `constrained_vs_unconstrained_same_max_tokens` lets the unconstrained twins run to `max_tokens`.

The model is the embedded tiny checkpoint when it is built (`model/tiny/config.json`), else a
random-weight tiny checkpoint in a temporary folder; `model` in the output says which.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flashbeam.model.checkpoint.loading import TINY_DIR
from flashbeam.model.checkpoint.random_init import write_random_checkpoint
from flashbeam.model.engine.engine import Engine, EngineProgress
from flashbeam.model.engine.request import Request, Result
from flashbeam.model.grammar.compiler import (
    CompiledGrammar,
    GrammarError,
    GrammarState,
    allocate_bitmask,
    canonical_hash,
    fill_bitmasks,
)
from flashbeam.model.grammar.constraint import LEVELS
from flashbeam.model.network.config import tiny_config
from flashbeam.schemas.loading import SchemaError, load_schema, response_format_for
from flashbeam.schemas.retry import RetryPolicy, ValidatedResult, generate_validated

_EXAMPLES = 10  # failures listed by id in the output, per kind
_CALLERS = 256  # schemas whose generate_validated calls share one batcher (threads alive at once)


@dataclass
class SchemaCase:
    """One benchmark schema and what happened to it."""

    id: str
    schema: Any
    compiled: CompiledGrammar | None = None
    failure: str | None = None  # "invalid_schema: ..." or "grammar_rejected: ..."
    outcome: ValidatedResult | None = None

    @property
    def response_format(self) -> dict[str, Any]:
        fmt = response_format_for(self.schema)
        return {"type": "json_schema", "json_schema": {**fmt["json_schema"], "name": self.id}}

    def request(self, index: int, min_max_tokens: int, **changes: Any) -> Request:
        """The benchmark's request for this schema (a short instruction, greedy, seeded)."""
        title = self.schema.get("title") if isinstance(self.schema, dict) else None
        topic = title if isinstance(title, str) and title else self.id
        prompt = f"Return one JSON object for: {topic}"
        budget = max(min_max_tokens, (self.compiled.min_tokens if self.compiled else 0) + 64)
        base = Request(
            id=f"s{index}",
            messages=[{"role": "user", "content": prompt}],
            max_tokens=budget,
            seed=index,
        )
        return dataclasses.replace(base, **changes)


def read_schemas(path: str | Path, limit: int | None = None) -> list[SchemaCase]:
    """The records of a JSONL file (or of every `*.jsonl` in a folder), `limit` of them evenly
    spaced when given."""
    path = Path(path)
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise FileNotFoundError(f"{path}: expected a .jsonl file or a folder of .jsonl files")
    cases = []
    for file in files:
        for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{file}:{number}: not a JSON line: {e.msg}") from None
            is_record = isinstance(record, dict) and "schema" in record
            schema = record["schema"] if is_record else record
            name = record.get("unique_id") if is_record else None
            cases.append(SchemaCase(str(name or f"{file.stem}:{number}"), schema))
    if limit is not None and limit < len(cases):
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        cases = [cases[i * len(cases) // limit] for i in range(limit)]
    return cases


def bench_schemas(
    path: str | Path,
    limit: int | None = None,
    max_attempts: int = 3,
    feedback: bool = False,
    min_max_tokens: int = 256,
    batch: int = 32,
    threads: int | None = None,
    checkpoint: str | Path | None = None,
) -> dict[str, Any]:
    """Coverage, validity, mask time and constrained throughput over the schemas at `path`."""
    if threads:
        torch.set_num_threads(threads)
    cases = read_schemas(path, limit)
    with tempfile.TemporaryDirectory() as tmp:
        engine, model = _load_engine(checkpoint, tmp)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        compile_ms = _compile(engine, cases)
        timings["compile"] = time.perf_counter() - t0
        compiled = [c for c in cases if c.compiled is not None]

        t0 = time.perf_counter()
        policy = RetryPolicy(max_attempts=max_attempts, feedback=feedback)
        _generate(engine, compiled, policy, min_max_tokens)
        timings["generate_validated"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        mask_us, replay_rejected = _replay_masks(compiled)
        timings["mask_replay"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        throughput = _throughput(engine, compiled, batch, min_max_tokens)
        timings["throughput"] = time.perf_counter() - t0

    valid = [c for c in compiled if c.outcome.valid]
    first = [c for c in valid if c.outcome.attempts == 1]
    invalid = [c for c in compiled if not c.outcome.valid]
    rejected = [c for c in cases if c.failure is not None]
    compile_p = _percentiles(compile_ms)
    mask_p = _percentiles(mask_us)
    levels = Counter(c.compiled.level for c in compiled)
    decode_rate = throughput.get("decode_tokens_per_s", {}).get("unconstrained_matched_lengths")
    mask_cost = float(np.mean(mask_us)) * decode_rate / 1e6 if mask_us and decode_rate else None
    return {
        "benchmark": "schemas",
        "path": str(path),
        "model": model,
        "workload": {
            "limit": limit,
            "max_attempts": max_attempts,
            "feedback": feedback,
            "max_tokens": f"max({min_max_tokens}, min_tokens + 64) per schema",
            "temperature_first_attempt": 0.0,
            "batch": batch,
            "torch_threads": torch.get_num_threads(),
        },
        "schemas": len(cases),
        "accepted": len(compiled),
        "accepted_ratio": _ratio(len(compiled), len(cases)),
        "levels": {level: levels[level] for level in LEVELS},
        "level_shares": {level: _ratio(levels[level], len(compiled)) for level in LEVELS},
        "relaxed_changes": dict(_relaxed_changes(compiled).most_common()),
        "none_reasons": dict(
            Counter(c.compiled.plan.reason for c in compiled if c.compiled.level == "none")
        ),
        "compile_failures": dict(Counter(c.failure for c in rejected).most_common()),
        "compile_ms_p50": compile_p[0],
        "compile_ms_p99": compile_p[1],
        "valid_first_attempt_ratio": _ratio(len(first), len(compiled)),
        "valid_after_retries_ratio": _ratio(len(valid), len(compiled)),
        "valid_after_retries_by_level": {
            level: _ratio(
                sum(c.outcome.valid for c in compiled if c.compiled.level == level), levels[level]
            )
            for level in LEVELS
        },
        "valid_at_attempt": dict(sorted(Counter(c.outcome.attempts for c in valid).items())),
        "invalid_reasons": dict(Counter(_invalid_reason(c.outcome) for c in invalid)),
        "invalid_examples": [
            {"id": c.id, "errors": c.outcome.errors[:2], "text": _clip(c.outcome.result)}
            for c in invalid[:_EXAMPLES]
        ],
        "no_closing_plan": sum(1 for c in compiled if c.compiled.min_tokens == 0),
        "mask_us_p50": mask_p[0],
        "mask_us_p99": mask_p[1],
        "mask_tokens": len(mask_us),
        "mask_method": (
            "final outputs replayed through a fresh GrammarState without budget steering; "
            "time of fill_bitmasks for one sequence, per token"
        ),
        "mask_replay_rejected_tokens": replay_rejected,
        "mask_cost_vs_decode_token": mask_cost,
        "constrained_decode_overhead": (
            1 - throughput["constrained_vs_unconstrained"]
            if throughput.get("constrained_vs_unconstrained") is not None
            else None
        ),
        **throughput,
        "wall_s": timings,
    }


def _load_engine(checkpoint: str | Path | None, tmp: str) -> tuple[Engine, str]:
    if checkpoint is not None:
        return Engine.load(checkpoint), str(checkpoint)
    if (TINY_DIR / "config.json").is_file():
        return Engine.load("tiny"), f"embedded tiny checkpoint ({TINY_DIR})"
    write_random_checkpoint(tmp, tiny_config("tiny"), seed=0)
    label = f'random-weight tiny checkpoint (tiny_config("tiny"), seed 0; {TINY_DIR} not built)'
    return Engine.load(tmp), label


def _compile(engine: Engine, cases: list[SchemaCase]) -> list[float]:
    """Check and compile every schema with the engine's compiler (so generation reuses the
    grammars); the compile time of each distinct schema in milliseconds."""
    seen: set[str] = set()
    times = []
    for case in cases:
        try:
            case.schema = load_schema(case.schema, where=case.id)
        except SchemaError as e:
            case.failure = f"invalid_schema: {_first_line(e)}"
            continue
        key = canonical_hash(case.schema)
        t0 = time.perf_counter()
        try:
            case.compiled = engine.grammars.compile(case.response_format)
        except GrammarError as e:
            case.failure = f"grammar_rejected: {_grammar_reason(e)}"
            continue
        if key not in seen:
            seen.add(key)
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def _grammar_reason(error: GrammarError) -> str:
    """The reason without the schema's name and the ref's place (so equal reasons group)."""
    return re.sub(r'^schema "[^"]*": ', "", _first_line(error))


def _relaxed_changes(cases: list[SchemaCase]) -> Counter:
    """How often each kind of change was made (one count per schema and kind)."""
    kinds = Counter()
    for case in cases:
        kinds.update({r.change.split(",")[0] for r in case.compiled.plan.relaxations})
    return kinds


def _first_line(error: Exception, limit: int = 160) -> str:
    line = str(error).splitlines()[0] if str(error) else type(error).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


class _RoundBatcher:
    """Merges the `generate` calls of many concurrent `generate_validated` callers: a round
    runs once every caller still working has submitted, as one `engine.generate`."""

    def __init__(self, engine: Engine, callers: int):
        self.engine = engine
        self.working = callers
        self.queue: list[dict[str, Any]] = []
        self.cond = threading.Condition()

    def generate(self, requests: list[Request]) -> list[Result]:
        slot: dict[str, Any] = {"requests": requests}
        with self.cond:
            self.queue.append(slot)
            self._run_if_complete()
            while "results" not in slot and "error" not in slot:
                self.cond.wait()
        if "error" in slot:
            raise RuntimeError(f"engine.generate failed: {slot['error']}") from slot["error"]
        return slot["results"]

    def leave(self) -> None:
        with self.cond:
            self.working -= 1
            self._run_if_complete()

    def _run_if_complete(self) -> None:
        if not self.queue or len(self.queue) < self.working:
            return
        slots, self.queue = self.queue, []
        try:
            results = iter(self.engine.generate([r for s in slots for r in s["requests"]]))
            for s in slots:
                s["results"] = [next(results) for _ in s["requests"]]
        except Exception as e:  # noqa: BLE001 - every waiting caller re-raises it
            for s in slots:
                s["error"] = e
        self.cond.notify_all()


def _generate(
    engine: Engine, cases: list[SchemaCase], policy: RetryPolicy, min_max_tokens: int
) -> None:
    for start in range(0, len(cases), _CALLERS):
        _generate_group(engine, cases[start : start + _CALLERS], start, policy, min_max_tokens)


def _generate_group(
    engine: Engine, group: list[SchemaCase], start: int, policy: RetryPolicy, min_max_tokens: int
) -> None:
    """`generate_validated` for each schema of `group`, in one thread each, sharing batches."""
    batcher = _RoundBatcher(engine, len(group))

    def run(index: int, case: SchemaCase) -> ValidatedResult:
        try:
            request = case.request(index, min_max_tokens)
            return generate_validated(batcher, [request], case.schema, policy)[0]
        finally:
            batcher.leave()

    with ThreadPoolExecutor(max_workers=len(group)) as pool:
        futures = [pool.submit(run, start + i, c) for i, c in enumerate(group)]
        for case, future in zip(group, futures):
            case.outcome = future.result()


def _invalid_reason(outcome: ValidatedResult) -> str:
    result = outcome.result
    if result is None or result.finish_reason == "error":
        return "engine_error"
    if result.finish_reason == "length":
        return "length"
    if outcome.value is None:
        return "not_json"
    return "schema_validation"


def _clip(result: Result | None, limit: int = 200) -> str:
    text = result.text if result is not None else ""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _replay_masks(cases: list[SchemaCase]) -> tuple[list[float], int]:
    """Per-token mask time (us) of one sequence, replaying each final output; and how many
    replayed tokens the mask did not allow (0 unless grammar and engine disagree)."""
    times: list[float] = []
    rejected = 0
    for case in cases:
        result = case.outcome.result
        if result is None or result.finish_reason == "error":
            continue
        state = GrammarState(case.compiled)
        bitmask = allocate_bitmask(1, state.vocab.n_vocab)
        for token in result.token_ids:
            t0 = time.perf_counter()
            fill_bitmasks([state], bitmask)
            times.append((time.perf_counter() - t0) * 1e6)
            word = int(bitmask[0, token // 32]) & 0xFFFFFFFF
            if not word >> (token % 32) & 1:
                rejected += 1
                break
            state.advance(token)
    return times, rejected


def _throughput(
    engine: Engine, cases: list[SchemaCase], batch: int, min_max_tokens: int
) -> dict[str, Any]:
    if not cases:
        return {"constrained_vs_unconstrained": None}
    picks = [cases[i % len(cases)] for i in range(batch)]
    constrained = [
        c.request(i, min_max_tokens, response_format=c.response_format, ignore_eos=True)
        for i, c in enumerate(picks)
    ]
    free = [dataclasses.replace(r, response_format=None) for r in constrained]
    warm_up = [dataclasses.replace(r, id=f"w{i}", max_tokens=4) for i, r in enumerate(free)]
    engine.generate(warm_up)  # the first full batch pays for allocations
    c_rate, c_results = _decode_rate(engine, constrained)
    lengths = [max(1, len(r.token_ids)) for r in c_results]
    matched = [dataclasses.replace(r, max_tokens=n) for r, n in zip(free, lengths)]
    m_rate, _ = _decode_rate(engine, matched)
    u_rate, _ = _decode_rate(engine, free)
    return {
        "constrained_vs_unconstrained": _ratio(c_rate, m_rate),
        "constrained_vs_unconstrained_same_max_tokens": _ratio(c_rate, u_rate),
        "decode_tokens_per_s": {
            "constrained": c_rate,
            "unconstrained_matched_lengths": m_rate,
            "unconstrained_same_max_tokens": u_rate,
        },
        "throughput_constrained_tokens": sum(len(r.token_ids) for r in c_results),
        "throughput_errors": sum(1 for r in c_results if r.finish_reason == "error"),
        "throughput_method": (
            f"batch {batch}, decode only (prefill excluded); the ratio gives each unconstrained "
            "request the length its constrained twin produced (ignore_eos), so both runs "
            "decode identical batch shapes"
        ),
    }


def _decode_rate(engine: Engine, requests: Sequence[Request]) -> tuple[float, list[Result]]:
    """Decode tokens/s from the step at which every request has its first token."""
    marks: list[tuple[float, int]] = []
    started = time.perf_counter()

    def progress(p: EngineProgress) -> None:
        if not marks and p.generated_tokens + p.errors >= p.total:
            marks.append((time.perf_counter() - started, p.generated_tokens))

    results = engine.generate(list(requests), progress=progress)
    wall = time.perf_counter() - started
    generated = sum(len(r.token_ids) for r in results)
    at, first = marks[0] if marks else (0.0, 0)
    decode_s = wall - at
    return ((generated - first) / decode_s if decode_s > 0 else 0.0), results


def _percentiles(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    p50, p99 = np.percentile(np.asarray(values), [50, 99])
    return float(p50), float(p99)


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="flashbeam bench schemas",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("path", help="a .jsonl file of schemas, or a folder of them")
    parser.add_argument("--limit", type=int, default=None, help="sample N schemas (default all)")
    parser.add_argument("--max-attempts", type=int, default=3)
    parser.add_argument(
        "--feedback", action="store_true", help="retries carry the validator's messages"
    )
    parser.add_argument(
        "--min-max-tokens", type=int, default=256, help="max_tokens: max(this, min_tokens + 64)"
    )
    parser.add_argument("--batch", type=int, default=32, help="throughput batch size")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--checkpoint", default=None, help="model directory (default: tiny)")
    args = parser.parse_args(argv)
    result = bench_schemas(
        args.path,
        limit=args.limit,
        max_attempts=args.max_attempts,
        feedback=args.feedback,
        min_max_tokens=args.min_max_tokens,
        batch=args.batch,
        threads=args.threads,
        checkpoint=args.checkpoint,
    )
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
