"""The scheduler alone (no model): planning as requests arrive, waiting for a prefix being
computed, overdue requests, and snapshots the cache lets go of."""

import pytest
import torch

from flashbeam.model.engine.request import Request
from flashbeam.model.engine.scheduler import Scheduler
from flashbeam.model.engine.sequence import Sequence


def seq(seq_id, prompt, arrival):
    request = Request(id=f"r{seq_id}", prompt_token_ids=prompt)
    return Sequence(seq_id, request, prompt, 4, torch.Generator(), arrival=arrival)


def run_prefill(scheduler, plan, nbytes=100):
    """What the engine does with a step's prefill chunks: every snapshot taken, `nbytes` each."""
    for group in plan.prefill:
        for chunk in group:
            scheduler.prefilled(chunk, {sid: nbytes for _, sid in chunk.snapshots})


def test_a_newcomer_waits_for_the_prefix_a_running_sequence_is_computing():
    doc = list(range(100, 250))  # 150 tokens
    scheduler = Scheduler(1 << 20, max_batch_tokens=50, max_batch_size=8, snapshot_interval=1024)
    first = seq(0, doc + [1, 2], arrival=0)
    scheduler.add([first])
    plan = scheduler.schedule()
    assert [a.seq for a in plan.admitted] == [first] and plan.admitted[0].restore is None
    run_prefill(scheduler, plan)
    assert first.computed == 50
    later = seq(1, doc + [3, 4], arrival=1)  # arrives while `first` is computing the document
    scheduler.add([later])
    plan = scheduler.schedule()
    assert not plan.admitted  # it waits instead of computing the document again
    assert 150 in first.snapshot_points  # the first sequence now snapshots where they diverge
    run_prefill(scheduler, plan)
    plan = scheduler.schedule()  # the chunk [100, 150) takes the snapshot at its end
    [[chunk]] = plan.prefill
    assert (chunk.size, [n for n, _ in chunk.snapshots]) == (50, [50])
    run_prefill(scheduler, plan)
    plan = scheduler.schedule()
    [admission] = plan.admitted
    assert admission.seq is later and later.computed == later.cache_hit == 150
    assert admission.restore == chunk.snapshots[0][1]


def test_an_overtaken_request_is_admitted_before_later_groups():
    scheduler = Scheduler(1 << 20, max_batch_tokens=4096, max_batch_size=1, snapshot_interval=64)
    running = seq(0, list(range(10, 40)), arrival=0)
    scheduler.add([running])
    scheduler.schedule()
    lone = seq(1, list(range(500, 530)), arrival=1)
    shared = list(range(700, 760))
    group = [seq(2, shared + [1], arrival=2), seq(3, shared + [2], arrival=2)]
    scheduler.add([lone, *group])
    admitted = []
    for _ in range(3):  # each time the one running sequence ends, the next is admitted
        scheduler.remove(scheduler.running[0])
        plan = scheduler.schedule()
        admitted += [a.seq.id for a in plan.admitted]
        run_prefill(scheduler, plan)
    # The group's shared prefix puts it first; once one of it overtook the lone request, the
    # lone request goes next instead of waiting behind every later group.
    assert admitted == [2, 1, 3]


def test_snapshots_the_cache_cannot_keep_are_handed_back_for_freeing():
    scheduler = Scheduler(250, max_batch_tokens=4096, max_batch_size=4, snapshot_interval=64)
    for i in range(3):
        scheduler.add([seq(i, list(range(100 * i + 10, 100 * i + 80)), arrival=i)])
        run_prefill(scheduler, scheduler.schedule())
    kept = {node.snapshot.id for node in scheduler.cache._nodes() if node.snapshot is not None}
    dropped = scheduler.take_dropped()
    # Each prompt snapshots at 64 and at 69 (one before its end): 6 of 100 bytes, room for 2.
    assert len(kept) == 2 and len(dropped) == 4 and not kept & set(dropped)
    assert scheduler.take_dropped() == []


