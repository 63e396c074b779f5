"""Run a job for one date: plan it, check it, run the pipeline into staging, then finalize.

    job = load_job("jobs/extract_invoices.yaml")
    plan = plan_job(job, date=dt.date(2026, 1, 31))
    outcome = run_job(plan)          # outcome.exit_code: 0 all rows valid, 3 some error rows
    outcome.manifest["counts"]

`plan_job` turns the spec into the pipeline's settings (templates filled, schema loaded, Beam
options assembled); `check_plan` does every check that needs no inference; `run_job` writes the
partition atomically (see `partition`) with `manifest.json` and `_SUCCESS`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from flashbeam.model.checkpoint.loading import resolve_checkpoint
from flashbeam.model.checkpoint.reader import CheckpointReader
from flashbeam.model.network.config import ModelConfig
from flashbeam.model.network.parallel import check_world_size
from flashbeam.pipelines import (
    EngineConfig,
    OutputConfig,
    PipelineConfig,
    RunReport,
    check_config,
    check_runner,
    match_input,
    run_pipeline,
)
from flashbeam.pipelines.validate import constraint_report

from . import EXIT_ERROR_ROWS, EXIT_FAILED, EXIT_OK
from .claim import OutputClaim, claim_outputs
from .faults import check_output, describe_failure, finished_kept, output_fault
from .lock import OutputBusy
from .manifest import OutputFile, build_manifest, manifest_bytes
from .parquet_files import parquet_rows
from .partition import Partition, is_local
from .progress import LiveProgress
from .spec import Job, JobError, RunnerSpec

TEMPLATE_FIELDS = ("date", "name")


class RunFailed(RuntimeError):
    """The pipeline failed or did not finish; the previous partition was left as it was."""


@dataclass
class Plan:
    """A job made concrete for one date: where it reads and writes, and the pipeline settings."""

    job: Job
    date: dt.date
    input_path: str
    results: Partition
    errors: Partition | None  # None: errors files go into the results partition
    config: PipelineConfig
    beam_args: list[str]

    @property
    def partitions(self) -> list[Partition]:
        return [p for p in (self.errors, self.results) if p is not None]

    @property
    def runner(self) -> str:
        runner = PipelineOptions(self.beam_args).view_as(StandardOptions).runner
        return str(runner or "DirectRunner")

    @property
    def in_process(self) -> bool:
        """Whether the workers run in this process (the progress display can follow them)."""
        mode = PipelineOptions(self.beam_args).view_as(DirectOptions).direct_running_mode
        return self.runner in ("DirectRunner", "direct") and mode in (
            "in_memory",
            "multi_threading",
        )


@dataclass
class JobOutcome:
    plan: Plan
    report: RunReport
    manifest: dict[str, Any]
    notices: list[str] = dataclasses.field(default_factory=list)  # what was taken over, reused

    @property
    def exit_code(self) -> int:
        if not self.manifest["reconciled"]:
            return EXIT_FAILED
        return EXIT_ERROR_ROWS if self.manifest["counts"]["errors"] else EXIT_OK


# ---- planning -------------------------------------------------------------------------------


def render(template: str, where: str, job: Job, date: dt.date) -> str:
    """Fill `{date}` (YYYY-MM-DD) and `{name}` into a path template."""
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as e:
        raise JobError(f"{job.source}: {where} {template!r} is not a valid template: {e}") from None
    unknown = sorted(fields - set(TEMPLATE_FIELDS))
    if unknown:
        raise JobError(
            f"{job.source}: {where} {template!r} uses {{{unknown[0]}}}; only {{date}} and "
            "{name} are filled in (write a literal brace as {{ or }})"
        )
    return template.format(date=date.isoformat(), name=job.name)


def plan_job(
    job: Job, date: dt.date | None = None, beam_args: list[str] | tuple[str, ...] = ()
) -> Plan:
    """The job's pipeline settings for `date` (default today); raises JobError."""
    date = date or dt.date.today()
    spec = job.spec
    input_path = render(spec.input.path, "input.path", job, date)
    results = _partition(job, "output.path", spec.output.path, date)
    errors = None
    if spec.output.errors is not None:
        errors = _partition(job, "output.errors", spec.output.errors, date)
        if errors.path == results.path:
            errors = None
        elif _nested(errors.path, results.path):
            raise JobError(
                f"{job.source}: output.errors {errors.path!r} and output.path {results.path!r} "
                "are inside one another; give them separate directories or leave errors unset"
            )
    config = PipelineConfig(
        input=dataclasses.replace(spec.input, path=input_path),
        output=_section(
            job,
            "output",
            lambda: OutputConfig(
                results=results.file("results"),
                errors=(errors or results).file("errors"),
                **_fields(spec.output, exclude=("path", "errors")),
            ),
        ),
        task=spec.task,
        engine=_section(
            job,
            "engine",
            lambda: EngineConfig(
                model=spec.model.path,
                device=spec.model.device,
                dtype=spec.model.dtype,
                kv_quant_sim=spec.model.kv_quant_sim,
                **_fields(spec.engine),
            ),
        ),
        grouping=spec.grouping,
    )
    return Plan(job, date, input_path, results, errors, config, runner_args(spec.runner, beam_args))


