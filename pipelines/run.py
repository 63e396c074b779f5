"""Build and run the whole pipeline of one job from a `PipelineConfig` and Beam options.

    report = run_pipeline(config, ["--runner=DirectRunner"])
    report.metrics.results_out, report.metrics.errors_out, report.metrics.cache_hit_ratio

`check_config` does every check that needs no inference (input files, template, schema,
model directory and tokenizer, output column names) and raises with a message that says what
to fix; `run_pipeline` calls it before building anything.

Runners: any Beam runner. The DirectRunner (the default) runs on Beam's FnApiRunner without
Beam's first attempt at the Prism runner (`pipelines.direct_runner`). `--runner=dask` (or
`DaskRunner`) runs on a dask.distributed cluster through flashbeam's adapter of Beam's Dask
runner (`pipelines.dask_runner`), with `--dask_client_address=HOST:PORT` or `--dask_workers=N`
(a local cluster for the run).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from .config import PipelineConfig
from .direct_runner import DIRECT_RUNNER, DIRECT_RUNNER_NAMES
from .metrics import PipelineMetrics, read_metrics
from .prompts import check_template
from .readers import match_input
from .sharding import tokenizer_for
from .transforms import (
    BuildPrompts,
    ReadDocuments,
    ReduceParts,
    RunEngine,
    ShardDocuments,
    WriteErrors,
    WriteResults,
)
from .writers import ResultTable

DASK_RUNNER = "flashbeam.pipelines.dask_runner.DaskRunner"
# Beam's own class path is taken over too: alone, it merges tagged outputs, computes only the
# last sink and treats Reshuffle as a no-op (see pipelines.dask_runner).
DASK_RUNNER_NAMES = ("dask", "DaskRunner", "apache_beam.runners.dask.dask_runner.DaskRunner")


class DaskClusterOptions(PipelineOptions):
    """`--dask_workers`; Beam's own Dask options (`--dask_client_address`, `--dask_npartitions`,
    ...) are defined by apache_beam.runners.dask."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument(
            "--dask_workers",
            type=int,
            default=None,
            help="start a local Dask cluster of this many worker processes (one thread each) "
            "for the run, instead of connecting to --dask_client_address",
        )


def check_runner(options: PipelineOptions) -> None:
    """Raise ValueError for runner options a run cannot start with: the Dask runner needs
    exactly one cluster (`--dask_client_address` or `--dask_scheduler_file`, or
    `--dask_workers`)."""
    if options.view_as(StandardOptions).runner not in (*DASK_RUNNER_NAMES, DASK_RUNNER):
        return
    from apache_beam.runners.dask.dask_runner import DaskOptions

    given = options.view_as(DaskOptions)
    workers = options.view_as(DaskClusterOptions).dask_workers
    if (given.address or given.scheduler_file) and workers:
        raise ValueError(
            "give --dask_client_address (or --dask_scheduler_file) or --dask_workers, not both"
        )
    if not (given.address or given.scheduler_file or workers):
        raise ValueError(
            "--runner=dask needs a cluster: --dask_client_address=HOST:PORT (a running Dask "
            "scheduler) or --dask_workers=N (start N local worker processes for this run)"
        )
    if workers is not None and workers < 1:
        raise ValueError(f"--dask_workers must be at least 1, got {workers}")


def resolve_runner(options: PipelineOptions) -> PipelineOptions:
    """Point the Dask runner's and the DirectRunner's names at flashbeam's; other runners as
    given."""
    standard = options.view_as(StandardOptions)
    if standard.runner in DASK_RUNNER_NAMES:
        standard.runner = DASK_RUNNER
    elif standard.runner in DIRECT_RUNNER_NAMES:
        standard.runner = DIRECT_RUNNER
    return options


@dataclass
class RunReport:
    state: str
    metrics: PipelineMetrics
    duration_s: float
    result: Any  # the runner's PipelineResult


def check_config(config: PipelineConfig, check_model: bool = True) -> ResultTable:
    """Raise (InputError, ValueError, SchemaError, CheckpointError, TokenizerError) unless the
    job can start; returns the results table it will write. `check_model=False` skips loading
    the tokenizer, for a model path that exists only on the workers (a path in their container)."""
    match_input(config.input.path)
    check_template(config.task.document_template)
    if check_model:
        tokenizer_for(config.engine.model)
    return ResultTable(config.task, config.output.metadata_prefix)


def build_pipeline(pipeline: beam.Pipeline, config: PipelineConfig) -> None:
    """Add the job's steps to `pipeline`: read -> shard -> prompts -> engine -> reduce -> write."""
    table = ResultTable(config.task, config.output.metadata_prefix)
    task, engine, grouping, resume = config.task, config.engine, config.grouping, config.resume
    documents, read_errors = pipeline | "Read documents" >> ReadDocuments(config.input)
    chunks = documents | "Shard documents" >> ShardDocuments(engine.model, task.chunking)
    prompts, prompt_errors = chunks | "Build prompts" >> BuildPrompts(task)
    outcomes = prompts | "Run engine" >> RunEngine(engine, task, grouping, resume)
    items, reduce_errors = outcomes | "Reduce parts" >> ReduceParts(task, engine, grouping, resume)
    write_errors = items | "Write results" >> WriteResults(config.output, table)
    errors = (read_errors, prompt_errors, reduce_errors, write_errors)
    _ = errors | "Write errors" >> WriteErrors(config.output)


def run_pipeline(
    config: PipelineConfig,
    beam_options: PipelineOptions | list[str] | None = None,
    check_model: bool = True,
) -> RunReport:
    """Check, build and run the job's pipeline to completion; returns its state and counters."""
    check_config(config, check_model)
    options = resolve_runner(
        beam_options
        if isinstance(beam_options, PipelineOptions)
        else PipelineOptions(list(beam_options or []))
    )
    check_runner(options)
    started = time.perf_counter()
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, config)
    result = pipeline.run()
    state = result.wait_until_finish()
    return RunReport(str(state), read_metrics(result), time.perf_counter() - started, result)
