"""PrefixCache: a radix tree over token ids whose nodes hold snapshots of the model's state.

A snapshot is whatever the engine stores after exactly `node.length` tokens (the engine stores a
reference to state its runner holds); the cache only reads its `nbytes`. Verbs: `match`, `find`,
`insert`, `pin` / `unpin`, `evict`. Unpinned snapshots are evicted least-recently-used first to
keep `used_bytes <= capacity_bytes`; `on_drop` hears of every snapshot the cache lets go of.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class Snapshot(Protocol):
    nbytes: int


class PrefixNode:
    """A tree node: the edge `key` from its parent ends after `length` tokens.

    `PrefixCache` hands nodes out as opaque handles; a node holding a snapshot keeps its identity
    when edges above it are split or merged.
    """

    __slots__ = ("parent", "key", "length", "children", "snapshot", "pins")

    def __init__(self, parent: PrefixNode | None, key: tuple[int, ...], length: int) -> None:
        self.parent = parent
        self.key = key
        self.length = length
        self.children: dict[int, PrefixNode] = {}
        self.snapshot: Any = None
        self.pins = 0

    def __repr__(self) -> str:
        return f"PrefixNode(length={self.length}, snapshot={self.snapshot is not None})"


@dataclass(frozen=True)
class PrefixMatch:
    """`length` tokens of the query are covered by `snapshot` (0 and None on a miss)."""

    length: int
    snapshot: Any
    handle: PrefixNode | None


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two sequences of the same type (list or tuple)."""
    n = min(len(a), len(b))
    i = 0
    while i < n:  # compare in C-speed slices, then find the mismatch within one slice
        j = min(i + 256, n)
        if a[i:j] != b[i:j]:
            break
        i = j
    else:
        return n
    while a[i] == b[i]:
        i += 1
    return i


