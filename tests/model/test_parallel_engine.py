"""The engine over 2 gloo ranks gives one device's tokens, cache hits and constrained outputs;
a bad world size is refused with the sizes that work; a dead helper fails every caller within
a bounded time and leaves no process behind."""

import os
import signal
import time

import pytest

from flashbeam.model import Engine, Request, tiny_config
from flashbeam.model.checkpoint.inventory import CheckpointError
from flashbeam.model.checkpoint.random_init import write_random_checkpoint

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 12}, "n": {"type": "integer"}},
    "required": ["name", "n"],
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    config = tiny_config("tiny", o_groups=4)
    return write_random_checkpoint(tmp_path_factory.mktemp("tp-engine"), config, seed=11)


def _requests():
    shared = list(range(20, 140))  # a long shared prefix: later requests hit the cache
    out = [
        Request(id=f"p{i}", prompt_token_ids=shared + [200 + i] * (3 + i), max_tokens=12)
        for i in range(4)
    ]
    out.append(Request(id="sampled", prompt_token_ids=shared[:60], max_tokens=10,
                       temperature=0.9, top_p=0.8, seed=5))  # fmt: skip
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}}
    out.append(Request(id="json", messages=[{"role": "user", "content": "give a name"}],
                       max_tokens=40, response_format=fmt))  # fmt: skip
    return out


def _run(engine):
    first = engine.generate(_requests()[:2])  # the prefix enters the cache
    rest = engine.generate(_requests()[2:])
    return [(r.id, r.token_ids, r.text, r.finish_reason, r.usage) for r in first + rest]


def test_two_ranks_generate_what_one_device_generates(checkpoint):
    with Engine.load(checkpoint, max_batch_tokens=64) as single:
        want = _run(single)
    with Engine.load(checkpoint, tensor_parallel=2, max_batch_tokens=64) as parallel:
        processes = parallel.runner.group.processes
        got = _run(parallel)
    assert got == want
    assert sum(u.prompt_cache_hit_tokens for *_, u in got) > 0
    assert all(not p.is_alive() for p in processes)


def test_a_world_size_the_model_cannot_take_is_refused(checkpoint):
    with pytest.raises(CheckpointError, match="tensor_parallel=3 .* sizes that work: 1, 2, 4"):
        Engine.load(checkpoint, tensor_parallel=3)


def test_a_helper_killed_mid_run_fails_every_caller_in_bounded_time(checkpoint):
    engine = Engine.load(checkpoint, tensor_parallel=2, max_batch_tokens=16)
    processes = engine.runner.group.processes
    futures = [
        engine.submit(Request(id=f"r{i}", prompt_token_ids=list(range(20, 300)), max_tokens=50))
        for i in range(3)
    ]
    time.sleep(0.5)
    os.kill(processes[0].pid, signal.SIGKILL)
    started = time.monotonic()
    for future in futures:
        with pytest.raises(Exception, match="rank 1|tensor-parallel"):
            result = future.result(timeout=60)
            if result.finish_reason == "error":
                raise RuntimeError(result.error)
    assert time.monotonic() - started < 60
    engine.close()
    assert all(not p.is_alive() for p in processes)
