import random
from dataclasses import dataclass

import pytest

from flashbeam.model.engine.prefix_cache import PrefixCache, common_prefix_length


@dataclass(frozen=True)
class Snap:
    name: str
    nbytes: int = 10


def check_tree(cache: PrefixCache) -> None:
    """Compressed radix tree: keys continue their parent, no redundant snapshot-less nodes."""
    stack = [cache._root]
    snapshots = used = 0
    while stack:
        node = stack.pop()
        for first, child in node.children.items():
            assert child.parent is node and child.key[0] == first
            assert child.length == node.length + len(child.key)
            stack.append(child)
        if node is cache._root:
            continue
        if node.snapshot is None:
            assert len(node.children) >= 2, "a snapshot-less node must branch"
        else:
            snapshots += 1
            used += node.snapshot.nbytes
    assert snapshots == cache.num_snapshots
    assert used == cache.used_bytes <= cache.capacity_bytes


def test_common_prefix_length():
    assert common_prefix_length([], [1]) == 0
    assert common_prefix_length([1, 2, 3], [1, 2, 3]) == 3
    assert common_prefix_length([1, 2, 3], [1, 2]) == 2
    long = list(range(1000))
    assert common_prefix_length(long, long[:700] + [-1] + long[701:]) == 700
    assert common_prefix_length(tuple(long), tuple(long[:256]) + (5,)) == 256


def test_empty_cache_misses():
    cache = PrefixCache(100)
    assert cache.match([]).length == 0
    m = cache.match([1, 2, 3])
    assert (m.length, m.snapshot, m.handle) == (0, None, None)
    assert cache.miss_tokens == 3 and cache.hit_tokens == 0


def test_match_returns_deepest_snapshot_within_max_length():
    cache = PrefixCache(1000)
    a, b = Snap("a"), Snap("b")
    cache.insert([1, 2], a)
    cache.insert([1, 2, 3, 4], b)
    assert cache.match([1, 2, 3, 4, 5]).snapshot is b
    assert cache.match([1, 2, 3, 4]).snapshot is b  # exact full-length match
    m = cache.match([1, 2, 3, 4], max_length=3)
    assert (m.length, m.snapshot) == (2, a)
    assert cache.match([1, 2, 3, 9]).snapshot is a  # diverges inside the edge to b
    assert cache.match([1, 2], max_length=1).snapshot is None
    assert cache.match([1, 2], max_length=-1).snapshot is None
    assert cache.match([2, 2]).snapshot is None
    assert cache.match([1]).snapshot is None  # ends inside the edge to a
    check_tree(cache)


def test_insert_splits_edges():
    cache = PrefixCache(1000)
    cache.insert([1, 2, 3, 4, 5], Snap("long"))
    cache.insert([1, 2, 3, 7], Snap("branch"))  # splits at 3
    cache.insert([1, 2], Snap("mid"))  # splits the shared edge again
    check_tree(cache)
    root = cache._root
    assert list(root.children) == [1]
    mid = root.children[1]
    assert (mid.key, mid.snapshot.name) == ((1, 2), "mid")
    fork = mid.children[3]
    assert fork.key == (3,) and fork.snapshot is None and sorted(fork.children) == [4, 7]
    assert cache.match([1, 2, 3, 4, 5, 6]).snapshot.name == "long"
    assert cache.match([1, 2, 3, 7]).snapshot.name == "branch"
    assert cache.match([1, 2, 3, 8]).snapshot.name == "mid"
    assert cache.num_snapshots == 3 and cache.used_bytes == 30


def test_handles_survive_splits():
    cache = PrefixCache(1000)
    handle = cache.insert([1, 2, 3, 4], Snap("x"))
    cache.insert([1, 2, 9], Snap("y"))
    assert cache.match([1, 2, 3, 4]).handle is handle


def test_replacing_a_snapshot_keeps_one():
    cache = PrefixCache(1000)
    h1 = cache.insert([1, 2, 3], Snap("old", 10))
    cache.pin(h1)
    h2 = cache.insert([1, 2, 3], Snap("new", 30))
    assert h2 is h1 and h2.snapshot.name == "new"
    assert cache.num_snapshots == 1 and cache.used_bytes == 30
    cache.unpin(h1)  # the pin carried over to the replacement
    assert cache.num_pinned == 0


def test_lru_eviction_order_under_a_small_budget():
    cache = PrefixCache(30)
    cache.insert([1], Snap("a"))
    cache.insert([2], Snap("b"))
    cache.insert([3], Snap("c"))
    cache.match([1, 5])  # a is now the most recently used
    cache.insert([4], Snap("d"))  # evicts b
    assert cache.match([2]).snapshot is None
    assert [cache.match([t]).snapshot.name for t in (3, 1, 4)] == ["c", "a", "d"]
    cache.insert([5], Snap("e", 20))  # evicts c then a, the least recently matched
    assert cache.match([3]).snapshot is None and cache.match([1]).snapshot is None
    assert [cache.match([t]).snapshot.name for t in (4, 5)] == ["d", "e"]
    assert cache.used_bytes == 30
    check_tree(cache)


