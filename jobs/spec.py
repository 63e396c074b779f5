"""Job specs: a YAML file validated into a `JobSpec`, with `--set key.path=value` overrides.

    job = load_job("jobs/extract_invoices.yaml", overrides=["task.max_tokens=64"])
    job.spec.task.max_tokens  # 64

YAML is read with a safe loader that also rejects duplicate keys. Relative paths written in the
file (`input.path`, a `task.schema` or `task.reduce.part_schema` file, `model.path`, the inputs
of `eval.sets`) resolve against the file's directory, so a job runs the same from any working
directory; paths given with `--set` resolve against the working directory, as on any command
line. Output paths are where you are: relative `output.path` / `output.errors` resolve against
the working directory.

Every error is a `JobError` whose message names the file (and line), the field path and the fix.
Every pipeline setting is defined once, in `flashbeam.pipelines.config`, with its type, bounds
and default. The sections that are pipeline settings as written (`input`, `task` with its
`retry`, `chunking` and `reduce`, `grouping`) are those dataclasses themselves, validated by
pydantic; `model` and `engine` (two sections of one `EngineConfig`) and `output` (path
templates, then the Parquet settings of `OutputConfig`) are made from their fields.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from flashbeam.pipelines.config import (
    EngineConfig,
    GroupingConfig,
    InputConfig,
    OutputConfig,
    TaskConfig,
)


class JobError(ValueError):
    """A job that cannot start: a bad spec, a missing file, a bad schema or model path."""


def _default(cls: type, name: str) -> Any:
    """A pipeline dataclass field's default."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _section_of(
    cls: type,
    name: str,
    only: tuple[str, ...] | None = None,
    exclude: tuple[str, ...] = (),
    keys: dict[str, str] | None = None,
    defaults: dict[str, Any] | None = None,
    before: dict[str, tuple[Any, Any]] | None = None,
) -> type[BaseModel]:
    """A spec section made from a pipeline dataclass: its fields with their types, bounds and
    defaults (`only` or all but `exclude`; `keys` renames fields to the words of a job file,
    `defaults` states where a job's default differs), after the job-only fields of `before`."""
    hints = typing.get_type_hints(cls, include_extras=True)
    members: dict[str, Any] = dict(before or {})
    for f in dataclasses.fields(cls):
        if f.name in exclude or (only is not None and f.name not in only):
            continue
        key = (keys or {}).get(f.name, f.name)
        members[key] = (hints[f.name], (defaults or {}).get(key, _default(cls, f.name)))
    return create_model(name, __base__=_Section, **members)


_MODEL_FIELDS = ("model", "device", "dtype", "kv_quant_sim")

# `model:` which checkpoint, where, in which precision; `kv_quant_sim` null: as its config says.
ModelSpec = _section_of(EngineConfig, "ModelSpec", only=_MODEL_FIELDS, keys={"model": "path"})

# `engine:` the rest of the engine's settings. One torch thread unless the job says otherwise:
# Beam runs several bundles at once.
EngineSpec = _section_of(
    EngineConfig, "EngineSpec", exclude=_MODEL_FIELDS, defaults={"torch_threads": 1}
)

# `output:` where the partition goes (templates with {name} and {date}), then the Parquet files'
# settings. `errors`: a separate directory for the errors files (null: `path`).
OutputSpec = _section_of(
    OutputConfig,
    "OutputSpec",
    exclude=("results", "errors"),
    before={"path": (str, "out/{name}/{date}"), "errors": (str | None, None)},
)


OptionValue = str | int | float | bool | list[str | int | float]


class RunnerSpec(_Section):
    name: str = "DirectRunner"
    options: dict[str, OptionValue] = Field(default_factory=dict)


class PricingSpec(_Section):
    """Hosted-API prices per million tokens (default: the published DeepSeek-V4-Flash prices)."""

    currency: str = "USD"
    input_cache_miss: float = Field(0.14, ge=0)
    input_cache_hit: float = Field(0.028, ge=0)
    output: float = Field(0.28, ge=0)


