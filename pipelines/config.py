"""The typed configuration of one pipeline: what to read, what to ask, which engine, where to write.

These dataclasses are the one definition of the pipeline's settings: their fields, defaults and
bounds. A job spec (YAML, `flashbeam.jobs.spec`) is validated straight into them by pydantic,
which reads the bounds from the `Annotated` fields and refuses unknown keys; the Beam transforms
take them as plain values, so they pickle to workers unchanged. Every field has a working
default except the input and output locations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict, Field, with_config

from flashbeam.schemas import RetryPolicy, load_schema
from flashbeam.schemas.grounding import (
    array_kind,
    field_kind,
    json_types,
    object_kind,
    property_nodes,
    property_paths,
)
from flashbeam.schemas.levels import schema_constraint

InputFormat = Literal["jsonl", "parquet", "text", "openai_batch"]
TaskKind = Literal["extract", "summarize", "classify", "generate"]
MergeRule = Literal["first_non_null", "last_non_null", "most_common", "concat_unique", "min", "max"]
MERGE_RULES: tuple[str, ...] = MergeRule.__args__  # type: ignore[attr-defined]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_UNITS.update({"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40})


def parse_bytes(value: Any) -> Any:
    """1073741824, "1GiB", "512 MiB", "2GB" -> bytes; anything else is left for pydantic."""
    if isinstance(value, str):
        m = _SIZE.match(value)
        if not m:
            raise ValueError(f"{value!r} is not a size; write bytes (1048576) or 512MiB, 2GiB, 1GB")
        return int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower()])
    return value


# A size in bytes; a job spec may write it 512MiB, 2GiB, 1GB.
Bytes = Annotated[int, BeforeValidator(parse_bytes)]
Codec = Literal["snappy", "gzip", "zstd", "lz4", "brotli", "none"]

# A job spec's sections refuse keys they do not know: a misspelt setting is not silently ignored.
_SECTION = ConfigDict(extra="forbid")


@with_config(_SECTION)
@dataclass(frozen=True)
class InputConfig:
    """`path` is a file or glob (local or any Beam filesystem: gs://, s3://, hdfs://).

    JSONL and Parquet take the document from `text_field` and the id from `id_field` (when
    None, the id is `<path relative to the glob's base>:<line or row>`); text files are one
    document each (id: the relative path); OpenAI batch lines use `custom_id`.
    """

    path: str
    format: InputFormat = "jsonl"
    text_field: str = "text"
    id_field: str | None = None


@with_config(_SECTION)
@dataclass(frozen=True)
class ChunkingConfig:
    """Documents over `max_tokens` tokens are split into chunks of at most `max_tokens` tokens
    that overlap by `overlap_tokens`; `max_tokens=None` sends every document whole."""

    max_tokens: int | None = 4096
    overlap_tokens: int = 128

    def __post_init__(self) -> None:
        if self.max_tokens is not None and self.max_tokens < 16:
            raise ValueError(
                f"task.chunking.max_tokens must be >= 16 or None, got {self.max_tokens}"
            )
        limit = self.max_tokens // 2 if self.max_tokens else None
        if self.overlap_tokens < 0 or (limit is not None and self.overlap_tokens > limit):
            raise ValueError(
                f"task.chunking.overlap_tokens must be between 0 and half of max_tokens ({limit}), "
                f"got {self.overlap_tokens}"
            )


@with_config(_SECTION)
@dataclass(frozen=True)
class ReduceConfig:
    """How the outputs of a chunked document's parts become one output.

    `mode="prompt"` asks the model again with `instructions` over the parts' outputs (summaries
    summarized again, for up to `rounds` levels); `mode="merge"` merges the parts' JSON objects
    field by field: `rules` maps a top-level property to a rule, `default_rule` covers the rest
    (None: arrays `concat_unique`, everything else `most_common`). `on_part_error="fail"` turns
    a document with any failed part into an error row; `"skip"` reduces the parts that succeeded
    and records the number of failed parts in the row.

    Prompt mode only: `part_schema` is the JSON Schema the parts' outputs follow when it differs
    from the task's (e.g. chunk summaries merged into a report summary; None: the task schema);
    the reduce requests' outputs follow the task schema. `max_input_tokens` is the token budget
    of the parts packed into one reduce request (None: `chunking.max_tokens`). The fields named
    in `rules` are merged by their rule from the map outputs, not written by the reduce prompt:
    their merged values replace the model's in the final output, which must then still
    validate (e.g. `people: concat_unique` gathers each chunk's names, where a model asked to
    merge lists tends to repeat or drop entries). `default_rule` is for merge mode only.

    `exclude` maps a list property of the reduced output to another of its properties whose
    value (or values) the list must not hold: `{people: author}` drops the author from the
    people, whoever wrote them. It applies last, in either mode.
    """

    mode: Literal["auto", "prompt", "merge"] = "auto"
    instructions: str | None = None
    rules: dict[str, MergeRule] = field(default_factory=dict)
    default_rule: MergeRule | None = None
    rounds: Annotated[int, Field(ge=1)] = 3
    on_part_error: Literal["fail", "skip"] = "fail"
    part_schema: Any = None
    max_input_tokens: Annotated[int | None, Field(ge=1)] = None
    exclude: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.part_schema is not None:
            part_schema = load_schema(self.part_schema, where="task.reduce.part_schema")
            if not isinstance(self.part_schema, dict):
                object.__setattr__(self, "part_schema", part_schema)
        if self.max_input_tokens is not None and self.max_input_tokens < 1:
            raise ValueError(
                f"task.reduce.max_input_tokens must be >= 1, or None for task.chunking.max_tokens; "
                f"got {self.max_input_tokens}"
            )
        bad = {k: v for k, v in self.rules.items() if v not in MERGE_RULES}
        if bad or (self.default_rule is not None and self.default_rule not in MERGE_RULES):
            raise ValueError(
                f"task.reduce.rules {bad or self.default_rule} are not merge rules; use one of "
                f"{', '.join(MERGE_RULES)}"
            )
        if self.rounds < 1:
            raise ValueError(f"task.reduce.rounds must be >= 1, got {self.rounds}")

    def mode_for(self, kind: TaskKind, has_schema: bool) -> Literal["prompt", "merge"]:
        """The mode in effect: merging needs JSON outputs, so free text is always reduced by
        prompt; "auto" merges extractions and classifications and prompts the rest."""
        if not has_schema:
            return "prompt"
        if self.mode != "auto":
            return self.mode
        return "merge" if kind in ("extract", "classify") else "prompt"


@with_config(_SECTION)
@dataclass(frozen=True)
class TaskConfig:
    """What to ask about each document.

    The prompt is `instructions` (system, with the JSON Schema attached when `schema_in_prompt`),
    then the document rendered by `document_template` (`{document}`, `{id}`, `{part}`,
    `{parts}`), then one request per entry of `questions` (None: the kind's default question).
    `schema` is anything `flashbeam.schemas.load_schema` accepts; None means free text. The
    map requests of a split document use `reduce.part_schema` instead, when it is set.
    `grounded` names fields (property paths, `figures.value` inside arrays of objects) that
    constrained decoding may only fill with values the request's text states
    (`flashbeam.schemas.grounding`): the chunk for a map request, the whole document for a
    reduce request, the user and assistant messages of a chat record.
    `constraint` is "auto" (each schema gets the tightest grammar the engine accepts: exact,
    relaxed or none; outputs are validated against the full schema either way) or "exact" (a
    schema the grammar cannot enforce whole is refused up front).
    `timeout_s` is each request's deadline, its retries included (None: none): a request past
    it ends as an error row and the rest of the job goes on.
    """

    kind: TaskKind = "extract"
    schema: Any = None
    instructions: str | None = None
    document_template: str = "{document}"
    questions: tuple[str, ...] | None = None
    max_tokens: Annotated[int, Field(ge=1)] = 512
    temperature: Annotated[float, Field(ge=0)] = 0.0
    thinking: bool = False
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    schema_in_prompt: bool = True
    chunking: ChunkingConfig = field(default_factory=ChunkingConfig)
    reduce: ReduceConfig = field(default_factory=ReduceConfig)
    grounded: tuple[str, ...] = ()
    constraint: Literal["auto", "exact"] = "auto"
    timeout_s: float | None = None

    def __post_init__(self) -> None:
        if self.schema is not None and not isinstance(self.schema, dict):
            object.__setattr__(self, "schema", load_schema(self.schema, where="task.schema"))
        elif self.schema is not None:
            load_schema(self.schema, where="task.schema")  # raises SchemaError naming the problem
        if self.questions is not None:
            object.__setattr__(self, "questions", tuple(self.questions))
            if not self.questions:
                raise ValueError("task.questions is empty; leave it out for the default question")
        if self.max_tokens < 1:
            raise ValueError(f"task.max_tokens must be >= 1, got {self.max_tokens}")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise ValueError(f"task.timeout_s must be > 0 seconds or None, got {self.timeout_s}")
        self._check_part_schema()
        self._check_prompt_rules()
        self._check_exclude()
        object.__setattr__(self, "grounded", tuple(self.grounded))
        self._check_grounded()
        self._check_constraint()

    def _check_constraint(self) -> None:
        if self.constraint not in ("auto", "exact"):
            raise ValueError(f"task.constraint must be auto or exact, got {self.constraint!r}")
        if self.constraint != "exact":
            return
        for where, schema in (
            ("schema", self.schema),
            ("reduce.part_schema", self.reduce.part_schema),
        ):
            plan = schema_constraint(schema) if schema is not None else None
            if plan is not None and plan.level != "exact":
                name = schema.get("title", "output")
                raise ValueError(
                    f"task.constraint is exact, but task.{where} is not: {plan.exact_refusal(name)}"
                )

    def _check_part_schema(self) -> None:
        if self.reduce.part_schema is None:
            return
        if self.schema is None:
            raise ValueError(
                "task.reduce.part_schema needs task.schema: the parts follow part_schema and "
                "the reduced output the task schema; set task.schema, or remove part_schema"
            )
        if self.reduce.mode_for(self.kind, True) == "merge":
            raise ValueError(
                f"task.reduce.part_schema does not work with merge mode (reduce.mode "
                f"{self.reduce.mode!r}, kind {self.kind!r}): merging needs parts in the task "
                "schema; set reduce.mode to prompt, or remove part_schema"
            )

    def _check_prompt_rules(self) -> None:
        """Prompt mode merges the fields named in `reduce.rules` from the parts' outputs: they
        must be properties of the task schema and of the parts' schema."""
        reduce = self.reduce
        if reduce.mode_for(self.kind, self.schema is not None) != "prompt":
            return
        if reduce.default_rule is not None:
            raise ValueError(
                f"task.reduce.default_rule ({reduce.default_rule!r}) applies to merge mode only; "
                "in prompt mode name each field to merge from the parts in reduce.rules, or set "
                "reduce.mode to merge"
            )
        if not reduce.rules:
            return
        if self.schema is None:
            raise ValueError(
                "task.reduce.rules in prompt mode merge schema fields from the parts; set "
                "task.schema, or remove reduce.rules"
            )
        for name, schema in (("task", self.schema), ("part", reduce.part_schema or self.schema)):
            known = list(schema.get("properties", {}))
            missing = [k for k in reduce.rules if k not in known]
            if missing:
                raise ValueError(
                    f"task.reduce.rules: {', '.join(map(repr, missing))} not a top-level "
                    f"property of the {name} schema; prompt mode merges fields that both the "
                    f"parts and the reduced output have (known: {', '.join(known) or 'none'})"
                )

    def _check_exclude(self) -> None:
        """`reduce.exclude` pairs a list property of the task schema with another property."""
        exclude = self.reduce.exclude
        if not exclude:
            return
        if self.schema is None:
            raise ValueError(
                "task.reduce.exclude drops entries from a list property of the task schema; set "
                "task.schema, or remove reduce.exclude"
            )
        properties = self.schema.get("properties", {})
        known = ", ".join(properties) or "none"
        for name, other in exclude.items():
            for prop in (name, other):
                if prop not in properties:
                    raise ValueError(
                        f"task.reduce.exclude: {prop!r} is not a top-level property of the task "
                        f"schema (known: {known})"
                    )
            if "array" not in json_types(properties[name]):
                raise ValueError(
                    f"task.reduce.exclude: {name!r} is not a list (an array property); exclude "
                    f"drops entries from a list, e.g. people: author"
                )
            if name == other:
                raise ValueError(f"task.reduce.exclude: {name!r} cannot exclude itself")

    def _check_grounded(self) -> None:
        if not self.grounded:
            return
        if self.schema is None:
            raise ValueError(
                "task.grounded needs task.schema: grounding constrains schema fields; set "
                "task.schema, or remove task.grounded"
            )
        if not self.retry.constrained:
            raise ValueError(
                "task.grounded needs constrained decoding, but task.retry.constrained is false; "
                "set it to true, or remove task.grounded"
            )
        schemas = [s for s in (self.schema, self.reduce.part_schema) if s is not None]
        for path in self.grounded:
            if not any(property_nodes(s, path) for s in schemas):
                known = sorted({p for s in schemas for p in property_paths(s)})
                raise ValueError(
                    f"task.grounded: {path!r} is not a property of the task schema"
                    f"{' or the part schema' if len(schemas) > 1 else ''}; name property paths "
                    f"such as 'vendor' or 'figures.value' (known: {', '.join(known) or 'none'})"
                )
            parent = path.rpartition(".")[0]
            try:
                for schema in schemas:
                    for node in property_nodes(schema, path):
                        field_kind(node)
                    for node in property_nodes(schema, path, items=False):
                        if "array" in json_types(node):
                            array_kind(node)
                    for node in property_nodes(schema, parent) if parent else []:
                        object_kind(node)
            except ValueError as e:
                raise ValueError(f"task.grounded: {path!r}: {e}") from None

    def schema_for(self, source: str) -> dict[str, Any] | None:
        """The schema a request's `schema_source` names: "task", "part" (a split document's
        map outputs), anything else None."""
        if source == "part":
            return self.reduce.part_schema
        return self.schema if source == "task" else None


@dataclass(frozen=True)
class EngineConfig:
    """The engine each worker process loads once (see `pipelines.handler.engine_for`).

    `max_pending` bounds the requests the engine holds at once (queued and running): a worker's
    threads block in `submit` beyond it, so memory stays bounded.
    `torch_threads` caps intra-op threads; set 1 when several worker processes share few cores.
    `kv_quant_sim` (None: as the checkpoint's config says) rounds cached KV as the official
    runtime does (`ModelConfig.kv_quant_sim`). `tensor_parallel` > 1 spreads the model over
    that many ranks of the worker (`devices`, one per rank; default cuda:0..N-1 on a GPU
    worker): the engine starts the helper processes itself. `cuda_graphs` replays decode steps
    from CUDA graphs (one CUDA device, `tensor_parallel` 1).
    """

    model: str = "tiny"
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    kv_quant_sim: bool | None = None
    max_batch_tokens: Annotated[int, Field(ge=1)] = 2048
    max_batch_size: Annotated[int, Field(ge=1)] = 64
    cache_bytes: Annotated[Bytes, Field(ge=0)] = 1 << 30
    max_pending: Annotated[int, Field(ge=1)] = 1024
    torch_threads: Annotated[int | None, Field(ge=1)] = None
    tensor_parallel: Annotated[int, Field(ge=1)] = 1
    devices: tuple[str, ...] | None = None
    cuda_graphs: bool = False

    def __post_init__(self) -> None:
        if self.cuda_graphs and (not self.device.startswith("cuda") or self.tensor_parallel > 1):
            raise ValueError(
                "cuda_graphs needs one CUDA device (model.device cuda, engine.tensor_parallel "
                f"1), got device {self.device!r} and tensor_parallel {self.tensor_parallel}; "
                "set engine.cuda_graphs: false"
            )


@with_config(_SECTION)
@dataclass(frozen=True)
class GroupingConfig:
    """Requests are keyed by the fingerprint of their `block_tokens`-aligned shared prompt
    prefix; a key's requests go to one worker in groups of at most `max_group_requests`, and
    one engine call takes about `requests_per_call` requests (whole groups).
    `enabled=False` scatters requests instead (the benchmark's baseline)."""

    enabled: bool = True
    block_tokens: Annotated[int, Field(ge=1)] = 128
    max_group_requests: Annotated[int, Field(ge=1)] = 64
    requests_per_call: Annotated[int, Field(ge=1)] = 64


@dataclass(frozen=True)
class OutputConfig:
    """Result and error Parquet files are written as `<results>-SSSSS-of-NNNNN.parquet` and
    `<errors>-...`. `metadata_prefix` is put before the metadata column names (id, valid, ...)
    when they would collide with the schema's properties."""

    results: str
    errors: str
    num_shards: Annotated[int, Field(ge=0)] = 0
    row_group_bytes: Annotated[Bytes, Field(ge=1)] = 64 << 20
    record_batch_rows: Annotated[int, Field(ge=1)] = 1000
    codec: Codec = "snappy"
    metadata_prefix: str = ""


@dataclass(frozen=True)
class ResumeConfig:
    """Where the engine's finished outcomes are made durable as the job goes (`store`), the
    files an earlier run left there to reuse (listed before the run starts), and this run's id
    (its files' names). See `pipelines.resume`."""

    store: str
    files: tuple[str, ...] = ()
    run_id: str = "run"


@dataclass(frozen=True)
class PipelineConfig:
    input: InputConfig
    output: OutputConfig
    task: TaskConfig = field(default_factory=TaskConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    grouping: GroupingConfig = field(default_factory=GroupingConfig)
    resume: ResumeConfig | None = None  # None: nothing is kept or reused
