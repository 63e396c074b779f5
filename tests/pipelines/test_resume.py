"""Finished outcomes kept as a pipeline runs, and reused by a later run where they still apply:
a changed record, schema or model invalidates exactly the requests it changes; engine errors
are tried again; parts and reduce rounds of split documents are reused like whole ones."""

from __future__ import annotations

import dataclasses
import json

from flashbeam.model.checkpoint.random_init import write_random_checkpoint
from flashbeam.model.engine.request import Usage
from flashbeam.model.network.config import tiny_config
from flashbeam.pipelines import (
    ChunkingConfig,
    InputConfig,
    OutputConfig,
    PipelineConfig,
    TaskConfig,
    run_pipeline,
)
from flashbeam.pipelines.config import ReduceConfig, ResumeConfig
from flashbeam.pipelines.prompts import document_requests
from flashbeam.pipelines.records import Chunk, Document, Origin, RequestOutcome
from flashbeam.pipelines.resume import (
    FinishedWriter,
    list_finished,
    model_fingerprint,
    read_finished,
)

from .conftest import CONTEXT


def _run(tmp_path, name, docs, task, engine_config, store, reuse=True):
    """Run over `docs` (written to one input file) into `tmp_path/name`, keeping outcomes in
    `store` and reusing what an earlier run kept there (when `reuse`)."""
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    files = tuple(list_finished(str(store))) if reuse else ()
    config = PipelineConfig(
        input=InputConfig(str(path), id_field="id"),
        output=OutputConfig(str(tmp_path / name / "results"), str(tmp_path / name / "errors")),
        task=task,
        engine=engine_config,
        resume=ResumeConfig(str(store), files, run_id=name),
    )
    report = run_pipeline(config, [])
    assert report.state == "DONE"
    return report, config


def _rows(config, parquet_rows) -> dict[str, dict]:
    rows = parquet_rows(config.output.results) + parquet_rows(config.output.errors)
    return {r["id"]: r for r in rows}


def test_a_rerun_reuses_exactly_the_outcomes_that_still_apply(
    tmp_path, engine_config, tiny_schema, parquet_rows
):
    docs = [{"id": f"d{i}", "text": f"Invoice {i} from Acme, total {7 * i} USD."} for i in range(4)]
    docs.append({"id": "long", "text": "word " * (CONTEXT + 500)})  # an engine error
    task = TaskConfig(kind="extract", schema=tiny_schema, instructions="Extract.", max_tokens=8,
                      schema_in_prompt=False, chunking=ChunkingConfig(max_tokens=None))  # fmt: skip
    store = tmp_path / "finished"

    first, config = _run(tmp_path, "first", docs, task, engine_config, store)
    clean = _rows(config, parquet_rows)
    assert first.metrics.requests == 5 and first.metrics.requests_reused == 0
    assert clean["long"]["stage"] == "engine"
    kept = [key for path in list_finished(str(store)) for key, _ in read_finished(path)]
    assert len(kept) == len(set(kept)) == 4  # the engine error is not kept: tried next time

    again, config = _run(tmp_path, "again", docs, task, engine_config, store)
    m = again.metrics
    assert (m.requests_reused, m.rows_reused, m.requests) == (4, 4, 1)
    assert m.items_in == m.results_out + m.errors_out == 5
    again_rows = _rows(config, parquet_rows)
    assert {k: again_rows[k] for k in clean if k != "long"} == {
        k: v for k, v in clean.items() if k != "long"
    }

    changed = [dict(d, text="Receipt 2, paid in cash.") if d["id"] == "d2" else d for d in docs]
    edited, config = _run(tmp_path, "edited", changed, task, engine_config, store)
    assert (edited.metrics.requests_reused, edited.metrics.requests) == (3, 2)
    rows = _rows(config, parquet_rows)
    assert all(rows[k] == clean[k] for k in ("d0", "d1", "d3"))

    renamed = {**tiny_schema, "properties": {"paid": {"type": "boolean"}}, "required": ["paid"]}
    other_schema = dataclasses.replace(task, schema=renamed)
    report, _ = _run(tmp_path, "schema", docs, other_schema, engine_config, store)
    assert report.metrics.requests_reused == 0 and report.metrics.requests == 5

    # Other weights of the same shapes (another seed): another model.
    model = tiny_config("tiny", max_position_embeddings=CONTEXT,
                        original_max_position_embeddings=1024)  # fmt: skip
    other = write_random_checkpoint(tmp_path / "other-ckpt", model, seed=1)
    other_engine = dataclasses.replace(engine_config, model=str(other))
    assert model_fingerprint(other_engine) != model_fingerprint(engine_config)
    report, _ = _run(tmp_path, "model", docs, task, other_engine, store)
    assert report.metrics.requests_reused == 0 and report.metrics.requests == 5


def test_parts_and_reduce_rounds_of_split_documents_are_reused(
    tmp_path, engine_config, tiny_schema, parquet_rows
):
    text = " ".join(f"Line {i}: invoice INV-{i} was paid." for i in range(6))
    task = TaskConfig(
        kind="summarize",
        schema=tiny_schema,
        instructions="Summarize.",
        max_tokens=8,
        schema_in_prompt=False,
        chunking=ChunkingConfig(max_tokens=48, overlap_tokens=8),
        reduce=ReduceConfig(mode="prompt", max_input_tokens=24),
    )
    store = tmp_path / "finished"
    first, config = _run(tmp_path, "first", [{"id": "r", "text": text}], task, engine_config, store)
    [row] = parquet_rows(config.output.results)
    assert row["chunk_count"] > 1 and first.metrics.requests > row["chunk_count"]  # reduced
    again, config = _run(tmp_path, "again", [{"id": "r", "text": text}], task, engine_config, store)
    assert again.metrics.requests == 0
    assert again.metrics.requests_reused == first.metrics.requests
    assert again.metrics.rows_reused == 1
    assert parquet_rows(config.output.results) == [row]


def test_outcomes_are_written_as_they_become_final(tmp_path, engine_config, tiny_schema):
    """In files of `flush_rows` outcomes, or as soon as the oldest has waited `flush_s`; engine
    errors are not kept."""
    task = TaskConfig(kind="extract", schema=tiny_schema, instructions="Extract.")
    prompts = [document_requests(_chunk(f"d{i}"), task)[0] for i in range(4)]
    store = str(tmp_path / "finished")
    writer = FinishedWriter(ResumeConfig(store, (), "r"), task, engine_config, flush_rows=2)
    for prompt in prompts[:3]:
        writer.add(_outcome(prompt, "stop"))
    writer.add(_outcome(prompts[3], "error"))
    assert [len(list(read_finished(f))) for f in list_finished(store)] == [2]
    writer.flush()
    assert [len(list(read_finished(f))) for f in list_finished(store)] == [2, 1]
    eager = FinishedWriter(ResumeConfig(store, (), "e"), task, engine_config, flush_s=0.0)
    eager.add(_outcome(prompts[0], "stop"))
    assert len(list_finished(store)) == 3


def _chunk(doc_id: str) -> Chunk:
    text = f"Invoice {doc_id}."
    return Chunk(Document(Origin(doc_id, "src", 1), text=text), 0, 1, text, 0, len(text))


def _outcome(prompt, finish_reason: str) -> RequestOutcome:
    return RequestOutcome(prompt, finish_reason == "stop", 1, [], {"ok": True}, '{"ok": true}',
                          None, finish_reason, Usage(3, 0, 3, 2), 0.1, "m")  # fmt: skip
