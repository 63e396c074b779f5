"""The example jobs must prompt exactly as the embedded model was trained (model.synthetic):
system turn = the instruction, user turn = the document; a chunk of a split report framed as
"Part i of n of document ID", and the reduce step's input listing the parts' JSON, exactly as
the pipelines build them (the training data uses the same framing).
"""

from __future__ import annotations

from flashbeam.jobs.run import plan_job
from flashbeam.jobs.spec import load_job
from flashbeam.model.text.chat import encode_messages
from flashbeam.model.training import common
from flashbeam.model.training.report_tasks import chunk_user_content, reduce_user_content
from flashbeam.pipelines.prompts import document_requests, reduce_request, render_part
from flashbeam.pipelines.records import Chunk, Document, ItemStats, Origin

from .conftest import JOBS, sample_rows


def _task(name: str):
    return plan_job(load_job(JOBS / f"{name}.yaml")).config.task


def _chunk(text: str, index: int = 0, count: int = 1) -> Chunk:
    return Chunk(Document(Origin("doc", "d.jsonl", 1), text=text), index, count, text, 0, len(text))


def test_extraction_prompt_is_the_training_prompt():
    text = sample_rows("business_docs.jsonl", 1)[0]["text"]
    [request] = document_requests(_chunk(text), _task("extract_invoices"))
    trained = common.messages_for(common.EXTRACT_INSTRUCTION, text)
    assert encode_messages(request.request.messages) == encode_messages(trained)


def test_summarize_map_prompt_is_the_training_prompt():
    text = "Quarterly report\n\nRevenue grew."
    [request] = document_requests(_chunk(text, 1, 3), _task("nightly_summarize"))
    content = chunk_user_content("doc", 1, 3, text)
    trained = common.messages_for(common.CHUNK_INSTRUCTION, content)
    assert encode_messages(request.request.messages) == encode_messages(trained)


def test_summarize_reduce_prompt_is_the_training_prompt():
    partials = [{"title": "T", "people": []}, {"title": None, "people": ["Ann Lée"]}]
    parts = [render_part(p, "", True) for p in partials]
    task = _task("nightly_summarize")
    request = reduce_request(("doc", 0), Origin("doc", "d.jsonl", 1), parts, task, 1, 0, True,
                             "", ItemStats())  # fmt: skip
    content = reduce_user_content(partials, "doc")
    trained = common.messages_for(common.REDUCE_INSTRUCTION, content)
    assert encode_messages(request.request.messages) == encode_messages(trained)
