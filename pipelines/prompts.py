"""Prompts with the shared content first: system instructions (and the JSON Schema), then the
document, then the per-request part (the question) last, so every request over one document
shares the longest possible prompt prefix and the engine computes it once.

    system:  instructions [+ response format]      } shared by all requests of a document
    user:    document (or "Part i of n" + chunk)   }
    user:    question                                per request
"""

from __future__ import annotations

import json
import string
from typing import Any

from flashbeam.model.engine.request import Request
from flashbeam.model.text.chat import encode_messages
from flashbeam.schemas import response_format_for

from .config import TaskConfig
from .records import Chunk, ItemKey, ItemStats, Origin, PromptRequest

DEFAULT_INSTRUCTIONS = {
    "extract": "You extract structured data from documents. Read the document and fill in the "
    "fields of the JSON schema with values stated in it; use null for a field the document "
    "does not state. Reply with JSON only.",
    "summarize": "You summarize documents accurately and concisely, keeping names, dates and "
    "figures exact. Reply with JSON only.",
    "classify": "You classify documents. Choose the labels of the JSON schema that fit the "
    "document best. Reply with JSON only.",
    "generate": "You are a careful assistant working through a collection of documents.",
}
DEFAULT_QUESTIONS = {
    "extract": "Extract the fields from the document above.",
    "summarize": "Summarize the document above.",
    "classify": "Classify the document above.",
    "generate": "Respond to the document above.",
}
DEFAULT_REDUCE_INSTRUCTIONS = (
    "You combine the outputs produced for consecutive parts of one long document into a single "
    "output for the whole document. Keep every fact that appears in the parts; drop repetition "
    "caused by the overlap between parts."
)
TEMPLATE_FIELDS = {"document", "id", "part", "parts"}


def questions_for(task: TaskConfig) -> tuple[str, ...]:
    return task.questions or (DEFAULT_QUESTIONS[task.kind],)


def check_template(template: str) -> None:
    """Raise ValueError unless `template` uses only the known fields and has `{document}`."""
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as e:
        raise ValueError(f"task.document_template is not a valid template: {e}") from None
    unknown = fields - TEMPLATE_FIELDS
    if unknown or "document" not in fields:
        raise ValueError(
            f"task.document_template must contain {{document}} and may use only "
            f"{', '.join(sorted(TEMPLATE_FIELDS))}; found {sorted(fields) or 'no fields'}"
        )


def document_requests(chunk: Chunk, task: TaskConfig) -> list[PromptRequest]:
    """The requests for one chunk: one per question (a chat record: its own request)."""
    document = chunk.document
    if document.is_chat:
        return [_chat_request(chunk, task)]
    origin = document.origin
    body = task.document_template.format(
        document=chunk.text, id=origin.id, part=chunk.index + 1, parts=chunk.count
    )
    if chunk.count > 1 and "{part}" not in task.document_template:
        body = f"Part {chunk.index + 1} of {chunk.count} of document {origin.id}:\n\n{body}"
    source = map_schema_source(task, chunk.count)
    instructions = task.instructions or DEFAULT_INSTRUCTIONS[task.kind]
    shared = [_system_message(task, instructions, source)]
    shared.append({"role": "user", "content": body})
    requests = []
    for qi, question in enumerate(questions_for(task)):
        suffix = f"#c{chunk.index}" if chunk.count > 1 else ""
        # An empty question adds no turn: the document is the last thing the model reads.
        messages = [*shared, {"role": "user", "content": question}] if question else shared
        requests.append(
            PromptRequest(
                item=(origin.id, qi),
                origin=origin,
                request=_request(f"{origin.id}#q{qi}{suffix}", messages, task),
                shared_chars=shared_prefix_chars(messages, task.thinking),
                input_text=chunk.text,
                chunk_index=chunk.index,
                chunk_count=chunk.count,
                char_start=chunk.char_start,
                final=chunk.count == 1,
                schema_source=source,
            )
        )
    return requests


