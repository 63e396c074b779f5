"""Finished results made durable as a job goes, and reused by a later run of the same job.

Outcomes are kept as soon as they are final: gathered for a couple of seconds (or a few hundred
outcomes) and written as one file of the job's `finished/` store (`ResumeConfig.store`, in the
output's staging area), and what is left when an engine batch ends:

    <store>/<run id>-<writer>-<seq>.jsonl      one line per outcome: {"key": ..., "outcome": ...}

A line's key proves the outcome still applies (`request_key`): it is a hash of the request
(record id and item, chunk and reduce level, the prompt's messages, sampling settings and
response format), the schema the output was validated against, the grounded fields and the
text they copy from, the retry policy and constraint setting, and the model
(`model_fingerprint`: the checkpoint's files, dtype, device, kv_quant_sim and flashbeam's
version). A later run computes the keys of its own requests, reuses the outcomes whose keys
match (`ReuseFinished`) and sends only the rest to the engine, so a changed input record,
schema or model invalidates exactly the requests it changes. Engine errors are not kept: they
are retried by the next run.

Files appear whole (written aside, then renamed; on object stores an object appears when it is
closed), so a killed run loses only the outcomes not yet written: a few seconds of work. A
line that does not parse is skipped (its request is computed again).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from flashbeam import __version__
from flashbeam.model.checkpoint.loading import resolve_checkpoint
from flashbeam.model.engine.request import Usage

from .config import EngineConfig, GroupingConfig, ResumeConfig, TaskConfig
from .handler import PromptGroupHandler
from .metrics import count
from .records import ItemStats, PromptRequest, RequestOutcome

SUFFIX = ".jsonl"
_SMALL_FILE = 64 << 20  # checkpoint files up to this size are fingerprinted by their content


# ---- keys ---------------------------------------------------------------------------------------


_fingerprints: dict[EngineConfig, str] = {}
_fingerprints_lock = threading.Lock()


def model_fingerprint(engine: EngineConfig) -> str:
    """A hash of what decides the model's outputs: the checkpoint's small files (config,
    tokenizer) by content, its weight files by name, size, modification time and safetensors
    header, and the engine settings that change numerics. Computed once per process."""
    with _fingerprints_lock:
        if engine not in _fingerprints:
            _fingerprints[engine] = _model_fingerprint(engine)
        return _fingerprints[engine]


def _model_fingerprint(engine: EngineConfig) -> str:
    digest = hashlib.blake2b(digest_size=16)
    settings = [__version__, engine.dtype, engine.device, engine.kv_quant_sim]
    digest.update(json.dumps(settings).encode("utf-8"))
    directory = resolve_checkpoint(engine.model)
    for path in sorted(p for p in Path(directory).iterdir() if p.is_file()):
        stat = path.stat()
        digest.update(f"\0{path.name}\0{stat.st_size}\0".encode())
        if path.suffix == ".safetensors" or stat.st_size > _SMALL_FILE:
            digest.update(str(stat.st_mtime_ns).encode())
            digest.update(_safetensors_header(path))
        else:
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _safetensors_header(path: Path) -> bytes:
    """The header (tensor names, dtypes, shapes, offsets, metadata); b"" for other files."""
    with open(path, "rb") as f:
        head = f.read(8)
        size = int.from_bytes(head, "little") if len(head) == 8 else 0
        return f.read(size) if 0 < size <= _SMALL_FILE else b""


def request_key(prompt: PromptRequest, task: TaskConfig, model: str) -> str:
    """The key under which the outcome of `prompt` is kept (see the module's docstring)."""
    source = prompt.schema_source
    grounded = task.grounded if source in ("task", "part") else ()
    payload = {
        "item": list(prompt.item),
        "chunk": prompt.chunk_index,
        "level": prompt.level,
        "final": prompt.final,
        "request": dataclasses.asdict(prompt.request),
        "schema_source": source,
        "schema": task.schema_for(source),
        "grounded": list(grounded),
        "grounding_text": _hash(prompt.grounding_text) if grounded else None,
        "retry": dataclasses.asdict(task.retry),
        "constraint": task.constraint,
        "model": model,
    }
    return _hash(json.dumps(payload, sort_keys=True, ensure_ascii=False, default=repr))


def _hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=20).hexdigest()