class EvalSpec(_Section):
    """What `flashbeam eval` scores besides the job's own input: further held-out inputs, each
    run through the same task and scored against the gold beside it (`<name>.gold.jsonl`)."""

    # Set name -> input path (relative to the job file, like input.path).
    sets: dict[str, str] = Field(default_factory=dict)


class JobSpec(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    description: str | None = None
    input: InputConfig
    task: TaskConfig = Field(default_factory=TaskConfig)
    model: ModelSpec = Field(default_factory=ModelSpec)
    engine: EngineSpec = Field(default_factory=EngineSpec)
    grouping: GroupingConfig = Field(default_factory=GroupingConfig)
    output: OutputSpec = Field(default_factory=OutputSpec)
    runner: RunnerSpec = Field(default_factory=RunnerSpec)
    pricing: PricingSpec = Field(default_factory=PricingSpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)


@dataclass(frozen=True)
class Job:
    """A validated spec and where it came from. `set_paths` are the fields set by `--set`."""

    spec: JobSpec
    source: Path
    set_paths: frozenset[str] = frozenset()

    @property
    def name(self) -> str:
        return self.spec.name


# ---- loading --------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """The safe loader, refusing duplicate keys (a silently ignored setting is a bug)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {seen[key]})",
                    key_node.start_mark,
                )  # fmt: skip
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def load_job(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Job:
    """Read, override and validate the job at `path`; raises JobError naming what to fix."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise JobError(f"{source}: no such job file; give the path of a job .yaml") from None
    except (OSError, UnicodeDecodeError) as e:
        raise JobError(f"{source}: cannot read the job file: {e}") from None
    try:
        data = yaml.load(text, Loader=_Loader)
        lines = _key_lines(yaml.compose(text, Loader=_Loader))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else str(source)
        problem = getattr(e, "problem", None) or str(e)
        raise JobError(f"{where}: not valid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise JobError(
            f"{source}: a job file is a mapping with at least `name:` and `input:` "
            f"(found {type(data).__name__})"
        )
    _resolve_file_paths(data, source.parent)
    set_paths = set()
    for override in overrides:
        set_paths.add(apply_override(data, override))
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as e:
        raise JobError(_explain(e, source, lines, set_paths)) from None
    return Job(spec, source, frozenset(set_paths))


def apply_override(data: dict[str, Any], override: str) -> str:
    """Apply one `key.path=value` (64, true, null, [a, b] read as YAML); returns the path."""
    key, sep, raw = override.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", p) for p in parts):
        raise JobError(
            f"--set {override!r}: expected key.path=value, for example "
            "--set task.max_tokens=64 or --set model.path=/ckpt"
        )
    try:
        value = _override_value(raw)
    except yaml.YAMLError as e:
        raise JobError(f"--set {override!r}: the value is not valid YAML: {e}") from None
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            here = ".".join(parts[: i + 1])
            raise JobError(f"--set {override!r}: {here} is a value, not a section with fields")
        node = child
    node[parts[-1]] = value
    return ".".join(parts)


def _override_value(raw: str) -> Any:
    """Numbers, booleans, null, quoted strings and [..] / {..} are read as YAML; anything else
    (`Say: hi`, `2026-01-02`) stays the text that was typed."""
    text = raw.strip()
    if not text:
        return raw
    value = yaml.load(raw, Loader=_Loader)
    if text[0] in "[{" or value is None or isinstance(value, bool | int | float | str):
        return value
    return raw


def _resolve_file_paths(data: dict[str, Any], base: Path) -> None:
    """Make the file's relative input, schema (task.schema, task.reduce.part_schema), model and
    eval set paths relative to the file itself."""

    def resolve(part: Any, key: str, keep: Any = ()) -> None:
        value = part.get(key) if isinstance(part, dict) else None
        if isinstance(value, str) and value and value not in keep and not _is_absolute(value):
            part[key] = os.path.normpath(base / value)

    resolve(data.get("input"), "path")
    evaluation = data.get("eval")
    sets = evaluation.get("sets") if isinstance(evaluation, dict) else None
    for name in sets if isinstance(sets, dict) else ():
        resolve(sets, name)
    resolve(data.get("model"), "path", keep=("tiny",))
    task = data.get("task")
    if isinstance(task, dict):
        for part, key in ((task, "schema"), (task.get("reduce"), "part_schema")):
            schema = part.get(key) if isinstance(part, dict) else None
            if isinstance(schema, str) and (schema.endswith(".json") or (base / schema).is_file()):
                resolve(part, key)


def _is_absolute(path: str) -> bool:
    return "://" in path or os.path.isabs(os.path.expanduser(path))


# ---- error messages -------------------------------------------------------------------------


def _key_lines(node: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], int]:
    """(field path) -> line of its key, for every mapping key in the composed YAML tree."""
    lines: dict[tuple[str, ...], int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = (*prefix, str(key_node.value))
            lines[path] = key_node.start_mark.line + 1
            lines.update(_key_lines(value_node, path))
    return lines


def _explain(error: ValidationError, source: Path, lines: dict, set_paths: set[str]) -> str:
    problems = []
    for e in error.errors():
        loc = tuple(str(p) for p in e["loc"])
        dotted = ".".join(loc) or "(top level)"
        # A section's own check names its fields in its message; the others get the path.
        section_check = e["type"] == "value_error" and isinstance(e.get("input"), dict)
        named = "" if section_check else f" {dotted}"
        if any(dotted == p or dotted.startswith(p + ".") for p in set_paths):
            where = f"--set{named}"
        else:
            line = next((lines[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in lines), 0)
            where = f"{source}:{line}:{named}" if line else f"{source}:{named}"
        problems.append(f"{where} {_fix(e, loc)}" if not named else f"{where}: {_fix(e, loc)}")
    head = f"{source}: the job spec has {len(problems)} problem(s):\n  "
    return head + "\n  ".join(problems)


def _fix(error: dict[str, Any], loc: tuple[str, ...]) -> str:
    kind, value = error["type"], error.get("input")
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        allowed = _fields_at(loc[:-1])
        close = difflib.get_close_matches(loc[-1], allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown field {loc[-1]!r}; {hint}fields here: {', '.join(allowed)}"
    if kind in ("missing", "missing_argument"):
        return f"required field is missing; add `{loc[-1]}:`"
    if kind == "value_error" and isinstance(value, dict):
        # A section's own check: its message names the fields and the fix.
        return str(error["ctx"]["error"]) if "ctx" in error else error["msg"]
    shown = repr(value) if not isinstance(value, dict | list) else type(value).__name__
    message = error["msg"].replace("Input should be", "should be")
    return f"{message} (got {shown})"


def _fields_at(loc: tuple[str, ...]) -> list[str]:
    section: Any = JobSpec
    for part in loc:
        section = _section_fields(section).get(part)
        if section is None:
            return []
    return list(_section_fields(section))


def _section_fields(section: Any) -> dict[str, Any]:
    """A spec section's key -> the section it opens (None for a value)."""

    def opened(annotation: Any) -> Any:
        is_section = isinstance(annotation, type) and (
            issubclass(annotation, BaseModel) or dataclasses.is_dataclass(annotation)
        )
        return annotation if is_section else None

    if isinstance(section, type) and issubclass(section, BaseModel):
        return {(f.alias or n): opened(f.annotation) for n, f in section.model_fields.items()}
    if dataclasses.is_dataclass(section):
        hints = typing.get_type_hints(section)
        return {f.name: opened(hints[f.name]) for f in dataclasses.fields(section)}
    return {}