def _partition(job: Job, where: str, template: str, date: dt.date) -> Partition:
    return _section(job, where, lambda: Partition.for_path(render(template, where, job, date)))


def runner_args(runner: RunnerSpec, extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Beam options: the runner and its options from the spec, then `extra` (which win).
    A DirectRunner runs in this process unless its options say otherwise."""
    args = [f"--runner={runner.name}"]
    for key, value in runner.options.items():
        for item in value if isinstance(value, list) else [value]:
            if item is True:
                args.append(f"--{key}")
            elif item is not False:
                args.append(f"--{key}={item}")
    args.extend(extra)
    if PipelineOptions(args).view_as(StandardOptions).runner in ("DirectRunner", "direct"):
        for option in ("direct_running_mode=in_memory", "direct_num_workers=1"):
            if not any(a.startswith("--" + option.split("=")[0]) for a in args):
                args.insert(1, "--" + option)
    return args


def _fields(section: Any, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    return {k: getattr(section, k) for k in type(section).model_fields if k not in exclude}


def _section(job: Job, where: str, build: Callable[[], Any]) -> Any:
    """Build one pipeline setting; its own checks become JobErrors naming the spec section."""
    try:
        return build()
    except JobError:
        raise
    except (ValueError, TypeError) as e:
        raise JobError(f"{job.source}: {where}: {e}") from None


def _nested(a: str, b: str) -> bool:
    return a.startswith(b + "/") or b.startswith(a + "/")


# ---- checks ---------------------------------------------------------------------------------


def check_plan(plan: Plan, check_model: bool = True) -> list[str]:
    """Every check that needs no inference: input files, template, schema columns, model
    directory, weights' headers and tokenizer. Returns the input files; raises JobError."""
    source = plan.job.source
    try:
        files = match_input(plan.input_path)
    except ValueError as e:
        raise JobError(f"{source}: {e}") from None
    if check_model:
        engine = plan.config.engine
        check_checkpoint(
            engine.model, f"{source}: model.path", engine.kv_quant_sim, engine.tensor_parallel
        )
    try:
        check_config(plan.config, check_model=check_model)
        check_runner(PipelineOptions(plan.beam_args))
    except (ValueError, OSError) as e:
        raise JobError(f"{source}: {e}") from None
    for partition in plan.partitions:
        try:
            check_output(partition, "output.path" if partition is plan.results else "output.errors")
        except ValueError as e:
            raise JobError(f"{source}: {e}") from None
    return files


def check_checkpoint(
    model: str, where: str, kv_quant_sim: bool | None = None, tensor_parallel: int = 1
) -> None:
    """The checkpoint's config parses (with the job's `kv_quant_sim`), its weight files match
    it (headers only) and it splits over `tensor_parallel` ranks."""
    try:
        directory = resolve_checkpoint(model)
        if not directory.is_dir():
            raise JobError(
                f"{where}: {model!r} is not a directory; give a checkpoint directory "
                '(config.json, *.safetensors, tokenizer.json) or "tiny" for the embedded default'
            )
        config = ModelConfig.from_file(directory)
        if kv_quant_sim is not None:
            config = config.replace(kv_quant_sim=kv_quant_sim)
        with CheckpointReader(directory, config) as reader:
            fp8 = any(e.fmt == "fp8" for e in reader.entries.values())
        check_world_size(config, tensor_parallel, quantized=fp8)
    except JobError:
        raise
    except (ValueError, OSError) as e:
        hint = ""
        if model == "tiny":
            hint = "; or set model.path (--set model.path=DIR) to a checkpoint directory"
        raise JobError(f"{where}: {e}{hint}") from None


def count_records(plan: Plan, files: list[str]) -> int | None:
    """Input records (lines, rows or files) of local inputs; None for remote ones."""
    if not all(is_local(f) for f in files):
        return None
    fmt = plan.config.input.format
    if fmt == "text":
        return len(files)
    if fmt == "parquet":
        return sum(parquet_rows(f) for f in files)
    total = 0
    for path in files:
        with FileSystems.open(path) as f:
            total += sum(1 for line in iter(f.readline, b"") if line.strip())
    return total


def expected_items(plan: Plan, records: int | None) -> int | None:
    if records is None:
        return None
    if plan.config.input.format == "openai_batch":
        return records
    return records * len(plan.config.task.questions or (None,))


# ---- running --------------------------------------------------------------------------------


def run_job(
    plan: Plan,
    check_model: bool = True,
    progress: LiveProgress | None = None,
    fresh: bool = False,
) -> JobOutcome:
    """Run the plan into staging and finalize the partition; returns a JobOutcome.

    The outputs are locked for the run (one writer per output), what dead runs left is removed,
    and the engine outcomes that earlier runs of this job and date made durable are reused
    unless `fresh`. Raises JobError before anything is written (a live run holds an output, or
    it cannot be written), RunFailed when the run fails: its staging is removed, the previous
    partition is left as it was, and the finished outcomes are kept for the next run."""
    input_files = check_plan(plan, check_model)
    if progress is not None:
        progress.total = expected_items(plan, count_records(plan, input_files))
    try:
        claim = claim_outputs(plan.partitions, plan.results, fresh)
    except OutputBusy as e:
        raise JobError(f"{plan.job.source}: {e}") from None
    except OSError as e:
        fault = output_fault(e) or f"{type(e).__name__}: {e}"
        raise JobError(f"{plan.job.source}: output {plan.results.path}: {fault}") from None
    try:
        return _run_claimed(plan, claim, input_files, progress)
    finally:
        claim.release()


def _run_claimed(
    plan: Plan, claim: OutputClaim, input_files: list[str], progress: LiveProgress | None
) -> JobOutcome:
    started = dt.datetime.now(dt.timezone.utc)
    config = dataclasses.replace(plan.config, resume=claim.resume)
    try:
        for partition in plan.partitions:
            partition.prepare()
        if progress is not None:
            with progress:
                report = run_pipeline(config, plan.beam_args, check_model=False)
        else:
            report = run_pipeline(config, plan.beam_args, check_model=False)
        if report.state != "DONE":
            raise RunFailed(f"the pipeline ended in state {report.state}, not DONE")
        claim.check()
        manifest = build_manifest(
            job=plan.job.name,
            spec_path=str(plan.job.source),
            date=plan.date,
            started=started,
            duration_s=report.duration_s,
            metrics=report.metrics,
            files=_output_files(plan),
            locations={
                "results": plan.results.path,
                "errors": (plan.errors or plan.results).path,
            },
            input_files=input_files,
            model=_model_info(plan),
            runner=plan.runner,
            pricing=plan.job.spec.pricing,
            constraints=constraint_report(plan.config.task),
        )
        if plan.errors is not None:
            plan.errors.commit(None)
        plan.results.commit(manifest_bytes(manifest))
    except Exception as e:
        for partition in plan.partitions:
            partition.abort()
        raise RunFailed(describe_failure(e) + finished_kept(plan.results)) from e
    except BaseException:
        for partition in plan.partitions:
            partition.abort()
        raise
    return JobOutcome(plan, report, manifest, claim.notices())


def _output_files(plan: Plan) -> list[OutputFile]:
    files = []
    for table, partition in (("results", plan.results), ("errors", plan.errors or plan.results)):
        for name in partition.staged_files():
            if name.startswith(table + "-") and name.endswith(".parquet"):
                rows = parquet_rows(partition.file(name))
                relative = name if partition is plan.results else partition.file(name, False)
                files.append(OutputFile(table, relative, rows))
    return files


def _model_info(plan: Plan) -> dict[str, Any]:
    engine = plan.config.engine
    info = dataclasses.asdict(engine)
    try:
        info["resolved_path"] = str(resolve_checkpoint(engine.model))
    except ValueError:
        info["resolved_path"] = None
    return info