# ---- records ------------------------------------------------------------------------------------


def finished_line(key: str, outcome: RequestOutcome) -> str:
    """One store line: the outcome without its prompt (the re-run has the prompt)."""
    fields = {
        "request_id": outcome.prompt.request.id,
        "valid": outcome.valid,
        "attempts": outcome.attempts,
        "errors": outcome.errors,
        "value": outcome.value,
        "text": outcome.text,
        "reasoning_content": outcome.reasoning_content,
        "finish_reason": outcome.finish_reason,
        "usage": dataclasses.asdict(outcome.usage),
        "latency_s": outcome.latency_s,
        "model": outcome.model,
        "constraint": outcome.constraint,
    }
    return json.dumps({"key": key, "outcome": fields}, ensure_ascii=False) + "\n"


def reused_outcome(prompt: PromptRequest, fields: dict[str, Any]) -> RequestOutcome:
    """The outcome an earlier run kept for `prompt`, marked as reused."""
    return RequestOutcome(
        prompt=prompt,
        valid=fields["valid"],
        attempts=fields["attempts"],
        errors=list(fields["errors"]),
        value=fields["value"],
        text=fields["text"],
        reasoning_content=fields["reasoning_content"],
        finish_reason=fields["finish_reason"],
        usage=Usage(**fields["usage"]),
        latency_s=fields["latency_s"],
        model=fields["model"],
        constraint=fields["constraint"],
        reused=True,
    )


def worth_keeping(outcome: RequestOutcome) -> bool:
    """Engine errors (out of memory, a deadline, a lost device) are tried again next time."""
    return outcome.finish_reason != "error"


