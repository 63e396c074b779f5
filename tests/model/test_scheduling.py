import itertools
import random

import pytest

from flashbeam.model.engine.prefix_plan import branch_points, plan_prefix_reuse, prefix_order


def lcp(a, b):
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def restore_in(order, prompts, block=1):
    """Brute force: the longest prefix each request shares with an earlier one in `order`."""
    out = [0] * len(prompts)
    for k, j in enumerate(order):
        best = max((lcp(prompts[i], prompts[j]) for i in order[:k]), default=0)
        best = min(best, len(prompts[j]) - 1)
        out[j] = max(best - best % block, 0)
    return out


def computed_tokens(order, prompts):
    return sum(len(p) - r for p, r in zip(prompts, restore_in(order, prompts)))


def docs_by_questions():
    system = [1, 2, 3]
    docs = [[10 + d] * n for d, n in enumerate([5, 9, 7])]
    questions = [[100 + q, 200] for q in range(3)]
    # question-major, so the original order interleaves the documents
    prompts = [system + doc + q for q in questions for doc in docs]
    return prompts, len(system), [len(system) + len(doc) for doc in docs]


def test_docs_by_questions_are_grouped_deepest_first():
    prompts, _, _ = docs_by_questions()
    # documents of 9, 7 and 5 tokens; each group in original order
    assert prefix_order(prompts) == [1, 4, 7, 2, 5, 8, 0, 3, 6]


def test_docs_by_questions_branch_points():
    prompts, system, doc_end = docs_by_questions()
    plan = plan_prefix_reuse(prompts)
    assert plan.order == prefix_order(prompts)
    d9, d7, d5 = doc_end[1], doc_end[2], doc_end[0]
    assert plan.branch_points == branch_points(prompts)
    # The first request overall snapshots after the system prompt and after its document; the
    # first of each other group restores the system prompt and snapshots after its document.
    assert plan.branch_points[1] == [system, d9]
    assert plan.branch_points[2] == [d7] and plan.branch_points[0] == [d5]
    for later in (4, 7, 5, 8, 3, 6):
        assert plan.branch_points[later] == []
    assert plan.restore_lengths == [system, 0, system, d5, d9, d7, d5, d9, d7]
    # every shared prefix computed once: the system prompt, each document, each question
    assert computed_tokens(plan.order, prompts) == 3 + (5 + 9 + 7) + 9 * 2


def test_block_aligns_positions_down():
    prompts, _, _ = docs_by_questions()  # system 3, documents end at 8, 12, 10
    plan = plan_prefix_reuse(prompts, block=4)
    assert plan.branch_points[1] == [12]  # the system prompt's 3 rounds down to 0: no reuse
    assert plan.branch_points[2] == [8] and plan.branch_points[0] == [8]
    assert plan.restore_lengths == [0, 0, 0, 8, 12, 8, 8, 12, 8]
    assert all(p % 4 == 0 for points in plan.branch_points for p in points)


def test_nested_prefixes():
    a, b, c, d = [1, 2], [1, 2, 3, 4], [1, 2, 3, 4, 5, 6], [1, 2, 3, 7]
    prompts = [d, c, b, a]
    plan = plan_prefix_reuse(prompts)
    # a prompt runs before the prompts extending it; the deeper shared branch (b, c) before d
    assert [prompts[i] for i in plan.order] == [a, b, c, d]
    assert plan.restore_lengths == [3, 4, 2, 0]
    # a snapshots at its own end (2 == len(a)): b extends it
    assert plan.branch_points == [[], [], [3, 4], [2]]
    assert computed_tokens(plan.order, prompts) == 7  # every distinct token once


def test_identical_prompts_are_adjacent_and_restore_all_but_one_token():
    same = [7, 8, 9, 10]
    prompts = [same, [1, 2, 3], same, [7, 8, 5], same]
    plan = plan_prefix_reuse(prompts)
    assert plan.order == [0, 2, 4, 3, 1]
    assert plan.restore_lengths == [0, 0, 3, 2, 3]
    assert plan.branch_points == [[2, 3], [], [], [], []]


