"""JSON Schema walking and `$ref` bundling, shared by the grammar compiler and the validator.

`bundle_refs(schema)` returns a schema whose every `$ref` is a JSON pointer into the schema
itself (`#/$defs/name`, `#` for the root), so the grammar engine and the validator read it the
same way, whatever the refs looked like:

- JSON pointers (`#/definitions/a`), `$id`-named resources anywhere in the schema (absolute or
  relative to the enclosing `$id`, draft-04 `id`), `$anchor`s and draft-06/07 `"$id": "#name"`;
- with `source` (the schema's file), refs to other files next to it (`common.json#/$defs/a`),
  and the refs inside those files;
- anything else (`https://...`, a missing file) raises RefError naming the ref and where it
  is: nothing is ever fetched over the network.

A ref whose target is not already an entry of the root's `$defs` / `definitions` gets a copy of
its target there, so a later rewrite of one subschema (a relaxed grammar) never leaves a ref
pointing into something that was changed. A schema whose refs are all plain pointers to such
entries comes back equal to the input.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urldefrag, urljoin, urlsplit

__all__ = ["RefError", "bundle_refs", "json_path", "subschemas"]

# Keywords whose values are schemas, a list of schemas, or a name -> schema map.
_SUB_SCHEMA = {"additionalProperties", "additionalItems", "contains", "not", "if", "then", "else",
               "propertyNames", "unevaluatedItems", "unevaluatedProperties", "items"}  # fmt: skip
_SCHEMA_LIST = {"allOf", "anyOf", "oneOf", "prefixItems", "items"}
_SCHEMA_MAP = {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas",
               "dependencies"}  # fmt: skip
# Keywords whose values are data, never schemas: nothing inside them is a resource or a ref.
_DATA = {"enum", "const", "default", "examples", "required", "type", "dependentRequired"}
_DEFS = ("$defs", "definitions")
# The base URI of a schema with no $id and no file (a reserved domain: never fetched, never real).
_ROOT_BASE = "https://schema.invalid/root.json"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")

Parts = tuple[str | int, ...]


class RefError(ValueError):
    """A `$ref` that does not resolve within the schema (or the files next to it)."""


def subschemas(schema: dict) -> Iterator[tuple[Parts, dict]]:
    """The direct subschemas of a schema object, each with its path below it."""
    for k, v in schema.items():
        if k in _SUB_SCHEMA and isinstance(v, dict):
            yield (k,), v
        elif k in _SCHEMA_LIST and isinstance(v, list):
            yield from (((k, i), s) for i, s in enumerate(v) if isinstance(s, dict))
        elif k in _SCHEMA_MAP and isinstance(v, dict):
            yield from (((k, n), s) for n, s in v.items() if isinstance(s, dict))


def json_path(parts: Parts) -> str:
    """`$.properties.name`, `$["$defs"].a`, `$.anyOf[0]`: a subschema's place, for messages."""
    out = "$"
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if part.isidentifier() else f"[{json.dumps(part)}]"
    return out


def _schema_nodes(schema: dict) -> Iterator[tuple[Parts, dict]]:
    """Every object that may be a schema: the subschemas, and the objects under keywords we do
    not know (`x-defs`, draft-specific containers), where resources may hide."""
    stack: list[tuple[Parts, dict]] = [((), schema)]
    while stack:
        parts, node = stack.pop()
        yield parts, node
        known = dict(subschemas(node))
        for sub, child in reversed(list(known.items())):
            stack.append(((*parts, *sub), child))
        for key, value in node.items():
            if key in _DATA or key in _SUB_SCHEMA or key in _SCHEMA_LIST or key in _SCHEMA_MAP:
                continue
            if isinstance(value, dict):
                stack.append(((*parts, key), value))


@dataclass
class _Doc:
    """One schema document: the schema itself, or a file one of its refs names."""

    root: dict
    file: Path | None
    base: str
    old_ids: bool  # draft-04 and older: `id`, not `$id`
    anchors_in_id: bool  # draft-07 and older: `"$id": "#name"` is an anchor
    refs: list[tuple[Parts, str, dict]] = field(default_factory=list)  # (where, base, node)


