"""The `flashbeam` command."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable


def _bench_engine(args: argparse.Namespace) -> dict:
    from flashbeam.model.bench import bench_engine

    return bench_engine(
        prompts=args.prompts,
        prompt_len=args.prompt_len,
        new_tokens=args.new_tokens,
        preset=args.preset,
        reference=not args.no_reference,
    )


def _bench_prefix_cache(args: argparse.Namespace) -> dict:
    from flashbeam.model.bench import bench_prefix_cache

    return bench_prefix_cache(
        documents=args.documents,
        questions=args.questions,
        doc_len=args.doc_len,
        preset=args.preset,
    )


def _bench_kernels(args: argparse.Namespace) -> dict | None:
    from flashbeam.kernels.bench import main as kernels_main

    kernels_main(args.rest)
    return None


def _add_bench(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="run a benchmark; prints one JSON object")
    targets = bench.add_subparsers(dest="target", required=True)

    p = targets.add_parser("engine", help="Engine.generate vs transformers generate")
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--prompt-len", type=int, default=512)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--no-reference", action="store_true", help="skip the transformers run")
    p.set_defaults(bench=_bench_engine)

    p = targets.add_parser("prefix-cache", help="documents x questions, cache on vs off")
    p.add_argument("--documents", type=int, default=8)
    p.add_argument("--questions", type=int, default=4)
    p.add_argument("--doc-len", type=int, default=4096)
    p.add_argument("--preset", default="tiny")
    p.set_defaults(bench=_bench_prefix_cache)

    p = targets.add_parser("kernels", help="Triton kernels vs references (needs a CUDA GPU)")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(bench=_bench_kernels)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flashbeam",
        description="Long-context LLM batch jobs on Apache Beam with an embedded V4-Flash engine.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_bench(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "bench":
        run: Callable[[argparse.Namespace], dict | None] = args.bench
        result = run(args)
        if result is not None:
            print(json.dumps(result, indent=2))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
