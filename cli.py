"""The `flashbeam` command: run, validate, show and eval jobs; benchmarks.

    flashbeam run JOB.yaml [--set key.path=value ...] [--date YYYY-MM-DD] [--fresh]
                  [-- <beam options>]
    flashbeam validate JOB.yaml [--set ...]
    flashbeam show RESULT.parquet|OUTPUT_DIR [--errors]
    flashbeam eval JOB.yaml [--gold GOLD.jsonl] [--no-sets]
    flashbeam bench <engine|prefix-cache|schemas|pipeline|kernels|resume> ...

Exit codes: 0 every row valid; 3 the job completed with error rows; 2 a bad spec or setup, or
another run is writing the output (nothing ran); 1 the run failed (the previous output was left
as it was) or its counts did not reconcile.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flashbeam.jobs import EXIT_FAILED, EXIT_OK, EXIT_SETUP


def _bench_engine(args: argparse.Namespace) -> dict:
    from flashbeam.model.engine.bench import bench_engine, bench_engine_callers

    if args.tensor_parallel or args.config or args.layers:
        return _bench_throughput(args)
    if args.callers:
        return bench_engine_callers(
            callers=args.callers,
            documents=args.documents,
            questions=args.questions,
            doc_len=args.doc_len,
            new_tokens=args.new_tokens or 32,
            requests_per_call=args.requests_per_call,
            max_batch_size=args.max_batch_size,
            preset=args.preset,
            threads=args.threads,
            repeats=args.repeats or 3,
        )
    return bench_engine(
        prompts=args.prompts,
        prompt_len=args.prompt_len,
        new_tokens=args.new_tokens or 64,
        preset=args.preset,
        max_batch_tokens=args.max_batch_tokens,
        reference=not args.no_reference,
    )


def _bench_throughput(args: argparse.Namespace) -> dict:
    from flashbeam.model.engine.bench_throughput import (
        OFFICIAL,
        BenchRefused,
        ThroughputSetup,
        bench_throughput,
    )
    from flashbeam.pipelines.config import parse_bytes

    try:
        concurrency = tuple(int(c) for c in args.concurrency.split(","))
    except ValueError:
        raise BenchRefused(
            f"--concurrency {args.concurrency!r}: give counts like 1,16,256"
        ) from None
    setup = ThroughputSetup(
        config=args.config or OFFICIAL,
        layers=args.layers,
        tensor_parallel=args.tensor_parallel or 1,
        concurrency=concurrency,
        input_tokens=args.input_tokens,
        output_tokens=args.output_tokens,
        device=args.device,
        dtype=args.dtype,
        experts=args.experts,
        checkpoint_dir=args.checkpoint_dir,
        keep_quantized=args.keep_quantized,
        max_batch_tokens=args.max_batch_tokens,
        reserve_bytes=parse_bytes(args.reserve),
    )
    return bench_throughput(setup)


def _bench_decode_graphs(args: argparse.Namespace) -> dict:
    from flashbeam.model.engine.bench_graphs import bench_decode_graphs

    return bench_decode_graphs(
        batches=tuple(int(b) for b in args.batch.split(",")),
        steps=args.steps,
        prompt_len=args.prompt_len,
        preset=args.preset,
        checkpoint=args.checkpoint,
        device=args.device,
        dtype=args.dtype,
        threads=args.threads,
    )


def _bench_prefix_cache(args: argparse.Namespace) -> dict:
    from flashbeam.model.engine.bench import bench_prefix_cache

    return bench_prefix_cache(
        documents=args.documents,
        questions=args.questions,
        doc_len=args.doc_len,
        preset=args.preset,
    )


def _bench_parallel(args: argparse.Namespace) -> dict:
    from flashbeam.model.engine.bench_parallel import bench_parallel

    return bench_parallel(
        world=args.world,
        checkpoint=args.checkpoint,
        batch=args.batch,
        prompt_len=args.prompt_len,
        decode_steps=args.decode_steps,
        threads=args.threads,
    )


def _bench_kernels(args: argparse.Namespace) -> dict | None:
    from flashbeam.kernels.bench import main as kernels_main

    kernels_main(args.rest)
    return None


def _bench_schemas(args: argparse.Namespace) -> dict | None:
    from flashbeam.schemas.bench import main as schemas_main

    schemas_main(args.rest)
    return None


def _bench_pipeline(args: argparse.Namespace) -> dict:
    from flashbeam.pipelines.bench import bench_pipeline

    return bench_pipeline(
        documents=args.documents,
        questions=args.questions,
        doc_tokens=args.doc_tokens,
        max_tokens=args.max_tokens,
        requests_per_call=args.requests_per_call,
        cache_bytes=args.cache_bytes,
        preset=args.preset,
        threads=args.threads,
        runner=args.runner,
        workers=args.workers,
        worker_threads=args.worker_threads,
        max_batch_size=args.max_batch_size,
        repeats=args.repeats,
    )


def _bench_resume(args: argparse.Namespace) -> dict:
    from flashbeam.jobs.bench import JOB, bench_resume

    return bench_resume(
        documents=args.documents, kill_at=args.kill_at, job=args.job or JOB, overrides=args.set
    )


def _add_bench(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="run a benchmark; prints one JSON object")
    targets = bench.add_subparsers(dest="target", required=True)

    p = targets.add_parser(
        "engine",
        help="Engine.generate vs transformers generate; with --callers K, K threads sharing "
        "one engine vs one call and vs calls taking turns",
    )
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--prompt-len", type=int, default=512)
    p.add_argument("--new-tokens", type=int, default=None, help="default 64 (32 with --callers)")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--max-batch-tokens", type=int, default=16384, help="token budget per step")
    p.add_argument("--no-reference", action="store_true", help="skip the transformers run")
    p.add_argument("--callers", type=int, default=0, help="threads sharing one engine")
    p.add_argument("--documents", type=int, default=32, help="with --callers: prefix groups")
    p.add_argument("--questions", type=int, default=4, help="with --callers: requests per group")
    p.add_argument("--doc-len", type=int, default=256, help="with --callers: shared prefix")
    p.add_argument("--requests-per-call", type=int, default=16, help="with --callers")
    p.add_argument("--max-batch-size", type=int, default=64, help="with --callers")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--repeats", type=int, default=None, help="with --callers: runs per mode (3)")
    _add_throughput_arguments(p)
    p.set_defaults(bench=_bench_engine)

    p = targets.add_parser(
        "decode-graphs", help="decode tokens/s with CUDA graphs vs eager, per batch size"
    )
    p.add_argument("--batch", default="1,8,64", help="batch sizes, comma-separated")
    p.add_argument("--steps", type=int, default=64, help="timed decode steps per batch size")
    p.add_argument("--prompt-len", type=int, default=256)
    p.add_argument("--preset", default="tiny", help="random weights of this preset")
    p.add_argument("--checkpoint", default=None, help="a checkpoint instead of random weights")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if present)")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.set_defaults(bench=_bench_decode_graphs)

    p = targets.add_parser("prefix-cache", help="documents x questions, cache on vs off")
    p.add_argument("--documents", type=int, default=8)
    p.add_argument("--questions", type=int, default=4)
    p.add_argument("--doc-len", type=int, default=4096)
    p.add_argument("--preset", default="tiny")
    p.set_defaults(bench=_bench_prefix_cache)

    p = targets.add_parser("parallel", help="tensor-parallel ranks vs one: weights, step times")
    p.add_argument("--world", type=int, default=2, help="ranks of the parallel engine")
    p.add_argument("--checkpoint", default=None, help="a checkpoint (default: random tiny)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--prompt-len", type=int, default=512)
    p.add_argument("--decode-steps", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    p.set_defaults(bench=_bench_parallel)

    p = targets.add_parser("kernels", help="Triton kernels vs references (needs a CUDA GPU)")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(bench=_bench_kernels)

    p = targets.add_parser(
        "schemas", help="constrained decoding over a JSONL of schemas (PATH [--limit N] ...)"
    )
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(bench=_bench_schemas)

    p = targets.add_parser("pipeline", help="pipeline vs engine alone, prefix grouping on vs off")
    p.add_argument("--documents", type=int, default=64)
    p.add_argument("--questions", type=int, default=4)
    p.add_argument("--doc-tokens", type=int, default=1024)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--requests-per-call", type=int, default=16)
    p.add_argument("--cache-bytes", type=int, default=4 << 20)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument(
        "--runner",
        choices=("direct", "dask"),
        default="direct",
        help="dask: the DirectRunner vs a local Dask cluster (--workers processes) instead",
    )
    p.add_argument("--workers", type=int, default=2, help="Dask worker processes (--runner dask)")
    p.add_argument(
        "--worker-threads", type=int, default=4, help="DirectRunner threads sharing one engine"
    )
    p.add_argument("--max-batch-size", type=int, default=64, help="the engine's running batch")
    p.add_argument("--repeats", type=int, default=1, help="runs per mode, medians reported")
    p.set_defaults(bench=_bench_pipeline)

    p = targets.add_parser(
        "resume", help="a job killed part way, then run again: re-run / clean time, staging left"
    )
    p.add_argument("--documents", type=int, default=384)
    p.add_argument("--kill-at", type=float, default=0.6, help="fraction of the clean run's time")
    p.add_argument("--job", default=None, help="the job (default: jobs/extract_invoices.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(bench=_bench_resume)


def _add_throughput_arguments(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group(
        "throughput at the official dimensions (any of --tensor-parallel, --config, --layers)",
        "Random weights in the official layout (FP8 linears, FP4 experts); prefill, decode and "
        "total tokens/s per GPU at each concurrency. --max-batch-tokens applies too (default "
        "16384).",
    )
    group.add_argument("--tensor-parallel", type=int, default=None, help="GPUs of the engine")
    group.add_argument("--config", default=None, help='"official" (default), a tiny preset or '
                       "a config.json")  # fmt: skip
    group.add_argument("--layers", type=int, default=None, help="only the first L layers")
    group.add_argument("--concurrency", default="1,16,256", help="requests at once, per run")
    group.add_argument("--input-tokens", type=int, default=8192, help="prompt length")
    group.add_argument("--output-tokens", type=int, default=1024, help="new tokens per request")
    group.add_argument("--device", default=None, help="cuda or cpu (default: cuda if present)")
    group.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    group.add_argument("--experts", default="fp4", choices=["fp4", "fp8"], help="expert format")
    group.add_argument(
        "--checkpoint-dir", default=None, help="write the checkpoint here (reused if it matches)"
    )
    group.add_argument(
        "--keep-quantized", action=argparse.BooleanOptionalAction, default=None,
        help="hold FP8/FP4 weights packed (default: on CUDA only)",
    )  # fmt: skip
    group.add_argument("--reserve", default="4GiB", help="activations and allocator slack")


def _run_bench(args: argparse.Namespace, beam_args: list[str]) -> int:
    from flashbeam.model.engine.bench_throughput import BenchRefused

    run: Callable[[argparse.Namespace], dict | None] = args.bench
    try:
        result = run(args)
    except BenchRefused as e:
        return _fail(_consoles()[1], str(e), EXIT_SETUP)
    if result is not None:
        print(json.dumps(result, indent=2))
    return EXIT_OK


# ---- plan -------------------------------------------------------------------------------------


def _add_plan(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan",
        help="will a model fit N GPUs: weights per GPU, KV per sequence, the concurrency that fits",
        description="Exits 0 when it fits, 1 when it does not, 2 on bad input.",
    )
    p.add_argument("model", help='"tiny", a checkpoint directory or a config.json')
    p.add_argument("--gpus", type=int, default=1, help="GPUs of one engine (tensor_parallel)")
    p.add_argument("--gpu-memory", required=True, help="memory of one GPU: 80GiB, 141GB, ...")
    p.add_argument("--context", type=int, default=131072, help="tokens per sequence")
    p.add_argument("--concurrency", type=int, default=1, help="sequences generating at once")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument(
        "--experts", choices=["fp4", "fp8", "dense"], help="how the routed experts are stored "
        "(default: as the checkpoint's tensors or its config say)",
    )  # fmt: skip
    p.add_argument("--cache-bytes", default="1GiB", help="the engine's prefix cache")
    p.add_argument("--reserve", default="4GiB", help="activations, CUDA context, allocator slack")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=_cmd_plan)


def _cmd_plan(args: argparse.Namespace, beam_args: list[str]) -> int:
    import torch
    from rich.table import Table

    from flashbeam.model.checkpoint.fit import model_to_plan, plan_fit
    from flashbeam.model.network.config import ConfigError
    from flashbeam.pipelines.config import parse_bytes

    out, err = _consoles()
    try:
        sizes = {k: parse_bytes(getattr(args, k)) for k in ("gpu_memory", "cache_bytes", "reserve")}
        config, format_of, source = model_to_plan(args.model, args.experts)
        plan = plan_fit(
            config, args.gpus, sizes["gpu_memory"], args.context, args.concurrency,
            getattr(torch, args.dtype), format_of, sizes["cache_bytes"], sizes["reserve"],
        )  # fmt: skip
    except (ValueError, OSError, ConfigError) as e:
        return _fail(err, str(e), EXIT_SETUP)
    if args.json:
        print(json.dumps({"source": source, **plan.to_dict()}, indent=2))
        return EXIT_OK if plan.fits else EXIT_FAILED
    gib = 1 << 30
    table = Table(title=f"{args.model} on {plan.gpus} x {plan.gpu_memory / gib:.1f} GiB")
    table.add_column("", style="bold")
    table.add_column("")
    rows = [
        ("stored as", f"linears {plan.linears}, routed experts {plan.experts} ({source})"),
        ("weights per GPU", f"{plan.weight_bytes_per_gpu / gib:.2f} GiB"
         f" (split {plan.split_weight_bytes_per_gpu / gib:.2f},"
         f" replicated {plan.replicated_weight_bytes_per_gpu / gib:.2f})"),
        ("KV per token", f"{plan.kv_bytes_per_token:,} bytes (every GPU holds the whole state)"),
        (f"KV per sequence of {plan.context:,}", f"{plan.kv_bytes_per_sequence / gib:.3f} GiB"),
        ("prefix cache + reserve", f"{(plan.cache_bytes + plan.reserve_bytes) / gib:.1f} GiB"),
        ("sequences that fit", f"{plan.max_concurrency:,}"),
        ("verdict", plan.verdict),
    ]  # fmt: skip
    for row in rows:
        table.add_row(*row)
    out.print(table)
    return EXIT_OK if plan.fits else EXIT_FAILED


# ---- jobs -------------------------------------------------------------------------------------


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date; use YYYY-MM-DD") from None


def _add_job_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("job", help="the job spec (.yaml)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a spec field, e.g. --set task.max_tokens=64 (repeatable; value is YAML)",
    )
    p.add_argument("--date", type=_date, default=None, help="the {date} partition (default: today)")
    p.add_argument(
        "--skip-model-check",
        action="store_true",
        help="do not open the checkpoint here (it exists only on the workers)",
    )


def _add_jobs(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a job: JOB.yaml [--set k=v] [--date D] [-- beam options]")
    _add_job_arguments(p)
    p.add_argument("--no-progress", action="store_true", help="no live progress bar")
    p.add_argument(
        "--preview", type=int, default=10, metavar="N", help="print the first N result rows"
    )
    p.add_argument(
        "--fresh",
        action="store_true",
        help="compute everything again: ignore (and discard) the finished results that earlier "
        "runs of this job and date left after a crash or failure",
    )
    p.set_defaults(handler=_cmd_run)

    p = sub.add_parser("validate", help="check a job (spec, schema, model, input); no inference")
    _add_job_arguments(p)
    p.set_defaults(handler=_cmd_validate)

    p = sub.add_parser("show", help="print a results (or errors) Parquet file as a table")
    p.add_argument("path", help="a .parquet file, a glob, or a job's output directory")
    p.add_argument("--errors", action="store_true", help="show the errors table")
    p.add_argument("--limit", type=int, default=20, help="rows to show (default 20)")
    p.add_argument("--all", action="store_true", help="show the metadata columns too")
    p.set_defaults(handler=_cmd_show)

    p = sub.add_parser("eval", help="run a job and print its field accuracy against gold (JSON)")
    _add_job_arguments(p)
    p.add_argument("--gold", type=Path, default=None, help="gold JSONL (default: beside input)")
    p.add_argument("--keep", type=Path, default=None, help="write the outputs here, keep them")
    p.add_argument(
        "--no-sets", action="store_true", help="score the job's input only, not its eval.sets"
    )
    p.add_argument("--no-progress", action="store_true", help="no live progress bar")
    p.set_defaults(handler=_cmd_eval)


def _consoles():
    from rich.console import Console

    return Console(), Console(stderr=True)


def _fail(console, message: str, code: int) -> int:
    from rich.text import Text

    console.print(Text("error: ", style="red") + Text(message), soft_wrap=True)
    return code


def _plan(args: argparse.Namespace, beam_args: list[str], overrides: tuple[str, ...] = ()):
    """The job for `args.date` with `--set` (then `overrides`) applied; raises JobError."""
    from flashbeam.jobs.run import plan_job
    from flashbeam.jobs.spec import load_job

    plan = plan_job(load_job(args.job, [*args.set, *overrides]), args.date, beam_args)
    local_workers = plan.runner in ("DirectRunner", "direct") and not plan.in_process
    if local_workers and not args.verbose and "default_sdk_harness_log_level" not in str(beam_args):
        plan.beam_args.append("--default_sdk_harness_log_level=ERROR")  # quiet worker processes
    return plan


def _execute(args: argparse.Namespace, plan, err, fresh: bool = False):
    """Run the plan, with a live progress bar on `err` when the workers are in this process;
    `fresh` ignores the finished results of earlier runs."""
    from flashbeam.jobs.progress import LiveProgress
    from flashbeam.jobs.run import run_job

    label = f"{plan.job.name} {plan.date.isoformat()}"
    progress = None
    if plan.in_process and not args.no_progress:
        progress = LiveProgress(err, label)
    else:
        err.print(f"running {label} on {plan.runner} ...", markup=False, highlight=False)
    return run_job(plan, check_model=not args.skip_model_check, progress=progress, fresh=fresh)


def _cmd_run(args: argparse.Namespace, beam_args: list[str]) -> int:
    from flashbeam.jobs.progress import summary_table
    from flashbeam.jobs.run import RunFailed
    from flashbeam.jobs.show import read_rows, render
    from flashbeam.jobs.spec import JobError

    out, err = _consoles()
    try:
        plan = _plan(args, beam_args)
        outcome = _execute(args, plan, err, fresh=args.fresh)
    except JobError as e:
        return _fail(err, str(e), EXIT_SETUP)
    except RunFailed as e:
        message = f"{e}\nthe previous output is unchanged"
        return _fail(err, message, EXIT_FAILED)
    manifest = outcome.manifest
    for notice in outcome.notices:
        err.print(notice, markup=False, highlight=False)
    out.print(summary_table(manifest, outcome.exit_code))
    results = [f for f in manifest["files"] if f["table"] == "results" and f["rows"]]
    if args.preview > 0 and results:
        paths = [plan.results.file(f["name"], staged=False) for f in results]
        out.print(render(read_rows(paths, args.preview), console_width=out.width))
    if manifest["counts"]["errors"]:
        err.print(
            f"{manifest['counts']['errors']} error row(s): see them with "
            f"`flashbeam show {(plan.errors or plan.results).path} --errors`",
            markup=False,
            highlight=False,
        )
    if not manifest["reconciled"]:
        err.print("[red]the counters and the files disagree; see manifest.json[/red]")
    return outcome.exit_code


def _cmd_validate(args: argparse.Namespace, beam_args: list[str]) -> int:
    from rich.table import Table

    from flashbeam.jobs.run import check_plan, count_records, plan_job
    from flashbeam.jobs.spec import JobError, load_job
    from flashbeam.pipelines.validate import constraint_report

    out, err = _consoles()
    try:
        job = load_job(args.job, args.set)
        plan = plan_job(job, args.date, beam_args)
        files = check_plan(plan, check_model=not args.skip_model_check)
        records = count_records(plan, files)
    except JobError as e:
        return _fail(err, str(e), EXIT_SETUP)
    config = plan.config
    schema = config.task.schema
    table = Table(title=f"{job.name}: ok, ready to run", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("spec", str(job.source))
    table.add_row("input", f"{plan.input_path} ({len(files)} file(s), {config.input.format}"
                  + (f", {records} records)" if records is not None else ")"))  # fmt: skip
    fields = ", ".join((schema or {}).get("properties", {})) or "free text"
    title = (schema or {}).get("title", "")
    table.add_row("task", f"{config.task.kind}: {title} [{fields}]" if title else
                  f"{config.task.kind}: {fields}")  # fmt: skip
    for name, summary in constraint_report(config.task).items():
        table.add_row(f"{name} constraint", _constraint_text(summary))
    model = f"{config.engine.model} on {config.engine.device} ({config.engine.dtype})"
    if config.engine.kv_quant_sim is not None:  # None: as the checkpoint's config says
        model += f", kv_quant_sim {str(config.engine.kv_quant_sim).lower()}"
    table.add_row("model", model)
    table.add_row("output", plan.results.path)
    if plan.errors is not None:
        table.add_row("errors", plan.errors.path)
    table.add_row("runner", " ".join(plan.beam_args))
    out.print(table, markup=False)
    return EXIT_OK


def _constraint_text(summary: dict[str, Any]) -> str:
    """`exact`, or the level with what was relaxed (one path per line) or why it is none."""
    lines = [summary["level"]]
    if summary["level"] == "relaxed":
        lines[0] += " (outputs are validated against the full schema and retried):"
    lines += [f"  {r['path']}: {r['change']} ({r['reason']})" for r in summary.get("relaxed", [])]
    if summary.get("reason"):
        lines[0] += f": plain JSON only, {summary['reason']}"
    return "\n".join(lines)


def _cmd_show(args: argparse.Namespace, beam_args: list[str]) -> int:
    from flashbeam.jobs.show import ShowError, find_files, read_rows, render

    out, err = _consoles()
    try:
        rows = read_rows(find_files(args.path, args.errors), args.limit)
    except (ShowError, OSError) as e:
        return _fail(err, str(e), EXIT_SETUP)
    out.print(render(rows, errors=args.errors, all_columns=args.all, console_width=out.width))
    return EXIT_OK


def _cmd_eval(args: argparse.Namespace, beam_args: list[str]) -> int:
    from flashbeam.jobs.eval import gold_path_for, read_gold, score
    from flashbeam.jobs.run import RunFailed
    from flashbeam.jobs.spec import JobError

    _, err = _consoles()
    where = Path(str(args.keep) if args.keep else tempfile.mkdtemp(prefix="flashbeam-eval-"))

    def into(name: str) -> tuple[str, ...]:
        return (f"output.path={where.resolve() / name}", "output.errors=null")

    try:
        plan = _plan(args, beam_args, into("results"))
        runs = {None: (plan, args.gold or gold_path_for(plan))}
        for name, path in {} if args.no_sets else plan.job.spec.eval.sets.items():
            overrides = (*into(f"sets/{name}"), f"input.path={json.dumps(path)}")
            set_plan = _plan(args, beam_args, overrides)
            runs[name] = (set_plan, gold_path_for(set_plan))
        for _, gold in runs.values():
            read_gold(gold)  # fail before running when there is nothing to score against
        report: dict[str, Any] = {}
        codes = []
        for name, (run_plan, gold) in runs.items():
            outcome = _execute(args, run_plan, err)
            codes.append(outcome.exit_code)
            if name is None:
                report = score(outcome, gold)
            else:
                report.setdefault("sets", {})[name] = score(outcome, gold)
    except JobError as e:
        return _fail(err, str(e), EXIT_SETUP)
    except RunFailed as e:
        return _fail(err, str(e), EXIT_FAILED)
    finally:
        if args.keep is None:
            shutil.rmtree(where, ignore_errors=True)
    print(json.dumps(report, indent=2))
    return next((code for code in codes if code), EXIT_OK)


# ---- entry point ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flashbeam",
        description="Long-context LLM batch jobs on Apache Beam with an embedded V4-Flash engine.",
        epilog="Exit codes: 0 all rows valid, 3 completed with error rows, 2 bad spec or setup "
        "(or another run is writing the output), "
        "1 the run failed or its counts did not reconcile.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show Beam's log messages")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_jobs(sub)
    _add_plan(sub)
    _add_bench(sub)
    return parser


def _split_beam_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """`run`/`eval` take Beam options after `--`; other commands keep their arguments."""
    command = next((a for a in argv if not a.startswith("-")), None)
    if command in ("run", "eval") and "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, []


def main(argv: list[str] | None = None) -> int:
    argv, beam_args = _split_beam_args(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(argv)
    # Before Beam is imported: its import-time warnings would otherwise reach the terminal.
    level = logging.INFO if args.verbose else logging.ERROR
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("apache_beam").setLevel(level)
    if args.command == "bench":
        return _run_bench(args, beam_args)
    return args.handler(args, beam_args)


if __name__ == "__main__":
    sys.exit(main())
