"""Read input files into Documents; every record that cannot be read becomes an ErrorRow.

Formats: JSONL (one JSON object per line), Parquet (one row per record), text files (one
document per file) and OpenAI batch JSONL (`custom_id` + `body` of a chat completion).
Files are opened through Beam's `FileSystems`, so any Beam filesystem works and `.gz`/`.bz2`
files are decompressed by extension; local Parquet files are opened by Arrow itself.

Ids are stable across runs: the configured id field (`custom_id` for OpenAI batch), else
`<path relative to the glob's base>:<line>` (`:<row>` for Parquet, 1-based), or the relative
path for text files. A record that is bad (not UTF-8, not JSON, missing fields, empty) yields
an ErrorRow naming the file and line, with the raw input.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

from apache_beam.io.filesystems import FileSystems

from .config import InputConfig
from .records import Document, ErrorRow, Origin

_WILDCARDS = "*?["
_BOM = b"\xef\xbb\xbf"
# OpenAI chat-completion body keys that map onto Request fields; others are ignored.
CHAT_PARAMS = ("max_tokens", "temperature", "top_p", "seed", "stop", "response_format", "thinking")

Record = Document | ErrorRow


class InputError(ValueError):
    """An input location that cannot be read at all (nothing matches, unknown format)."""


def match_input(pattern: str) -> list[str]:
    """The files `pattern` matches, sorted; raises InputError when there are none."""
    try:
        found = FileSystems.match([pattern])[0].metadata_list
    except Exception as e:  # noqa: BLE001 - filesystems raise their own types
        raise InputError(f"input.path {pattern!r} cannot be listed: {e}") from e
    paths = sorted(m.path for m in found if not is_local_directory(m.path))
    if not paths:
        raise InputError(
            f"input.path {pattern!r} matches no files; check the path (globs like data/*.jsonl "
            "are allowed) and that the files exist"
        )
    return paths


def is_local_directory(path: str) -> bool:
    """True for a directory on the local filesystem (a glob like data/* also matches those)."""
    return "://" not in path and os.path.isdir(path)


def glob_base(pattern: str) -> str:
    """The directory part of `pattern` before its first wildcard, ending in "/" (or "")."""
    cut = min((i for i, c in enumerate(pattern) if c in _WILDCARDS), default=len(pattern))
    head = pattern[:cut]
    slash = head.rfind("/")
    return head[: slash + 1] if slash >= 0 else ""


def relative_name(path: str, base: str) -> str:
    return path[len(base) :] if base and path.startswith(base) else path


def read_file(path: str, config: InputConfig, base: str) -> Iterator[Record]:
    """Every record of one file, in file order, as Documents and ErrorRows."""
    name = relative_name(path, base)
    readers = {
        "jsonl": _read_jsonl,
        "openai_batch": _read_openai_batch,
        "parquet": _read_parquet,
        "text": _read_text,
    }
    if config.format not in readers:
        raise InputError(f"input.format {config.format!r} is not one of {', '.join(readers)}")
    done = 0
    try:
        for record in readers[config.format](path, name, config):
            done += 1
            yield record
    except Exception as e:  # noqa: BLE001 - a broken file must not fail the pipeline
        reason = f"cannot read {path} after {done} records: {type(e).__name__}: {e}"
        yield ErrorRow.for_record(Origin(name, path), "read", reason, "")


# ---- line formats ----------------------------------------------------------------------------


def _lines(path: str, name: str) -> Iterator[tuple[int, str | ErrorRow]]:
    """(line number, text) for each non-blank line; a line that is not UTF-8 comes as an
    ErrorRow instead of text."""
    with FileSystems.open(path) as f:
        for number, raw in enumerate(iter(f.readline, b""), start=1):
            if number == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM) :]
            raw = raw.rstrip(b"\r\n")
            if not raw.strip():
                continue
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                origin = Origin(f"{name}:{number}", path, number)
                reason = (
                    f"{path}:{number}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column "
                    f"{e.start + 1}); re-encode the file as UTF-8"
                )
                yield (
                    number,
                    ErrorRow.for_record(origin, "read", reason, raw.decode("utf-8", "replace")),
                )


def _json_objects(path: str, name: str) -> Iterator[tuple[Origin, dict[str, Any] | ErrorRow, str]]:
    """(origin, object or ErrorRow, the line as read) for each non-blank line."""
    for number, line in _lines(path, name):
        origin = Origin(f"{name}:{number}", path, number)
        if isinstance(line, ErrorRow):
            yield origin, line, line.input
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            reason = f"{path}:{number}: not valid JSON: {e.msg} at column {e.colno}"
            yield origin, ErrorRow.for_record(origin, "read", reason, line), line
            continue
        if not isinstance(obj, dict):
            reason = f"{path}:{number}: expected a JSON object, got {type(obj).__name__}"
            yield origin, ErrorRow.for_record(origin, "read", reason, line), line
            continue
        yield origin, obj, line


def _read_jsonl(path: str, name: str, config: InputConfig) -> Iterator[Record]:
    for origin, obj, line in _json_objects(path, name):
        if isinstance(obj, ErrorRow):
            yield obj
            continue
        yield _document_from_fields(obj, origin, f"{path}:{origin.line}", config, line)


def _read_openai_batch(path: str, name: str, config: InputConfig) -> Iterator[Record]:
    for origin, obj, raw in _json_objects(path, name):
        if isinstance(obj, ErrorRow):
            yield obj
            continue
        where = f"{path}:{origin.line}"
        custom_id = obj.get("custom_id")
        if isinstance(custom_id, str) and custom_id:
            origin = Origin(custom_id, path, origin.line)
        problem = _chat_problem(obj)
        if problem:
            yield ErrorRow.for_record(origin, "read", f"{where}: {problem}", raw)
            continue
        body = obj["body"]
        params = {k: body[k] for k in CHAT_PARAMS if body.get(k) is not None}
        if "max_tokens" not in params and body.get("max_completion_tokens") is not None:
            params["max_tokens"] = body["max_completion_tokens"]
        yield Document(origin, messages=list(body["messages"]), params=params)


def _chat_problem(obj: dict[str, Any]) -> str | None:
    custom_id = obj.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return "'custom_id' is missing or not a non-empty string (the OpenAI batch format needs it)"
    body = obj.get("body")
    if not isinstance(body, dict):
        return "'body' is missing or not an object; it holds the chat completion request"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'body.messages' is missing or empty; give the chat messages to complete"
    if not all(isinstance(m, dict) for m in messages):
        return "'body.messages' must be a list of {'role': ..., 'content': ...} objects"
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        return f"'body.max_tokens' must be a positive integer, got {max_tokens!r}"
    return None


# ---- Parquet and text files ------------------------------------------------------------------


def _read_parquet(path: str, name: str, config: InputConfig) -> Iterator[Record]:
    import pyarrow.parquet as pq

    with ExitStack() as opened:
        try:
            # A local file is opened by Arrow, not through a Python file object, whose buffers
            # Arrow's threads may still hold at exit (see flashbeam.jobs.parquet_files).
            if "://" not in path or path.startswith("file://"):
                source = path.removeprefix("file://")
            else:
                source = opened.enter_context(FileSystems.open(path))
            parquet = opened.enter_context(pq.ParquetFile(source))
            batches = parquet.iter_batches(batch_size=1024)
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types for bad files
            reason = f"{path}: not a readable Parquet file: {e}"
            yield ErrorRow.for_record(Origin(name, path), "read", reason, "")
            return
        row_number = 0
        for batch in batches:
            for obj in batch.to_pylist():
                row_number += 1
                origin = Origin(f"{name}:{row_number}", path, row_number)
                where = f"{path}: row {row_number}"
                yield _document_from_fields(obj, origin, where, config, _json_text(obj))


def _read_text(path: str, name: str, config: InputConfig) -> Iterator[Record]:
    origin = Origin(name, path)
    with FileSystems.open(path) as f:
        data = f.read()
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        reason = f"{path}: not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start})"
        yield ErrorRow.for_record(origin, "read", reason, data.decode("utf-8", "replace"))
        return
    if not text.strip():
        yield ErrorRow.for_record(origin, "read", f"{path}: the document is empty", text)
        return
    yield Document(origin, text=text)


# ---- fields to a Document --------------------------------------------------------------------


def _document_from_fields(
    obj: dict[str, Any], origin: Origin, where: str, config: InputConfig, raw: str
) -> Record:
    if config.id_field is not None:
        value = obj.get(config.id_field)
        if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
            reason = (
                f"{where}: id field {config.id_field!r} is missing or not a string/integer; "
                "every record needs one (or leave input.id_field unset to use file:line ids)"
            )
            return ErrorRow.for_record(origin, "read", reason, raw)
        origin = Origin(str(value), origin.source, origin.line)
    text = obj.get(config.text_field)
    if not isinstance(text, str):
        got = "missing" if text is None else f"a {type(text).__name__}"
        fields = ", ".join(sorted(obj)) or "none"
        reason = (
            f"{where}: text field {config.text_field!r} is {got}, expected a string "
            f"(fields present: {fields}); set input.text_field to the field with the document"
        )
        return ErrorRow.for_record(origin, "read", reason, raw)
    if not text.strip():
        return ErrorRow.for_record(origin, "read", f"{where}: the document is empty", raw)
    return Document(origin, text=text)


def _json_text(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False, default=str)