@pytest.mark.parametrize("budgeted", [True, False])
def test_admission_keeps_awaited_prefixes_within_the_cache(budgeted):
    """Three documents, two questions each, in a cache with room for one and a half document
    snapshots: admitting every document at once would leave no room to keep the later ones
    for their second questions. With snapshot sizes known, admission waits for room instead."""
    docs = [list(range(100 * d + 10, 100 * d + 90)) for d in range(3)]  # 80 tokens each
    seqs = [seq(2 * d + q, doc + [q + 1, q + 2], arrival=0) for d, doc in enumerate(docs)
            for q in range(2)]  # fmt: skip
    sizes = {"state_bytes": lambda length: 100} if budgeted else {}
    scheduler = Scheduler(150, max_batch_tokens=4096, max_batch_size=8, snapshot_interval=1024,
                          **sizes)  # fmt: skip
    scheduler.add(seqs)
    for _ in range(10):
        plan = scheduler.schedule()
        run_prefill(scheduler, plan)
        for s in [s for s in scheduler.running if not s.prefilling]:
            scheduler.remove(s)  # they finish at once: only the prefixes matter here
    assert not scheduler.has_work
    hits = [s.cache_hit for s in seqs]
    if budgeted:
        assert hits == [0, 80] * 3
    else:
        assert sorted(hits)[:4] == [0, 0, 0, 0]  # a second question computed its document again


def test_admission_stops_where_the_step_budget_does():
    scheduler = Scheduler(1 << 20, max_batch_tokens=100, max_batch_size=8, snapshot_interval=1024)
    seqs = [seq(i, list(range(100 * i + 10, 100 * i + 90)), arrival=0) for i in range(3)]
    scheduler.add(seqs)
    plan = scheduler.schedule()
    # Two prompts of 80 tokens cover the 100-token budget; a third would only hold a slot.
    assert [a.seq.id for a in plan.admitted] == [0, 1]
    assert [c.size for g in plan.prefill for c in g] == [80, 20]
    run_prefill(scheduler, plan)
    assert [a.seq.id for a in scheduler.schedule().admitted] == [2]


def test_a_short_shared_prefix_is_not_waited_for():
    template = list(range(10, 30))  # 20 tokens, below min_wait_tokens
    scheduler = Scheduler(1 << 20, max_batch_tokens=4096, max_batch_size=8, snapshot_interval=1024)
    seqs = [seq(i, template + list(range(100 * i + 100, 100 * i + 160)), arrival=0)
            for i in range(3)]  # fmt: skip
    scheduler.add(seqs)
    assert len(scheduler.schedule().admitted) == 3  # each computes the template itself


def test_arrivals_trickling_in_behind_planned_requests_are_planned_once_per_interval():
    """A call larger than max_pending hands requests over one by one as others finish; planning
    them one step at a time would re-plan everything waiting at every step."""
    now = [0.0]

    def clock():  # every reading 10 ms later: a plan takes 10 ms, the interval is 100 ms
        now[0] += 0.01
        return now[0]

    scheduler = Scheduler(1 << 20, max_batch_tokens=4096, max_batch_size=2, snapshot_interval=64,
                          clock=clock)  # fmt: skip
    scheduler.add([seq(i, list(range(100 * i + 10, 100 * i + 50)), arrival=0) for i in range(6)])
    run_prefill(scheduler, scheduler.schedule())
    assert scheduler.plans == 1 and len(scheduler.running) == 2
    doc = list(range(5000, 5080))
    late = [seq(10 + i, doc + [i + 1], arrival=1 + i) for i in range(3)]
    for s in late:  # arrive while planned requests still wait: not planned, not admitted yet
        scheduler.add([s])
        scheduler.remove(scheduler.running[0])
        plan = scheduler.schedule()
        run_prefill(scheduler, plan)
        assert all(a.seq not in late for a in plan.admitted)
    assert scheduler.plans == 1 and scheduler.waiting[-3:] == late
    now[0] += 1.0  # the interval has passed: one plan takes all three
    scheduler.schedule()
    assert scheduler.plans == 2
    assert [s.restore_length for s in late] == [0, 80, 80]  # the shared document, planned once
    while scheduler.has_work:  # every request is admitted in the end
        for s in list(scheduler.running):
            scheduler.remove(s)
        run_prefill(scheduler, scheduler.schedule())