def map_schema_source(task: TaskConfig, chunk_count: int) -> str:
    """The schema a document request is held to: a part of a split document follows
    `reduce.part_schema` when set; a whole document is a final output (the task schema)."""
    if chunk_count > 1 and task.reduce.part_schema is not None:
        return "part"
    return "task" if task.schema is not None else "none"


def reduce_request(
    item: ItemKey,
    origin: Origin,
    parts: list[str],
    task: TaskConfig,
    level: int,
    group: int,
    final: bool,
    document_text: str,
    carry: ItemStats | None,
    merged: dict[str, Any] | None = None,
) -> PromptRequest:
    """A request that combines `parts` (outputs of consecutive parts) at reduce round `level`."""
    instructions = task.reduce.instructions or DEFAULT_REDUCE_INSTRUCTIONS
    listing = "\n\n".join(f"Part {i + 1}:\n{p}" for i, p in enumerate(parts))
    body = f"Outputs for the consecutive parts of document {origin.id}:\n\n{listing}"
    question = questions_for(task)[item[1]]
    source = "task" if task.schema is not None else "none"
    messages = [_system_message(task, instructions, source), {"role": "user", "content": body}]
    if question:
        messages.append({"role": "user", "content": question})
    return PromptRequest(
        item=item,
        origin=origin,
        request=_request(f"{origin.id}#q{item[1]}#r{level}.{group}", messages, task),
        shared_chars=shared_prefix_chars(messages, task.thinking),
        input_text=document_text,
        chunk_index=group,
        level=level,
        final=final,
        schema_source=source,
        carry=carry,
        merged=merged,
    )


def render_part(value: Any, text: str, has_schema: bool) -> str:
    """How one part's output is shown to the reduce prompt."""
    return json.dumps(value, ensure_ascii=False) if has_schema else text


def prompt_text(request: Request) -> str:
    """The prompt string the engine will tokenize for `request`."""
    return encode_messages(request.messages or [], thinking=request.thinking_enabled)


def shared_prefix_chars(messages: list[dict[str, Any]], thinking: bool) -> int:
    """Characters of the prompt text that do not depend on the last (per-request) message.
    Raises ChatFormatError for messages the chat format cannot encode."""
    full = encode_messages(messages, thinking=thinking)
    if len(messages) < 2:
        return 0
    head = encode_messages(messages[:-1], thinking=thinking, add_generation_prompt=False)
    n = min(len(full), len(head))
    i = 0
    while i < n and full[i] == head[i]:
        i += 1
    return i


def _system_message(task: TaskConfig, instructions: str, source: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "system", "content": instructions}
    schema = task.schema_for(source)
    if schema is not None and task.schema_in_prompt:
        message["response_format"] = response_format_for(schema)
    return message


def _request(request_id: str, messages: list[dict[str, Any]], task: TaskConfig) -> Request:
    return Request(
        id=request_id,
        messages=messages,
        max_tokens=task.max_tokens,
        temperature=task.temperature,
        thinking={"type": "enabled"} if task.thinking else None,
    )


def _chat_request(chunk: Chunk, task: TaskConfig) -> PromptRequest:
    document = chunk.document
    params = dict(document.params)
    response_format = params.get("response_format")
    format_type = response_format.get("type") if isinstance(response_format, dict) else None
    if format_type == "text":
        params.pop("response_format")
    thinking = params.pop("thinking", None)
    if thinking is None and task.thinking:
        thinking = {"type": "enabled"}
    params.setdefault("max_tokens", task.max_tokens)
    params.setdefault("temperature", task.temperature)
    messages = list(document.messages or [])
    request = Request(id=document.origin.id, messages=messages, thinking=thinking, **params)
    if task.schema is not None:
        source = "task"
    elif format_type in ("json_schema", "json_object"):
        source = "request"
    else:
        source = "none"
    return PromptRequest(
        item=(document.origin.id, 0),
        origin=document.origin,
        request=request,
        shared_chars=shared_prefix_chars(messages, request.thinking_enabled),
        input_text=json.dumps(messages, ensure_ascii=False),
        schema_source=source,
        source_text="\n\n".join(
            m["content"]
            for m in messages
            if m.get("role") in ("user", "assistant") and isinstance(m.get("content"), str)
        ),
    )
