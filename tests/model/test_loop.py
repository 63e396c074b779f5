"""The engine as a service: many threads submit to one loop; backpressure, timeouts,
cancellation, failures and shutdown. Every wait has a limit, so a hang fails a test instead of
stalling the suite."""

import gc
import random
import threading
import time
import weakref
from concurrent.futures import CancelledError

import pytest
import torch

from flashbeam.model import Engine, EngineError, EngineFull, Request

WAIT = 120.0


def ids(n, seed):
    return torch.randint(16, 500, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def grouped_requests(docs=4, questions=3, **options):
    """Documents of 140+ tokens, each asked `questions` different short questions."""
    texts = [ids(140 + 3 * d, seed=200 + d) for d in range(docs)]
    return [
        Request(
            id=f"d{d}q{q}",
            prompt_token_ids=texts[d] + ids(6, seed=20 * d + q),
            max_tokens=6,
            **options,
        )
        for q in range(questions)
        for d in range(docs)
    ]


def run_threads(target, n):
    """Run target(k) for k < n in n threads; re-raise the first error; fail if one hangs."""
    errors = []

    def guarded(k):
        try:
            target(k)
        except BaseException as e:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=guarded, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert not any(t.is_alive() for t in threads), "a caller hung"
    if errors:
        raise errors[0]


def submit_at_random_times(engine, requests, callers, seed=0):
    """Each of `callers` threads submits every `callers`-th request after a random pause, then
    waits for its own results; all results by request id."""
    results = {}

    def caller(k):
        rng = random.Random(seed + k)
        mine = requests[k::callers]
        futures = []
        for request in mine:
            time.sleep(rng.uniform(0, 0.03))
            futures.append(engine.submit(request))
        for request, future in zip(mine, futures):
            results[request.id] = future.result(timeout=WAIT)

    run_threads(caller, callers)
    return results


def hold(engine, gate: threading.Event, started: threading.Event | None = None):
    """Make every decode step of `engine` wait for `gate` (and set `started` on the first)."""
    decode = engine.runner.decode

    def gated(*args):
        if started is not None:
            started.set()
        assert gate.wait(WAIT)
        return decode(*args)

    engine.runner.decode = gated


def test_threads_submitting_at_random_times_get_the_tokens_of_one_call(checkpoint):
    requests = grouped_requests()
    with Engine.load(checkpoint, snapshot_interval=64) as reference:
        want = {r.id: r.token_ids for r in reference.generate(requests)}
    with Engine.load(checkpoint, snapshot_interval=64) as engine:
        got = submit_at_random_times(engine, requests, callers=4)
        assert {i: r.token_ids for i, r in got.items()} == want
        # One cache for all callers: each document is computed once; its other questions
        # restore it where they diverge, or from the last 64-token snapshot if they came late.
        for d in range(4):
            hits = sorted(got[f"d{d}q{q}"].usage.prompt_cache_hit_tokens for q in range(3))
            assert hits[0] == 0 and hits[1] >= 128
        # The cache's own counters are the sums of the per-request figures.
        assert engine.cache.hit_tokens == sum(r.usage.prompt_cache_hit_tokens for r in got.values())
        assert engine.cache.miss_tokens == sum(
            r.usage.prompt_cache_miss_tokens for r in got.values()
        )
        assert not engine.runner.sequences and not engine.scheduler.has_work


def test_requests_submitted_together_compute_their_shared_prefix_once(checkpoint):
    # Submitted one by one into an idle engine, the first would be computed alone before the
    # others arrive, and past the point where they diverge; together they are planned as one.
    requests = grouped_requests(docs=1, questions=3)
    with Engine.load(checkpoint) as engine:
        results = [f.result(timeout=WAIT) for f in engine.submit_many(requests)]
    assert sorted(r.usage.prompt_cache_hit_tokens for r in results) == [0, 140, 140]


def test_four_threads_calling_generate_at_once_each_get_their_results(checkpoint):
    requests = grouped_requests(docs=2)
    with Engine.load(checkpoint) as engine:
        want = [r.token_ids for r in engine.generate(requests)]
        results, progress = {}, {k: [] for k in range(4)}

        def call(k):
            results[k] = engine.generate(requests, progress=progress[k].append)

        run_threads(call, 4)
    for k in range(4):
        assert [r.token_ids for r in results[k]] == want
        final = progress[k][-1]  # each call's counters add up to its own results
        assert final.finished == final.total == len(requests) and final.errors == 0
        assert final.prompt_tokens == sum(r.usage.prompt_tokens for r in results[k])
        assert final.cached_tokens == sum(r.usage.prompt_cache_hit_tokens for r in results[k])
        assert final.generated_tokens == sum(r.usage.completion_tokens for r in results[k])


def test_seeded_sampling_is_the_same_whatever_else_is_in_the_batch(checkpoint):
    sampled = [
        Request(id=f"s{i}", prompt_token_ids=ids(30 + i, seed=300 + i), max_tokens=8,
                temperature=1.0, top_p=0.9, seed=i)
        for i in range(4)
    ]  # fmt: skip
    others = grouped_requests(docs=2, questions=2, temperature=0.8, seed=5)
    with Engine.load(checkpoint) as engine:
        alone = [engine.generate([r])[0].token_ids for r in sampled]
        mixed = submit_at_random_times(engine, others + sampled, callers=3, seed=7)
    assert [mixed[r.id].token_ids for r in sampled] == alone


def test_submit_blocks_while_the_engine_holds_max_pending_requests(checkpoint):
    def request(i):
        return Request(id=f"r{i}", prompt_token_ids=ids(20, i), max_tokens=3, ignore_eos=True)

    with Engine.load(checkpoint, max_pending=2) as engine:
        gate = threading.Event()
        hold(engine, gate)  # nothing finishes until the gate opens
        first = [engine.submit(request(i)) for i in range(2)]
        with pytest.raises(EngineFull, match="max_pending"):
            engine.submit(request(2), queue_timeout=0.05)
        third = []
        waiter = threading.Thread(target=lambda: third.append(engine.submit(request(3))))
        waiter.start()
        waiter.join(0.3)
        assert waiter.is_alive()  # no room: submit waits
        gate.set()
        waiter.join(WAIT)
        assert not waiter.is_alive()
        results = [f.result(timeout=WAIT) for f in first + third]
    assert [r.finish_reason for r in results] == ["length"] * 3


def test_a_request_past_its_timeout_fails_alone(checkpoint):
    long = Request(id="long", prompt_token_ids=ids(20, 1), max_tokens=3000, ignore_eos=True)
    behind = Request(id="behind", prompt_token_ids=ids(20, 2), max_tokens=2)
    with Engine.load(checkpoint, max_batch_size=1) as engine:
        engine.generate([behind])  # the first call in a process pays torch's start-up costs
        running, waiting = engine.submit(long, timeout=1.0), engine.submit(behind, timeout=0.1)
        late, never = running.result(timeout=WAIT), waiting.result(timeout=WAIT)
        assert late.finish_reason == "error" and "timed out" in late.error
        assert 0 < len(late.token_ids) < 3000  # it was generating when its time ran out
        assert never.finish_reason == "error" and "waiting to be admitted" in never.error
        after = engine.generate([Request(id="after", prompt_token_ids=ids(20, 3), max_tokens=2)])
        assert after[0].finish_reason in ("stop", "length")
        assert not engine.runner.sequences and not engine.scheduler.has_work


def test_cancelled_requests_leave_the_engine(checkpoint):
    def request(rid, seed, n):
        return Request(id=rid, prompt_token_ids=ids(20, seed), max_tokens=n, ignore_eos=True)

    with Engine.load(checkpoint, max_batch_size=1, max_pending=2) as engine:
        gate, started = threading.Event(), threading.Event()
        hold(engine, gate, started)
        running = engine.submit(request("running", 1, 3))
        queued = engine.submit(request("queued", 2, 3))
        assert started.wait(WAIT)
        assert queued.cancel()  # waiting behind the full batch
        gate.set()
        assert running.result(timeout=WAIT).finish_reason == "length"
        with pytest.raises(CancelledError):
            queued.result(timeout=WAIT)
        generating = threading.Event()
        hold(engine, gate, generating)
        endless = engine.submit(request("endless", 3, 3000))
        assert generating.wait(WAIT)
        assert endless.cancel()  # while generating
        # The slots of both came free, and the loop went on to serve others.
        after = engine.submit(request("after", 4, 2)).result(timeout=WAIT)
        assert after.finish_reason == "length"
        assert not engine.runner.sequences and not engine.scheduler.has_work


# A schema the grammar cannot enforce whole, with exact enforcement asked for: refused.
UNENFORCEABLE = {
    "type": "json_schema",
    "json_schema": {
        "name": "code",
        "schema": {"properties": {"c": {"type": "string", "not": {"const": "a"}}}},
        "constraint": "exact",
    },
}


def test_request_errors_beside_healthy_requests_fail_only_themselves(checkpoint):
    healthy = grouped_requests(docs=2, questions=2)
    broken = [
        Request(id="model", prompt_token_ids=ids(20, 9) + [499], max_tokens=3),
        Request(id="vocab", prompt_token_ids=[10**6]),
        Request(id="schema", prompt_token_ids=ids(8, 1), response_format=UNENFORCEABLE),
    ]  # fmt: skip
    with Engine.load(checkpoint) as engine:
        want = {r.id: r.token_ids for r in engine.generate(healthy)}
        forward_step = engine.model.forward_step

        def failing(ids, states, **options):
            if (ids == 499).any():
                raise RuntimeError("injected failure")
            return forward_step(ids, states, **options)

        engine.model.forward_step = failing
        got = submit_at_random_times(engine, healthy + broken, callers=3)
    assert {r.id: got[r.id].token_ids for r in healthy} == want
    assert all(got[r.id].finish_reason == "error" for r in broken)
    assert "injected failure" in got["model"].error
    assert "outside the vocabulary" in got["vocab"].error
    assert "cannot be used for constrained decoding" in got["schema"].error


def test_a_fatal_error_fails_every_pending_request_with_its_cause(checkpoint):
    with Engine.load(checkpoint, max_batch_size=2, max_pending=6) as engine:
        decode_step, calls = engine.model.decode_step, []

        def dying(ids, batch):
            calls.append(1)
            if len(calls) >= 3:
                raise MemoryError("injected: out of memory")
            return decode_step(ids, batch)

        engine.model.decode_step = dying
        requests = [
            Request(id=f"r{i}", prompt_token_ids=ids(20, i), max_tokens=10, ignore_eos=True)
            for i in range(7)
        ]
        futures = [engine.submit(r) for r in requests[:6]]
        blocked = []  # the seventh waits for room, which only the failure frees

        def submit_seventh():
            try:
                engine.submit(requests[6])
            except EngineError as e:
                blocked.append(e)

        waiter = threading.Thread(target=submit_seventh)
        waiter.start()
        for future in futures:
            with pytest.raises(EngineError, match="fatal error") as info:
                future.result(timeout=WAIT)
            assert isinstance(info.value.__cause__, MemoryError)
        waiter.join(WAIT)
        assert not waiter.is_alive() and isinstance(blocked[0].__cause__, MemoryError)
        assert isinstance(engine.failure, MemoryError)
        with pytest.raises(EngineError, match="injected: out of memory"):
            engine.submit(requests[0])
        engine._loop._thread.join(WAIT)
        assert not engine._loop._thread.is_alive() and engine.model is None


def test_close_finishes_or_fails_what_is_pending_and_frees_the_model(checkpoint):
    request = Request(id="a", prompt_token_ids=ids(20, 1), max_tokens=3, ignore_eos=True)
    engine = Engine.load(checkpoint)
    model = weakref.ref(engine.model)
    pending = engine.submit(request)
    thread = engine._loop._thread
    engine.close()  # waits for what was submitted
    assert pending.result(timeout=0).finish_reason == "length"
    assert not thread.is_alive() and engine.model is None
    gc.collect()
    assert model() is None
    with pytest.raises(EngineError, match="closed"):
        engine.submit(request)

    endless = Request(id="b", prompt_token_ids=ids(20, 2), max_tokens=3000, ignore_eos=True)
    with Engine.load(checkpoint) as engine:
        future = engine.submit(endless)
        engine.close(wait=False)
        with pytest.raises(EngineError, match="closed"):
            future.result(timeout=WAIT)
        assert not engine._loop._thread.is_alive()


def test_a_forgotten_engine_stops_its_thread(checkpoint):
    engine = Engine.load(checkpoint)
    engine.generate([Request(id="a", prompt_token_ids=ids(10, 1), max_tokens=2)])
    thread = engine._loop._thread
    del engine
    gc.collect()
    thread.join(WAIT)
    assert not thread.is_alive()