def test_eviction_prunes_and_merges_nodes():
    cache = PrefixCache(1000)
    cache.insert([1, 2, 3], Snap("a"))
    cache.insert([1, 2, 4, 5], Snap("b"))
    cache.insert([1, 2, 4, 6], Snap("c"))
    assert cache.evict(10) == 10  # a, the least recently used
    check_tree(cache)
    assert cache.match([1, 2, 3]).snapshot is None
    cache.evict(10)  # b: the fork at [1, 2, 4] is left with one child and merges into it
    check_tree(cache)
    only = cache._root.children[1]
    assert only.key == (1, 2, 4, 6) and only.snapshot.name == "c" and not only.children
    cache.evict(10)
    assert not cache._root.children and cache.used_bytes == 0 and cache.num_snapshots == 0


def test_pinned_snapshots_are_never_evicted():
    cache = PrefixCache(20)
    a = cache.insert([1], Snap("a"))
    cache.insert([2], Snap("b"))
    cache.pin(a)
    cache.pin(a)
    assert cache.num_pinned == 1
    cache.insert([3], Snap("c"))  # must evict b, although a is older
    assert cache.match([1]).snapshot.name == "a" and cache.match([2]).snapshot is None
    assert cache.evict(100) == 10  # only c is evictable
    cache.unpin(a)
    assert cache.evict(100) == 0  # still pinned once
    cache.unpin(a)
    assert cache.evict(100) == 10 and cache.num_snapshots == 0


def test_insert_that_cannot_fit_changes_nothing():
    cache = PrefixCache(20)
    a = cache.insert([1], Snap("a"))
    b = cache.insert([2], Snap("b"))
    cache.pin(a)
    cache.pin(b)
    assert cache.insert([3], Snap("c")) is None  # everything else is pinned
    assert cache.insert([4], Snap("huge", 21)) is None  # larger than the capacity
    assert cache.insert([1], Snap("a2", 15)) is a and a.snapshot.name == "a"  # no room: kept
    assert cache.used_bytes == 20 and cache.num_snapshots == 2
    check_tree(cache)


def test_capacity_zero_disables_the_cache():
    cache = PrefixCache(0)
    assert cache.insert([1, 2], Snap("a", 0)) is None
    assert cache.match([1, 2, 3]).snapshot is None
    assert cache.num_snapshots == 0 and cache.used_bytes == 0


def test_pin_unpin_errors():
    cache = PrefixCache(100)
    handle = cache.insert([1, 2], Snap("a"))
    with pytest.raises(ValueError, match="without a matching pin"):
        cache.unpin(handle)
    with pytest.raises(ValueError, match="without a snapshot"):
        cache.pin(None)
    cache.evict(10)
    with pytest.raises(ValueError, match="evicted"):
        cache.pin(handle)
    with pytest.raises(ValueError, match="empty prefix"):
        cache.insert([], Snap("root"))


def test_clear_invalidates_handles():
    cache = PrefixCache(100)
    handle = cache.insert([1, 2], Snap("a"))
    cache.pin(handle)
    cache.match([1, 2, 3])
    cache.clear()
    assert cache.num_snapshots == 0 and cache.used_bytes == 0 and cache.hit_tokens == 0
    assert cache.match([1, 2, 3]).snapshot is None
    with pytest.raises(ValueError):
        cache.pin(handle)
    cache.insert([1, 2], Snap("b"))
    assert cache.match([1, 2]).snapshot.name == "b"


def test_hit_and_miss_counters():
    cache = PrefixCache(100)
    cache.insert([1, 2, 3], Snap("a"))
    cache.match([1, 2, 3, 4, 5], max_length=4)
    cache.match([7, 8])
    assert (cache.hit_tokens, cache.miss_tokens) == (3, 2 + 2)


def test_random_operations_agree_with_a_dictionary():
    rng = random.Random(0)
    cache = PrefixCache(200)
    stored: dict[tuple[int, ...], Snap] = {}
    pinned = []
    for step in range(3000):
        tokens = tuple(rng.choice([0, 1]) for _ in range(rng.randint(0, 8)))
        op = rng.random()
        if op < 0.45 and tokens:
            snap = Snap(f"s{step}", rng.randint(1, 40))
            if cache.insert(tokens, snap) is not None and cache._find(tokens).snapshot is snap:
                stored[tokens] = snap
        elif op < 0.9:
            limit = rng.choice([None, max(len(tokens) - 1, 0)])
            m = cache.match(tokens, limit)
            top = len(tokens) if limit is None else limit
            live = {k: v for k, v in stored.items() if getattr(cache._find(k), "snapshot", 0) is v}
            best = max((n for n in range(1, top + 1) if tokens[:n] in live), default=0)
            assert m.length == best
            assert m.snapshot is (live[tokens[:best]] if best else None)
            if m.handle is not None and rng.random() < 0.3:
                cache.pin(m.handle)
                pinned.append(m.handle)
        elif pinned:
            cache.unpin(pinned.pop(rng.randrange(len(pinned))))
        check_tree(cache)
        for handle in pinned:
            assert handle.snapshot is not None
    assert cache.num_pinned == len({id(h) for h in pinned})
