"""The Beam transforms: thin wiring over the runner-agnostic steps in this package.

    documents, read_errors = pipeline | ReadDocuments(config.input)
    chunks = documents | ShardDocuments(config.engine.model, config.task.chunking)
    prompts, prompt_errors = chunks | BuildPrompts(config.task)
    outcomes = prompts | RunEngine(config.engine, config.task, config.grouping)
    items, reduce_errors = outcomes | ReduceParts(config.task, config.engine, config.grouping)
    items | WriteResults(...) ; errors | WriteErrors(...)

Transforms that can fail per record return (main, errors); errors are ErrorRow records.
Validation and retries run inside RunEngine (a retry needs the engine).

Every step has one output, split by type with filters where it yields two kinds of records:
no tagged outputs, `Partition`s or side inputs, which Beam's Dask runner does not route or
evaluates by recomputing their inputs. Parquet files are written by `WriteParquetShards`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.ml.inference.base import RunInference

from flashbeam.model.text.chat import ChatFormatError
from flashbeam.schemas import ArrowConversionError

from . import parquet_shards, readers, reduce, resume
from .config import (
    ChunkingConfig,
    EngineConfig,
    GroupingConfig,
    InputConfig,
    OutputConfig,
    ResumeConfig,
    TaskConfig,
)
from .grouping import prefix_keys, scatter_key, split_group
from .metrics import count
from .prompts import check_template, document_requests, questions_for
from .records import Chunk, Document, ErrorRow, ItemResult, PromptRequest
from .sharding import shard_document, tokenizer_for
from .writers import ERRORS_SCHEMA, ResultTable, error_row


class SplitErrors(beam.PTransform):
    """Records -> (the records that are not ErrorRows, the ErrorRows)."""

    def expand(self, records):
        return (
            records | "Not errors" >> beam.Filter(lambda r: not isinstance(r, ErrorRow)),
            records | "Errors" >> beam.Filter(lambda r: isinstance(r, ErrorRow)),
        )


class SplitFinal(beam.PTransform):
    """RequestOutcomes -> (those that are their item's output, those that are parts)."""

    def expand(self, outcomes):
        return (
            outcomes | "Final" >> beam.Filter(lambda outcome: outcome.prompt.final),
            outcomes | "Parts" >> beam.Filter(lambda outcome: not outcome.prompt.final),
        )


# ---- reading -----------------------------------------------------------------------------------


class ReadDocuments(beam.PTransform):
    """Files matching `config.path` -> (Documents, ErrorRows for unreadable records)."""

    def __init__(self, config: InputConfig):
        super().__init__()
        self.config = config

    def expand(self, pipeline):
        paths = (
            pipeline
            | "Match files" >> fileio.MatchFiles(self.config.path)
            | "Paths" >> beam.Map(lambda metadata: metadata.path)
            | "Skip directories" >> beam.Filter(lambda path: not readers.is_local_directory(path))
            | "Spread files" >> beam.Reshuffle()
        )
        records = paths | "Read records" >> beam.ParDo(
            _ReadFile(self.config, readers.glob_base(self.config.path))
        )
        return records | "Split errors" >> SplitErrors()


class _ReadFile(beam.DoFn):
    def __init__(self, config: InputConfig, base: str):
        self.config, self.base = config, base

    def process(self, path: str):
        for record in readers.read_file(path, self.config, self.base):
            count("records_in")
            if isinstance(record, ErrorRow):
                count("items_in")
            yield record


# ---- sharding and prompts ----------------------------------------------------------------------


class ShardDocuments(beam.PTransform):
    """Documents -> Chunks: whole when they fit the budget, else overlapping token windows."""

    def __init__(self, model: str, chunking: ChunkingConfig):
        super().__init__()
        self.model, self.chunking = model, chunking

    def expand(self, documents):
        return documents | "Chunk" >> beam.ParDo(_Shard(self.model, self.chunking))


class _Shard(beam.DoFn):
    def __init__(self, model: str, chunking: ChunkingConfig):
        self.model, self.chunking = model, chunking

    def setup(self):
        self.tokenizer = tokenizer_for(self.model)

    def process(self, document: Document):
        chunks = shard_document(
            document, self.tokenizer, self.chunking.max_tokens, self.chunking.overlap_tokens
        )
        if len(chunks) > 1:
            count("chunks", len(chunks))
        yield from chunks


class BuildPrompts(beam.PTransform):
    """Chunks -> (PromptRequests, ErrorRows for records whose prompt cannot be built)."""

    def __init__(self, task: TaskConfig):
        super().__init__()
        check_template(task.document_template)
        self.task = task

    def expand(self, chunks):
        prompts = chunks | "Prompts" >> beam.ParDo(_Prompts(self.task))
        return prompts | "Split errors" >> SplitErrors()


class _Prompts(beam.DoFn):
    def __init__(self, task: TaskConfig):
        self.task = task

    def process(self, chunk: Chunk):
        document = chunk.document
        items = 1 if document.is_chat else len(questions_for(self.task))
        if chunk.index == 0:
            count("items_in", items)
        try:
            prompts = document_requests(chunk, self.task)
        except (ChatFormatError, ValueError, TypeError, KeyError) as e:
            prompts = []
            # One error row per item, from the document's first chunk only.
            for qi in range(items if chunk.index == 0 else 0):
                error = ErrorRow.for_record(
                    document.origin, "prompt", f"cannot build the prompt: {e}", _input_of(document)
                )
                error.question_index = qi
                prompts.append(error)
        yield from prompts


def _input_of(document: Document) -> str:
    if document.text is not None:
        return document.text
    return json.dumps(document.messages, ensure_ascii=False, default=str)


# ---- grouping and the engine -------------------------------------------------------------------


class GroupByPrefix(beam.PTransform):
    """PromptRequests -> groups (lists) of requests that share a block-aligned prompt prefix,
    each group at most `max_group_requests` long; groups are then spread over workers.
    Disabled (the benchmark's baseline, not for production: one key holds every request),
    groups are cut from all requests in the order of a hash of their ids, i.e. prefix-blind."""

    def __init__(self, model: str, grouping: GroupingConfig):
        super().__init__()
        self.model, self.grouping = model, grouping

    def expand(self, prompts):
        size = self.grouping.max_group_requests
        if self.grouping.enabled:
            key = beam.ParDo(_KeyByPrefix(self.model, self.grouping.block_tokens))
        else:
            key = beam.Map(lambda prompt: ("", (scatter_key(prompt), prompt)))
        return (
            prompts
            | "Key by prefix" >> key
            | "Group by prefix" >> beam.GroupByKey()
            | "Split groups" >> beam.FlatMapTuple(lambda _, keyed: split_group(keyed, size))
            | "Spread groups" >> beam.Reshuffle()
        )


class _KeyByPrefix(beam.DoFn):
    def __init__(self, model: str, block_tokens: int):
        self.model, self.block_tokens = model, block_tokens

    def setup(self):
        self.tokenizer = tokenizer_for(self.model)

    def process(self, prompt: PromptRequest):
        try:
            key, exact = prefix_keys(prompt, self.tokenizer, self.block_tokens)
        except (ChatFormatError, ValueError, TypeError):
            key = exact = scatter_key(prompt)  # the engine reports what is wrong with it
        yield key, (exact, prompt)


class RunEngine(beam.PTransform):
    """PromptRequests -> RequestOutcomes: grouped by prefix, generated, validated against the
    task's schema and retried, through Beam's RunInference with a PromptGroupHandler. With
    `resume`, finished outcomes are kept as each batch ends and those an earlier run kept are
    reused instead of computed (`pipelines.resume`)."""

    def __init__(
        self,
        engine: EngineConfig,
        task: TaskConfig,
        grouping: GroupingConfig,
        resume: ResumeConfig | None = None,
    ):
        super().__init__()
        self.engine, self.task, self.grouping, self.resume = engine, task, grouping, resume

    def expand(self, prompts):
        handler = resume.handler_for(self.engine, self.task, self.grouping, self.resume)
        reused = None
        if self.resume is not None and self.resume.files:
            finished = resume.ReuseFinished(self.resume, self.engine, self.task)
            reused, prompts = prompts | "Reuse finished" >> finished
        computed = (
            prompts
            | "Group by prefix" >> GroupByPrefix(self.engine.model, self.grouping)
            | "Generate and validate" >> RunInference(handler)
            | "Ungroup" >> beam.FlatMap(lambda outcomes: outcomes)
        )
        if reused is None:
            return computed
        return (computed, reused) | "With reused" >> beam.Flatten()


# ---- reduce ------------------------------------------------------------------------------------


class ReduceParts(beam.PTransform):
    """RequestOutcomes -> (ItemResults, ErrorRows): one per item. Outcomes of whole documents
    pass through; the parts of split documents are merged, or reduced by prompt in rounds."""

    def __init__(
        self,
        task: TaskConfig,
        engine: EngineConfig,
        grouping: GroupingConfig,
        resume: ResumeConfig | None = None,
    ):
        super().__init__()
        self.task, self.engine, self.grouping, self.resume = task, engine, grouping, resume

    def expand(self, outcomes):
        whole, parts = outcomes | "Final or part" >> SplitFinal()
        finished = [whole | "Finish" >> beam.Map(reduce.finish_outcome)]
        collected = (
            parts
            | "Key parts by item" >> beam.Map(lambda outcome: (outcome.prompt.item, outcome))
            | "Gather parts" >> beam.GroupByKey()
            | "Collect parts" >> beam.ParDo(_CollectParts(self.task))
        )
        finished.append(collected)
        mode = self.task.reduce.mode_for(self.task.kind, self.task.schema is not None)
        if mode == "prompt" and self.task.chunking.max_tokens is not None:
            states = collected | "States" >> beam.Filter(
                lambda x: isinstance(x, reduce.ReduceState)
            )
            rounds = _ReduceRounds(self.task, self.engine, self.grouping, self.resume)
            finished.append(states | "Reduce rounds" >> rounds)
        return (
            finished
            | "All items" >> beam.Flatten()
            | "Drop states" >> beam.Filter(lambda x: not isinstance(x, reduce.ReduceState))
            | "Split errors" >> SplitErrors()
        )


class _CollectParts(beam.DoFn):
    """An item's part outcomes -> its ErrorRow, merged ItemResult, or a ReduceState."""

    def __init__(self, task: TaskConfig):
        self.task = task
        self.mode = task.reduce.mode_for(task.kind, task.schema is not None)

    def process(self, keyed):
        _, outcomes = keyed
        collected = reduce.collect_parts(list(outcomes), self.task.reduce)
        if isinstance(collected, ErrorRow):
            yield collected
        elif self.mode == "merge":
            yield reduce.merge_item(*collected, self.task)
        else:
            yield reduce.start_reduce(*collected, self.task)


class _ReduceRounds(beam.PTransform):
    """ReduceStates -> ItemResults and ErrorRows, over up to `task.reduce.rounds` rounds."""

    def __init__(
        self,
        task: TaskConfig,
        engine: EngineConfig,
        grouping: GroupingConfig,
        resume: ResumeConfig | None,
    ):
        super().__init__()
        self.task, self.engine, self.grouping, self.resume = task, engine, grouping, resume

    def expand(self, states):
        done = []
        rounds = self.task.reduce.rounds
        for level in range(1, rounds + 1):
            requests = states | f"Plan round {level}" >> beam.ParDo(
                _PlanRound(self.task, self.engine.model, level, last=level == rounds)
            )
            outcomes = requests | f"Run round {level}" >> RunEngine(
                self.engine, self.task, self.grouping, self.resume
            )
            final, partial = outcomes | f"Final in round {level}" >> SplitFinal()
            done.append(
                final | f"Finish round {level}" >> beam.Map(reduce.finish_reduce, self.task)
            )
            states = (
                partial
                | f"Key round {level}" >> beam.Map(lambda outcome: (outcome.prompt.item, outcome))
                | f"Gather round {level}" >> beam.GroupByKey()
                | f"Next state {level}"
                >> beam.MapTuple(
                    lambda _, outs, config=self.task.reduce: reduce.next_state(list(outs), config)
                )
            )
            errors = states | f"Failed in round {level}" >> beam.Filter(
                lambda x: isinstance(x, ErrorRow)
            )
            done.append(errors)
            states = states | f"Continue after {level}" >> beam.Filter(
                lambda x: isinstance(x, reduce.ReduceState)
            )
        return done | "Reduced" >> beam.Flatten()


class _PlanRound(beam.DoFn):
    def __init__(self, task: TaskConfig, model: str, level: int, last: bool):
        self.task, self.model, self.level, self.last = task, model, level, last

    def setup(self):
        self.tokenizer = tokenizer_for(self.model)

    def process(self, state: reduce.ReduceState):
        yield from reduce.plan_round(state, self.task, self.tokenizer, self.level, self.last)


# ---- writing -----------------------------------------------------------------------------------


class WriteResults(beam.PTransform):
    """ItemResults -> Parquet files `<output.results>-SSSSS-of-NNNNN.parquet` typed by `table`;
    returns the ErrorRows of items whose value does not fit its Arrow column."""

    def __init__(self, output: OutputConfig, table: ResultTable):
        super().__init__()
        self.output, self.table = output, table

    def expand(self, items):
        rows, errors = (
            items
            | "To rows" >> beam.ParDo(_ResultRows(self.table))
            | "Split errors" >> SplitErrors()
        )
        prefix, question = self.table.prefix, None
        if self.table.with_question:
            question = prefix + "question_index"
        sink = WriteParquetShards(
            self.output.results, self.table.schema, self.output, prefix + "id", question
        )
        _ = rows | "Write results" >> sink
        return errors


class _ResultRows(beam.DoFn):
    def __init__(self, table: ResultTable):
        self.table = table

    def process(self, item: ItemResult):
        try:
            row = self.table.row(item)
        except ArrowConversionError as e:
            yield _conversion_error(item, e)
            return
        count("results_out")
        resume.count_row(item.stats)
        yield row


def _conversion_error(item: ItemResult, error: ArrowConversionError) -> ErrorRow:
    return ErrorRow(
        id=item.origin.id,
        stage="write",
        reason=f"the output does not fit the Parquet schema: {error}",
        source=item.origin.source,
        line=item.origin.line,
        input="",
        question_index=item.question_index,
        output=item.text,
        finish_reason=item.finish_reason,
        model=item.model,
        stats=item.stats,
    )


class WriteErrors(beam.PTransform):
    """ErrorRows -> Parquet files `<output.errors>-SSSSS-of-NNNNN.parquet`. Takes one
    PCollection or a tuple of them (the errors of every step), which it writes without
    flattening them first (see `WriteParquetShards`)."""

    def __init__(self, output: OutputConfig):
        super().__init__()
        self.output = output

    def expand(self, errors):
        sink = WriteParquetShards(
            self.output.errors, ERRORS_SCHEMA, self.output, "id", "question_index"
        )
        rows = _each(errors, "To error rows", lambda: beam.Map(_counted_error_row))
        return rows | "Write errors" >> sink


def _counted_error_row(error: ErrorRow) -> dict[str, Any]:
    count("errors_out")
    resume.count_row(error.stats)
    return error_row(error)


class WriteParquetShards(beam.PTransform):
    """Row dicts -> `output.num_shards` Parquet files (0: one) `<prefix>-SSSSS-of-NNNNN.parquet`,
    every shard written even when empty; returns (path, rows) of each file. See parquet_shards:
    a GroupByKey per shard, no side inputs, and a retried write rewrites the same file.

    Takes one PCollection of rows or a tuple of them. A tuple is keyed by shard in each of its
    producers' steps and flattened once, with the empty shards, before the GroupByKey: a
    Flatten of its own ahead of this transform would be one more stage for the DirectRunner
    (one more round of bundles on every worker thread)."""

    def __init__(
        self,
        prefix: str,
        schema,
        output: OutputConfig,
        id_column: str,
        question_column: str | None = None,
    ):
        super().__init__()
        self.prefix, self.schema, self.output = prefix, schema, output
        self.id_column, self.question_column = id_column, question_column

    def expand(self, rows):
        shards = parquet_shards.shard_count(self.output)
        id_column = self.id_column

        def key_by_shard(row):  # unannotated: Beam would take annotations as type hints (coders)
            return parquet_shards.shard_of(str(row[id_column]), shards), row

        keyed = _each(rows, "Key by shard", lambda: beam.Map(key_by_shard))
        pipeline = keyed[0].pipeline
        every = pipeline | "Every shard" >> beam.Create([(i, None) for i in range(shards)])
        return (
            (*keyed, every)
            | "With empty shards" >> beam.Flatten()
            | "Gather shards" >> beam.GroupByKey()
            | "Write shards" >> beam.ParDo(_WriteShard(self, shards))
        )


def _each(pcolls, label: str, make: Callable[[], beam.PTransform]) -> tuple:
    """A new `make()` applied to one PCollection, or to each of a tuple of them (labelled
    `label 0`, `label 1`, ...); the outputs as a tuple."""
    if isinstance(pcolls, beam.pvalue.PCollection):
        return (pcolls | label >> make(),)
    return tuple(pcoll | f"{label} {i}" >> make() for i, pcoll in enumerate(pcolls))


class _WriteShard(beam.DoFn):
    def __init__(self, sink: WriteParquetShards, shards: int):
        self.prefix, self.schema, self.output = sink.prefix, sink.schema, sink.output
        self.order = parquet_shards.row_order(sink.id_column, sink.question_column)
        self.shards = shards

    def process(self, keyed):
        shard, values = keyed
        rows = sorted((row for row in values if row is not None), key=self.order)
        yield parquet_shards.write_shard(
            self.prefix, shard, self.shards, self.schema, rows, self.output
        )


__all__ = [
    "BuildPrompts",
    "GroupByPrefix",
    "ReadDocuments",
    "ReduceParts",
    "RunEngine",
    "ShardDocuments",
    "SplitErrors",
    "SplitFinal",
    "WriteErrors",
    "WriteParquetShards",
    "WriteResults",
]