def test_no_sharing_keeps_the_original_order():
    prompts = [[5, 1], [3], [9, 9, 9], [4, 4]]
    plan = plan_prefix_reuse(prompts)
    assert plan.order == [0, 1, 2, 3]
    assert plan.restore_lengths == [0] * 4 and plan.branch_points == [[]] * 4


def test_edge_cases():
    assert plan_prefix_reuse([]).order == []
    plan = plan_prefix_reuse([[], [1], []])
    assert plan.order == [0, 2, 1] and plan.restore_lengths == [0, 0, 0]
    assert plan.branch_points == [[], [], []]
    assert branch_points([[1, 2, 3]]) == [[]]
    with pytest.raises(ValueError, match="block"):
        plan_prefix_reuse([[1]], block=0)
    with pytest.raises(ValueError, match="permutation"):
        plan_prefix_reuse([[1], [2]], order=[0, 0])


def test_explicit_order_plans_for_that_order():
    prompts = [[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 6]]
    plan = plan_prefix_reuse(prompts, order=[2, 0, 1])
    assert plan.order == [2, 0, 1]
    assert plan.restore_lengths == [2, 3, 0]
    assert plan.branch_points == [[3], [], [2]]


def test_input_sequence_types_do_not_matter():
    lists = [[1, 2, 3], [1, 2, 4], [1, 5]]
    mixed = [tuple(lists[0]), lists[1], range(1, 6, 4)]
    assert plan_prefix_reuse(lists) == plan_prefix_reuse(mixed)


def random_prompts(rng, n):
    stems = [[rng.randrange(3) for _ in range(rng.randint(0, 6))] for _ in range(3)]
    return [
        rng.choice(stems) + [rng.randrange(3) for _ in range(rng.randint(0, 4))] for _ in range(n)
    ]


@pytest.mark.parametrize("block", [1, 2, 3])
def test_random_plans_are_consistent(block):
    rng = random.Random(block)
    for _ in range(200):
        prompts = random_prompts(rng, rng.randint(1, 12))
        plan = plan_prefix_reuse(prompts, block=block)
        assert plan == plan_prefix_reuse(prompts, block=block)  # deterministic
        assert sorted(plan.order) == list(range(len(prompts)))
        rank = {j: k for k, j in enumerate(plan.order)}
        # requests sharing any prefix are adjacent
        for j in range(len(prompts)):
            for n in range(1, len(prompts[j]) + 1):
                ranks = sorted(rank[i] for i, p in enumerate(prompts) if p[:n] == prompts[j][:n])
                assert ranks == list(range(ranks[0], ranks[-1] + 1))
        assert plan.restore_lengths == restore_in(plan.order, prompts, block)
        for j, r in enumerate(plan.restore_lengths):
            if r:  # some earlier request snapshots exactly this prefix
                assert any(
                    r in plan.branch_points[i] and prompts[i][:r] == prompts[j][:r]
                    for i in plan.order[: rank[j]]
                )
        for i, points in enumerate(plan.branch_points):
            assert points == sorted(set(points))
            for p in points:  # and every snapshot is restored by a later request
                assert plan.restore_lengths[i] < p <= len(prompts[i]) and p % block == 0
                assert any(
                    plan.restore_lengths[j] == p and prompts[j][:p] == prompts[i][:p]
                    for j in plan.order[rank[i] + 1 :]
                )


def test_prefix_order_computes_the_fewest_tokens():
    rng = random.Random(7)
    for _ in range(60):
        prompts = random_prompts(rng, rng.randint(1, 5))
        best = min(computed_tokens(o, prompts) for o in itertools.permutations(range(len(prompts))))
        assert computed_tokens(prefix_order(prompts), prompts) == best