def read_finished(path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(key, outcome fields) of every whole line of one store file."""
    with FileSystems.open(path) as f:
        data = f.read()
    for line in data.decode("utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
            yield record["key"], record["outcome"]
        except (ValueError, KeyError, TypeError):
            continue


def list_finished(store: str) -> list[str]:
    """The store's files (a file being written, `.<name>`, is not one yet)."""
    if "://" not in store or store.startswith("file://"):
        root = store.removeprefix("file://")
        try:
            names = os.listdir(root)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [f"{store}/{n}" for n in sorted(names) if n.endswith(SUFFIX) and n[0] != "."]
    try:
        found = FileSystems.match([store.rstrip("/") + "/*" + SUFFIX])[0].metadata_list
    except Exception:  # noqa: BLE001 - Beam raises BeamIOError when nothing matches
        return []
    return sorted(m.path for m in found if not m.path.rsplit("/", 1)[-1].startswith("."))


class FinishedWriter:
    """Keeps outcomes as they become final: buffered, and written to a new store file when
    `flush_rows` are waiting, when an outcome arrives and the oldest has waited `flush_s`
    seconds, and at `flush()` (the end of each engine batch). While outcomes keep arriving a
    crash loses a few seconds of work. Safe from any thread."""

    def __init__(
        self,
        config: ResumeConfig,
        task: TaskConfig,
        engine: EngineConfig,
        flush_rows: int = 256,
        flush_s: float = 2.0,
    ):
        self.config, self.task, self.engine = config, task, engine
        self.flush_rows, self.flush_s = flush_rows, flush_s
        self.writer = uuid.uuid4().hex[:8]
        self.written = 0
        self._lines: list[str] = []
        self._oldest = 0.0
        self._lock = threading.Lock()
        self._writing = threading.Lock()

    def add(self, outcome: RequestOutcome) -> None:
        if not worth_keeping(outcome):
            return
        key = request_key(outcome.prompt, self.task, model_fingerprint(self.engine))
        with self._lock:
            if not self._lines:
                self._oldest = time.monotonic()
            self._lines.append(finished_line(key, outcome))
            due = len(self._lines) >= self.flush_rows
            due = due or time.monotonic() - self._oldest >= self.flush_s
        if due:
            self.flush()

    def flush(self) -> None:
        """Write what is waiting as one new file of the store."""
        with self._writing:
            with self._lock:
                lines, self._lines = self._lines, []
            if not lines:
                return
            self.written += 1
            name = f"{self.config.run_id}-{self.writer}-{self.written:06d}{SUFFIX}"
            _write_whole(f"{self.config.store}/{name}", "".join(lines).encode("utf-8"))


def _write_whole(path: str, data: bytes) -> None:
    """Write `path` so that it appears whole or not at all."""
    if "://" in path and not path.startswith("file://"):
        with FileSystems.create(path) as f:
            f.write(data)
        return
    path = path.removeprefix("file://")
    directory, name = os.path.split(path)
    os.makedirs(directory, exist_ok=True)
    aside = os.path.join(directory, f".{name}")
    with open(aside, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(aside, path)


# ---- Beam ---------------------------------------------------------------------------------------


def handler_for(
    engine: EngineConfig, task: TaskConfig, grouping: GroupingConfig, resume: ResumeConfig | None
) -> PromptGroupHandler:
    """The RunInference handler of a job: durable when the job keeps its finished outcomes."""
    if resume is None:
        return PromptGroupHandler(engine, task, grouping.requests_per_call)
    return DurablePromptGroupHandler(engine, task, grouping.requests_per_call, resume)


class DurablePromptGroupHandler(PromptGroupHandler):
    """A PromptGroupHandler that keeps each outcome in the store as soon as it is final
    (`FinishedWriter`), and the rest of a batch when the batch ends."""

    def __init__(
        self,
        config: EngineConfig,
        task: TaskConfig,
        requests_per_call: int,
        resume: ResumeConfig,
    ):
        super().__init__(config, task, requests_per_call)
        self.resume = resume
        self._writer: FinishedWriter | None = None

    def run_inference(self, batch, model, inference_args=None):
        if self._writer is None:
            self._writer = FinishedWriter(self.resume, self.task, self.config)
        try:
            return self.run_groups(batch, self._writer.add)
        finally:
            self._writer.flush()


class ReuseFinished(beam.PTransform):
    """PromptRequests -> (RequestOutcomes reused from the store, PromptRequests to run): each
    request is matched with the store's outcomes by its key."""

    def __init__(self, resume: ResumeConfig, engine: EngineConfig, task: TaskConfig):
        super().__init__()
        self.resume, self.engine, self.task = resume, engine, task

    def expand(self, prompts):
        keyed = prompts | "Key requests" >> beam.ParDo(_KeyRequests(self.engine, self.task))
        finished = (
            prompts.pipeline
            | "Finished files" >> beam.Create(list(self.resume.files))
            | "Read finished" >> beam.FlatMap(read_finished)
        )
        matched = (
            {"prompts": keyed, "finished": finished}
            | "Match finished" >> beam.CoGroupByKey()
            | "Reuse or run" >> beam.FlatMapTuple(_reuse_or_run)
        )
        return (
            matched | "Reused" >> beam.Filter(lambda x: isinstance(x, RequestOutcome)),
            matched | "To run" >> beam.Filter(lambda x: isinstance(x, PromptRequest)),
        )


class _KeyRequests(beam.DoFn):
    def __init__(self, engine: EngineConfig, task: TaskConfig):
        self.engine, self.task = engine, task

    def setup(self):
        self.model = model_fingerprint(self.engine)

    def process(self, prompt: PromptRequest):
        yield request_key(prompt, self.task, self.model), prompt


def _reuse_or_run(_: str, matched: dict[str, Iterable[Any]]) -> Iterator[Any]:
    prompts = list(matched["prompts"])
    finished = next(iter(matched["finished"]), None)
    if finished is None:
        yield from prompts
        return
    for prompt in prompts:
        count("requests_reused")
        yield reused_outcome(prompt, finished)


def count_row(stats: ItemStats | None) -> None:
    """Count a written row as reused when every request behind it was."""
    if stats is not None and stats.requests and stats.requests_reused == stats.requests:
        count("rows_reused")