class _Bundler:
    def __init__(self, schema: dict, source: Path | None, where: str):
        self.where = where
        dialect = str(schema.get("$schema", ""))
        self.old = any(f"draft-0{n}" in dialect for n in (3, 4))
        self.legacy = self.old or any(f"draft-0{n}" in dialect for n in (6, 7))
        self.defs_key = "definitions" if self.legacy and "$defs" not in schema else "$defs"
        self.resources: dict[str, tuple[_Doc, Parts]] = {}
        self.anchors: dict[str, tuple[_Doc, Parts]] = {}
        self.files: dict[Path, _Doc] = {}
        self.copies: set[str] = set()  # pointers to root $defs entries made for copies
        file = source.resolve() if source is not None else None
        self.main = self._add(schema, file)

    def _add(self, schema: Any, file: Path | None) -> _Doc:
        id_key = "id" if self.old else "$id"
        own = schema.get(id_key) if isinstance(schema, dict) else None
        fallback = file.as_uri() if file is not None else _ROOT_BASE
        base = urldefrag(urljoin(fallback, own))[0] if isinstance(own, str) else fallback
        doc = _Doc(schema, file, base, self.old, self.legacy)
        if file is not None:
            self.files[file] = doc
            self.resources[file.as_uri()] = (doc, ())
        self.resources[base] = (doc, ())
        if isinstance(schema, dict):
            self._index(doc)
        return doc

    def _index(self, doc: _Doc) -> None:
        id_key = "id" if doc.old_ids else "$id"
        bases = {(): doc.base}
        for parts, node in _schema_nodes(doc.root):
            base = bases.get(parts) or next(
                bases[parts[:n]] for n in range(len(parts), -1, -1) if parts[:n] in bases
            )
            own = node.get(id_key)
            if parts and isinstance(own, str):
                if own.startswith("#") and doc.anchors_in_id:
                    self.anchors[urljoin(base, own)] = (doc, parts)
                else:
                    base = urldefrag(urljoin(base, own))[0]
                    self.resources[base] = (doc, parts)
            bases[parts] = base
            for key in ("$anchor", "$dynamicAnchor"):
                if isinstance(node.get(key), str):
                    self.anchors[f"{base}#{node[key]}"] = (doc, parts)
            if isinstance(node.get("$ref"), str):
                doc.refs.append((parts, base, node))

    def resolve(self, doc: _Doc, parts: Parts, base: str, ref: str) -> tuple[_Doc, Parts]:
        target = urljoin(base, ref)
        uri, fragment = urldefrag(target)
        found = self.resources.get(uri) or self._file(doc, parts, ref, uri)
        owner, at = found
        fragment = unquote(fragment)
        if fragment and not fragment.startswith("/"):
            hit = self.anchors.get(f"{uri}#{fragment}")
            if hit is None:
                raise self._error(doc, parts, ref, "does not resolve (no such $anchor)")
            return hit
        pointer = [p.replace("~1", "/").replace("~0", "~") for p in fragment.split("/")[1:]]
        node: Any = _node_at(owner.root, at)
        for part in pointer:
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node, part = node[int(part)], int(part)
            elif isinstance(node, dict) and part in node:
                node = node[part]
            else:
                raise self._error(doc, parts, ref, "does not resolve")
            at = (*at, part)
        return owner, at

    def _file(self, doc: _Doc, parts: Parts, ref: str, uri: str) -> tuple[_Doc, Parts]:
        scheme = urlsplit(ref).scheme
        if scheme and scheme != "file":
            raise self._error(
                doc, parts, ref,
                "points outside the schema, and remote refs are never fetched: copy the schema "
                "it names into $defs, or save it next to the schema file and ref it by a "
                "relative path",
            )  # fmt: skip
        if doc.file is None:
            raise self._error(
                doc, parts, ref,
                "does not resolve: only refs within the schema resolve here (refs to files "
                "next to it need the schema in a .json file)",
            )  # fmt: skip
        path_part = unquote(urlsplit(uri if scheme == "file" else ref).path)
        path = Path(path_part) if scheme == "file" else doc.file.parent / path_part
        path = path.resolve()
        if path in self.files:
            return self.files[path], ()
        if not path.is_file():
            raise self._error(doc, parts, ref, f"names no file next to the schema ({path})")
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise self._error(doc, parts, ref, f"names {path}, which is not JSON: {e}") from None
        return self._add(loaded, path), ()

    def _error(self, doc: _Doc, parts: Parts, ref: str, why: str) -> RefError:
        where = self.where if doc is self.main else f"{self.where}: {doc.file}"
        return RefError(f"{where}: $ref {ref!r} at {json_path(parts)} {why}")

    def bundle(self, mutate: bool) -> dict | None:
        """The bundled schema: the root itself when no ref changes; else, with `mutate`, the
        root rewritten in place (None without: the caller bundles a copy)."""
        targets: dict[tuple[int, Parts], str] = {}  # (document, target) -> the ref's new text
        rewrites: list[tuple[dict, tuple[int, Parts]]] = []
        queue, seen = [self.main], {id(self.main)}
        while queue:  # a file found while resolving has its own refs resolved in turn
            doc = queue.pop()
            for parts, base, node in doc.refs:
                owner, at = self.resolve(doc, parts, base, node["$ref"])
                if id(owner) not in seen:
                    seen.add(id(owner))
                    queue.append(owner)
                key = (id(owner), at)
                if key not in targets:
                    targets[key] = self._plain_ref(owner, at) or self._copy_name(owner, at)
                rewrites.append((node, key))
        unchanged = all(node["$ref"] == targets[key] for node, key in rewrites)
        if unchanged and not self.copies and not self.files and not self._has_nested_ids():
            return self.main.root
        if not mutate:
            return None
        docs = {id(d): d for d in [self.main, *self.files.values()]}
        for node, key in rewrites:
            node["$ref"] = targets[key]
        for doc in docs.values():
            _strip_nested_ids(doc, is_main=doc is self.main)
        copies = {k: v for k, v in targets.items() if v in self.copies}
        if copies:
            defs = self.main.root.setdefault(self.defs_key, {})
            for (doc_id, at), text in copies.items():
                body = copy.deepcopy(_node_at(docs[doc_id].root, at))
                if isinstance(body, dict) and at == () and docs[doc_id] is not self.main:
                    for key in _DEFS:  # every ref into them now names a copy of its own
                        body.pop(key, None)
                defs[text.rsplit("/", 1)[1]] = body
        return self.main.root

    def _plain_ref(self, owner: _Doc, at: Parts) -> str | None:
        """The pointer to a target that needs no copy: the root, or a root `$defs` entry."""
        if owner is not self.main:
            return None
        if at == ():
            return "#"
        if len(at) == 2 and at[0] in _DEFS and not _SAFE_NAME.search(str(at[1])):
            return f"#/{at[0]}/{at[1]}"
        return None

    def _copy_name(self, owner: _Doc, at: Parts) -> str:
        """The pointer to a new root `$defs` entry that will hold a copy of the target."""
        label = owner.file.name if owner is not self.main and owner.file else ""
        stem = "-".join([label, *(str(p).lstrip("$") for p in at)]).strip("-")
        stem = _SAFE_NAME.sub("_", stem) or "root"
        existing = self.main.root.get(self.defs_key)
        used = self.copies | {f"#/{self.defs_key}/{n}" for n in existing or {}}
        text, n = f"#/{self.defs_key}/ref-{stem}", 1
        while text in used:
            n += 1
            text = f"#/{self.defs_key}/ref-{stem}-{n}"
        self.copies.add(text)
        return text

    def _has_nested_ids(self) -> bool:
        return any(parts for _, (doc, parts) in self.resources.items() if doc is self.main) or any(
            doc is self.main for doc, _ in self.anchors.values()
        )


def _node_at(root: Any, parts: Parts) -> Any:
    node = root
    for part in parts:
        node = node[part]
    return node


def _strip_nested_ids(doc: _Doc, is_main: bool) -> None:
    """Below the root, `$id` / `id` and anchors would change what `#/...` means; every ref is a
    root pointer once rewritten, so they go."""
    id_key = "id" if doc.old_ids else "$id"
    for parts, node in _schema_nodes(doc.root):
        if parts or not is_main:
            if isinstance(node.get(id_key), str):
                del node[id_key]
            if isinstance(node.get("$anchor"), str):
                del node["$anchor"]


def bundle_refs(schema: Any, *, source: str | Path | None = None, where: str = "schema") -> Any:
    """`schema` with its refs all pointers into itself (see the module doc): the schema itself
    when they already are, else a bundled copy (the input is never changed). Raises RefError
    naming a ref that does not resolve. `source` is the schema's file, for refs to files next
    to it."""
    if not isinstance(schema, dict):
        return schema
    file = Path(source) if source else None
    unchanged = _Bundler(schema, file, where).bundle(mutate=False)
    if unchanged is not None:
        return unchanged
    return _Bundler(copy.deepcopy(schema), file, where).bundle(mutate=True)