class PrefixCache:
    """Radix tree of token-id prefixes holding state snapshots within a byte budget.

    `capacity_bytes == 0` disables the cache: nothing is stored and every match misses.
    Counters: `hit_tokens` / `miss_tokens` sum, over `match` calls, the tokens covered by the
    returned snapshot and the rest of the query. `on_drop(snapshot)` is called for each snapshot
    evicted, replaced or cleared, so whoever holds its memory can free it.
    """

    def __init__(self, capacity_bytes: int, on_drop: Callable[[Any], None] | None = None) -> None:
        if capacity_bytes < 0:
            raise ValueError(f"capacity_bytes must be >= 0, got {capacity_bytes}")
        self.capacity_bytes = int(capacity_bytes)
        self.on_drop = on_drop
        self._root = PrefixNode(None, (), 0)
        self.clear()

    # ---- state ---------------------------------------------------------------------------
    def clear(self) -> None:
        """Drop every snapshot and reset the counters; earlier handles become invalid."""
        for node in self._nodes():
            if node.snapshot is not None:
                self._dropped(node.snapshot)
            node.snapshot = None
            node.pins = 0
        self._root = PrefixNode(None, (), 0)
        self._lru: OrderedDict[PrefixNode, None] = OrderedDict()  # unpinned, oldest first
        self._evictable_bytes = 0
        self.used_bytes = 0
        self.num_snapshots = 0
        self.hit_tokens = 0
        self.miss_tokens = 0

    @property
    def pinned_bytes(self) -> int:
        return self.used_bytes - self._evictable_bytes

    @property
    def num_pinned(self) -> int:
        """Snapshots with at least one pin (an engine holds none once a batch is done)."""
        return self.num_snapshots - len(self._lru)

    # ---- verbs ---------------------------------------------------------------------------
    def match(self, token_ids: Sequence[int], max_length: int | None = None) -> PrefixMatch:
        """The deepest snapshot whose tokens are a prefix of `token_ids`, at most `max_length`."""
        tokens = tuple(token_ids)
        limit = len(tokens) if max_length is None else min(max_length, len(tokens))
        best = None
        for node in self._path(tokens):
            if node.length > limit:
                break
            if node.snapshot is not None:
                best = node
        if best is None:
            self.miss_tokens += len(tokens)
            return PrefixMatch(0, None, None)
        self._touch(best)
        self.hit_tokens += best.length
        self.miss_tokens += len(tokens) - best.length
        return PrefixMatch(best.length, best.snapshot, best)

    def find(self, token_ids: Sequence[int]) -> PrefixNode | None:
        """The handle of the snapshot stored for exactly `token_ids`, or None; unlike `match`
        it neither counts hits nor marks the snapshot as recently used."""
        node = self._find(tuple(token_ids))
        return node if node is not None and node.snapshot is not None else None

    def insert(self, token_ids: Sequence[int], snapshot: Snapshot) -> PrefixNode | None:
        """Store `snapshot` as the state after exactly `token_ids`; returns its handle.

        A snapshot already stored for the same tokens is replaced (pins stay). Least-recently
        used unpinned snapshots are evicted to make room; when that cannot make room (the
        snapshot exceeds the capacity, or the rest is pinned) nothing changes and the result is
        the node's existing handle, or None when it had no snapshot.
        """
        tokens = tuple(token_ids)
        if not tokens:
            raise ValueError("cannot store a snapshot of the empty prefix; it is the initial state")
        nbytes = int(snapshot.nbytes)
        existing = self._find(tokens)
        old = existing.snapshot if existing is not None else None
        old_bytes = old.nbytes if old is not None else 0
        if self.capacity_bytes == 0 or nbytes > self.capacity_bytes:
            return existing if old is not None else None
        # Keep the node's own old snapshot out of eviction while making room for the new one.
        own_evictable = old_bytes if existing is not None and existing in self._lru else 0
        need = self.used_bytes - old_bytes + nbytes - self.capacity_bytes
        if need > self._evictable_bytes - own_evictable:
            return existing if old is not None else None
        if own_evictable:
            self._leave_lru(existing)
        if need > 0:
            self.evict(need)
        node = self._node_at(tokens)  # after eviction, which may prune or merge nodes
        node.snapshot = snapshot
        self.used_bytes += nbytes - old_bytes
        if old is None:
            self.num_snapshots += 1
        elif old is not snapshot:
            self._dropped(old)
        if node.pins == 0:
            self._enter_lru(node)
        return node

    def pin(self, handle: PrefixNode) -> None:
        """Protect the handle's snapshot from eviction until a matching `unpin`."""
        if handle is None or handle.snapshot is None:
            raise ValueError(
                "cannot pin a handle without a snapshot (it was evicted or the cache was "
                "cleared); pin right after match or insert"
            )
        if handle.pins == 0:
            self._leave_lru(handle)
        handle.pins += 1

    def unpin(self, handle: PrefixNode) -> None:
        if handle is None or handle.pins == 0:
            raise ValueError("unpin without a matching pin")
        handle.pins -= 1
        if handle.pins == 0 and handle.snapshot is not None:
            self._enter_lru(handle)  # just released: most recently used

    def evict(self, nbytes: int) -> int:
        """Drop unpinned snapshots, least recently used first, until `nbytes` are freed.

        Returns the bytes freed (less than `nbytes` when the rest is pinned).
        """
        freed = 0
        while freed < nbytes and self._lru:
            node = next(iter(self._lru))
            self._leave_lru(node)
            freed += node.snapshot.nbytes
            self.used_bytes -= node.snapshot.nbytes
            self.num_snapshots -= 1
            dropped, node.snapshot = node.snapshot, None
            self._prune(node)
            self._dropped(dropped)
        return freed

    def _dropped(self, snapshot: Any) -> None:
        if self.on_drop is not None:
            self.on_drop(snapshot)

    # ---- tree ----------------------------------------------------------------------------
    def _path(self, tokens: tuple[int, ...]) -> Iterator[PrefixNode]:
        """Nodes whose whole path is a prefix of `tokens`, shallowest first (root excluded)."""
        node = self._root
        while node.length < len(tokens):
            child = node.children.get(tokens[node.length])
            if child is None or tokens[node.length : child.length] != child.key:
                return
            yield child
            node = child

    def _find(self, tokens: tuple[int, ...]) -> PrefixNode | None:
        for node in self._path(tokens):
            if node.length == len(tokens):
                return node
        return None

    def _node_at(self, tokens: tuple[int, ...]) -> PrefixNode:
        """The node ending after exactly `tokens`, created by adding a leaf or splitting an edge."""
        node = self._root
        while node.length < len(tokens):
            pos = node.length
            child = node.children.get(tokens[pos])
            if child is None:
                leaf = PrefixNode(node, tokens[pos:], len(tokens))
                node.children[tokens[pos]] = leaf
                return leaf
            k = common_prefix_length(child.key, tokens[pos : pos + len(child.key)])
            node = child if k == len(child.key) else self._split(child, k)
        return node

    def _split(self, child: PrefixNode, k: int) -> PrefixNode:
        """Insert a node `k` tokens down `child`'s edge; returns it."""
        parent = child.parent
        mid = PrefixNode(parent, child.key[:k], parent.length + k)
        parent.children[child.key[0]] = mid
        child.key = child.key[k:]
        child.parent = mid
        mid.children[child.key[0]] = child
        return mid

    def _prune(self, node: PrefixNode) -> None:
        """Remove snapshot-less leaves upward and merge a snapshot-less node into its only child."""
        while node is not self._root and node.snapshot is None:
            parent = node.parent
            if not node.children:
                del parent.children[node.key[0]]
                node.parent = None
                node = parent
            elif len(node.children) == 1:
                (child,) = node.children.values()
                child.key = node.key + child.key
                child.parent = parent
                parent.children[node.key[0]] = child
                node.parent = None
                return
            else:
                return

    def _nodes(self) -> Iterator[PrefixNode]:
        stack = [self._root]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(node.children.values())

    # ---- recency -------------------------------------------------------------------------
    def _touch(self, node: PrefixNode) -> None:
        if node in self._lru:
            self._lru.move_to_end(node)

    def _enter_lru(self, node: PrefixNode) -> None:
        self._lru[node] = None
        self._evictable_bytes += node.snapshot.nbytes

    def _leave_lru(self, node: PrefixNode) -> None:
        del self._lru[node]
        self._evictable_bytes -= node.snapshot.nbytes
