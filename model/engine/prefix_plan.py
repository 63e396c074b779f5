"""Cache-aware planning over a set of prompts: admission order and where to snapshot state.

Both come from one compressed trie of the prompts, built from their sorted order and the common
prefix lengths of sorted neighbours (no all-pairs comparison):

- `prefix_order`: a depth-first walk, so requests sharing a prefix are adjacent and a shared
  prefix is computed once and reused while resident.
- `branch_points`: for each request, the positions at which to snapshot because a later request
  in that order restores exactly that prefix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from flashbeam.model.engine.prefix_cache import common_prefix_length


@dataclass(frozen=True)
class PrefixPlan:
    """Prefix reuse for one batch (all lists are indexed by request, except `order`).

    - `order`: request indices in admission order.
    - `restore_lengths[i]`: tokens request i restores from state computed by requests before it
      in `order` (never its whole prompt: at least one token is computed for logits).
    - `branch_points[i]`: sorted positions L with `restore_lengths[i] < L <= len(prompt i)` at
      which request i snapshots its state because a later request restores exactly its first L
      tokens. `L == len(prompt i)` is the state right after its prefill, which a later prompt
      extending it restores.
    """

    order: list[int]
    restore_lengths: list[int]
    branch_points: list[list[int]]


def plan_prefix_reuse(
    prompts: Sequence[Sequence[int]],
    block: int = 1,
    order: Sequence[int] | None = None,
    first: Sequence[int] = (),
) -> PrefixPlan:
    """Admission order (default `prefix_order`) and snapshots; positions align down to `block`.

    `first` lists requests that precede all others in the default order, as listed (requests
    already running, or overdue): the rest follow in `prefix_order`.
    """
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    trie = _PromptTrie(prompts)
    if order is None:
        ahead = set(first)
        order = list(first) + [i for i in trie.order() if i not in ahead]
    order = _check_order(order, len(prompts))
    restore = trie.restore_lengths(order, block)
    return PrefixPlan(order, restore, trie.branch_points(restore))


def prefix_order(prompts: Sequence[Sequence[int]]) -> list[int]:
    """Request indices with shared prefixes adjacent: a depth-first walk of the prompt trie.

    At each trie node the prompts ending there come first (identical prompts together, so a
    prompt runs before the longer prompts that extend it), then the child subtrees, deepest
    shared prefix first; ties keep the original order.
    """
    return _PromptTrie(prompts).order()


def branch_points(
    prompts: Sequence[Sequence[int]], block: int = 1, order: Sequence[int] | None = None
) -> list[list[int]]:
    """Per request, the positions at which to snapshot state (see `PrefixPlan.branch_points`)."""
    return plan_prefix_reuse(prompts, block, order).branch_points


class _TrieNode:
    """A node at `depth` tokens; `ends` are the requests whose prompt ends exactly here."""

    __slots__ = ("depth", "parent", "children", "ends", "count", "first", "shared", "seen", "marks")

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.parent: _TrieNode | None = None
        self.children: list[_TrieNode] = []
        self.ends: list[int] = []
        self.count = 0  # prompts in the subtree
        self.first = 0  # smallest request index in the subtree
        self.shared = -1  # depth of the deepest node in the subtree with count >= 2, else -1
        self.seen = False  # a request earlier in the admission order passes through here
        self.marks: list[int] = []  # positions in (parent.depth, depth] a request restores


class _PromptTrie:
    def __init__(self, prompts: Sequence[Sequence[int]]) -> None:
        # One sequence type, so sorting and slices compare in C; lists pass through uncopied.
        seqs = [p if type(p) is list else list(p) for p in prompts]
        self.lengths = [len(s) for s in seqs]
        self.root = _TrieNode(0)
        self.end: list[_TrieNode] = [self.root] * len(seqs)
        stack = [self.root]  # the path of the previous prompt in sorted order
        prev: list[int] = []
        for i in sorted(range(len(seqs)), key=seqs.__getitem__):
            lcp = common_prefix_length(prev, seqs[i])
            while stack[-1].depth > lcp:
                node = stack.pop()
                if stack[-1].depth < lcp:
                    stack.append(_TrieNode(lcp))
                _attach(stack[-1], node)
            if stack[-1].depth < len(seqs[i]):
                stack.append(_TrieNode(len(seqs[i])))
            stack[-1].ends.append(i)
            self.end[i] = stack[-1]
            prev = seqs[i]
        while len(stack) > 1:
            node = stack.pop()
            _attach(stack[-1], node)
        self.preorder = self._preorder()
        for node in reversed(self.preorder):
            node.count = len(node.ends) + sum(c.count for c in node.children)
            node.first = min(node.ends[:1] + [c.first for c in node.children], default=0)
            node.shared = max(
                [c.shared for c in node.children] + [node.depth if node.count > 1 else -1]
            )

    def _preorder(self) -> list[_TrieNode]:
        out, stack = [], [self.root]
        while stack:
            node = stack.pop()
            out.append(node)
            stack.extend(reversed(node.children))
        return out

    def order(self) -> list[int]:
        out: list[int] = []
        stack = [self.root]
        while stack:
            node = stack.pop()
            out.extend(node.ends)
            kids = sorted(node.children, key=lambda c: (-max(c.shared, node.depth), c.first))
            stack.extend(reversed(kids))
        return out

    def restore_lengths(self, order: list[int], block: int) -> list[int]:
        """Per request, the longest prefix shared with an earlier request in `order`.

        Each restored position is also marked on the highest trie node that covers it.
        """
        for node in self.preorder:
            node.seen = False
            node.marks = []
        restore = [0] * len(self.end)
        for j in order:
            deepest = self.end[j]  # deepest node on j's path an earlier request passed through
            while deepest is not None and not deepest.seen:
                deepest = deepest.parent
            node = self.end[j]
            while node is not None and not node.seen:
                node.seen = True
                node = node.parent
            if deepest is None:
                continue
            length = min(deepest.depth, self.lengths[j] - 1)
            length -= length % block
            if length <= 0:
                continue
            restore[j] = length
            while deepest.parent is not None and deepest.parent.depth >= length:
                deepest = deepest.parent
            deepest.marks.append(length)
        return restore

    def branch_points(self, restore: list[int]) -> list[list[int]]:
        """Per request, the marked positions on its path beyond its own restore length."""
        marked: dict[_TrieNode, list[int]] = {}  # sorted marks on the path from the root
        points: list[list[int]] = [[] for _ in self.end]
        for node in self.preorder:  # a parent before its children
            on_path = marked[node.parent] if node.parent is not None else []
            on_path = marked[node] = on_path + sorted(set(node.marks))
            for i in node.ends:
                points[i] = [p for p in on_path if p > restore[i]]
        return points


def _attach(parent: _TrieNode, child: _TrieNode) -> None:
    child.parent = parent
    parent.children.append(child)


def _check_order(order: Sequence[int], n: int) -> list[int]:
    order = list(order)
    if sorted(order) != list(range(n)):
        raise ValueError(f"order must be a permutation of range({n}), got {order[:10]}...")
    return order
