"""The retry driver against scripted engines: seeds, temperatures, length growth, feedback, and
each retry submitted as soon as its attempt fails."""

import json
import threading
from concurrent.futures import Future

import pytest

from flashbeam.model.engine.request import Request, Result
from flashbeam.schemas import RetryPolicy, generate_validated
from flashbeam.schemas.retry import retry_seed

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "site": {"type": "string", "format": "uri"}},
    "required": ["name", "site"],
}
GOOD = json.dumps({"name": "a", "site": "https://example.com"})
BAD_FORMAT = json.dumps({"name": "a", "site": "not a uri"})  # the grammar does not check formats


class ScriptedEngine:
    """Replies from a script: outputs[id] is the list of (text, finish_reason) per attempt."""

    def __init__(self, outputs: dict[str, list[tuple[str, str]]]):
        self.outputs = outputs
        self.calls: list[list[Request]] = []

    def generate(self, requests: list[Request]) -> list[Result]:
        self.calls.append(list(requests))
        results = []
        for r in requests:
            attempt = sum(r.id == q.id for call in self.calls for q in call) - 1
            text, reason = self.outputs[r.id][attempt]
            error = "boom" if reason == "error" else None
            results.append(Result(id=r.id, text=text, finish_reason=reason, error=error))
        return results


def test_valid_outputs_need_one_call():
    engine = ScriptedEngine({"a": [(GOOD, "stop")], "b": [(GOOD, "stop")]})
    out = generate_validated(engine, [Request(id="a"), Request(id="b")], SCHEMA)
    assert [(r.id, r.valid, r.attempts, r.errors) for r in out] == [
        ("a", True, 1, []), ("b", True, 1, [])
    ]  # fmt: skip
    assert out[0].value == json.loads(GOOD) and out[0].result.text == GOOD
    assert len(engine.calls) == 1
    sent = engine.calls[0][0].response_format
    assert sent["type"] == "json_schema" and sent["json_schema"]["schema"] == SCHEMA


def test_each_outcome_is_reported_once_as_soon_as_it_is_final():
    """A valid output, an engine error and a request out of attempts are final; a retried
    attempt is not. `on_final` hears each request once, the first ones before the last call."""
    engine = ScriptedEngine(
        {"ok": [(GOOD, "stop")], "err": [("", "error")],
         "late": [(BAD_FORMAT, "stop"), (GOOD, "stop")], "never": [(BAD_FORMAT, "stop")] * 2}
    )  # fmt: skip
    heard = []

    def final(i, outcome):
        heard.append((i, outcome, len(engine.calls)))

    requests = [Request(id=i) for i in ("ok", "err", "late", "never")]
    out = generate_validated(engine, requests, SCHEMA, RetryPolicy(max_attempts=2), on_final=final)
    assert sorted(i for i, _, _ in heard) == [0, 1, 2, 3]
    assert all(r is out[i] for i, r, _ in heard)
    assert {i: calls for i, _, calls in heard} == {0: 1, 1: 1, 2: 2, 3: 2}


def test_format_failures_are_retried_in_one_batch_with_new_seed_and_hotter_temperature():
    engine = ScriptedEngine(
        {"a": [(BAD_FORMAT, "stop"), (GOOD, "stop")], "b": [(GOOD, "stop")],
         "c": [(BAD_FORMAT, "stop"), (BAD_FORMAT, "stop"), (GOOD, "stop")]}
    )  # fmt: skip
    requests = [Request(id="a", seed=5), Request(id="b"), Request(id="c", temperature=0.9)]
    out = generate_validated(engine, requests, SCHEMA)
    assert [(r.valid, r.attempts) for r in out] == [(True, 2), (True, 1), (True, 3)]
    assert [[q.id for q in call] for call in engine.calls] == [["a", "b", "c"], ["a", "c"], ["c"]]
    a2, c2 = engine.calls[1]
    assert a2.seed == retry_seed(requests[0], 2) and a2.seed != 5
    assert (a2.temperature, c2.temperature) == (0.7, 0.9)  # never colder than asked
    assert engine.calls[2][0].temperature == 1.0
    assert len({retry_seed(requests[2], k) for k in (2, 3)}) == 2


def test_length_truncation_grows_max_tokens_up_to_the_cap():
    cut = GOOD[:10]
    engine = ScriptedEngine({"a": [(cut, "length"), (cut, "length"), (GOOD, "stop")]})
    policy = RetryPolicy(max_tokens_cap=300)
    out = generate_validated(engine, [Request(id="a", max_tokens=100)], SCHEMA, policy)
    assert out[0].valid and out[0].attempts == 3
    assert [call[0].max_tokens for call in engine.calls] == [100, 200, 300]


def test_never_valid_is_returned_with_reasons_after_max_attempts():
    engine = ScriptedEngine({"a": [(BAD_FORMAT, "stop")] * 3, "b": [("{", "length")] * 3})
    out = generate_validated(engine, [Request(id="a"), Request(id="b")], SCHEMA)
    assert [(r.id, r.valid, r.attempts) for r in out] == [("a", False, 3), ("b", False, 3)]
    assert out[0].errors == ["$.site: 'not a uri' is not a 'uri'"]
    assert out[0].value == json.loads(BAD_FORMAT) and out[0].result.text == BAD_FORMAT
    assert out[1].errors[0].startswith("output stopped at the token limit")
    assert out[1].value is None
    assert len(engine.calls) == 3


def test_feedback_appends_the_failed_output_and_errors_once():
    messages = [{"role": "user", "content": "extract"}]
    engine = ScriptedEngine({"a": [(BAD_FORMAT, "stop")] * 2 + [(GOOD, "stop")]})
    policy = RetryPolicy(feedback=True)
    out = generate_validated(engine, [Request(id="a", messages=messages)], SCHEMA, policy)
    assert out[0].valid and out[0].attempts == 3
    second, third = engine.calls[1][0].messages, engine.calls[2][0].messages
    assert second[:1] == messages and len(second) == len(third) == 3
    assert second[1] == {"role": "assistant", "content": BAD_FORMAT}
    assert (
        second[2]["role"] == "user" and "$.site: 'not a uri' is not a 'uri'" in second[2]["content"]
    )
    assert messages == [{"role": "user", "content": "extract"}]  # the caller's list is untouched


def test_without_feedback_messages_stay_as_given():
    messages = [{"role": "user", "content": "extract"}]
    engine = ScriptedEngine({"a": [(BAD_FORMAT, "stop"), (GOOD, "stop")]})
    generate_validated(engine, [Request(id="a", messages=messages)], SCHEMA)
    assert engine.calls[1][0].messages == messages


def test_engine_errors_are_not_retried():
    engine = ScriptedEngine({"a": [("", "error")]})
    out = generate_validated(engine, [Request(id="a")], SCHEMA)
    assert (out[0].valid, out[0].attempts, out[0].errors) == (False, 1, ["engine error: boom"])


def test_max_attempts_one_and_response_format_choices():
    own = {"type": "json_object"}
    engine = ScriptedEngine({"a": [(BAD_FORMAT, "stop")], "b": [(GOOD, "stop")]})
    policy = RetryPolicy(max_attempts=1, constrained=False)
    out = generate_validated(engine, [Request(id="a"), Request(id="b", response_format=own)],
                             SCHEMA, policy)  # fmt: skip
    assert [r.attempts for r in out] == [1, 1] and len(engine.calls) == 1
    assert engine.calls[0][0].response_format is None  # unconstrained: validation only
    assert engine.calls[0][1].response_format == own


def test_policy_and_engine_contract_checks():
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)

    class Lossy:
        def generate(self, requests):
            return []

    with pytest.raises(RuntimeError, match="0 results for 1 requests"):
        generate_validated(Lossy(), [Request(id="a")], SCHEMA)


class HeldEngine:
    """An engine double with `submit_many`: each attempt's future completes when the test says."""

    def __init__(self):
        self.sent: list[tuple[Request, Future]] = []
        self.changed = threading.Condition()

    def submit_many(self, requests):
        futures = [Future() for _ in requests]
        with self.changed:
            self.sent.extend(zip(requests, futures))
            self.changed.notify_all()
        return futures

    def wait_for(self, count: int) -> list[tuple[Request, Future]]:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.sent) >= count, timeout=30)
            return list(self.sent)

    @staticmethod
    def reply(sent: tuple[Request, Future], text: str) -> None:
        request, future = sent
        future.set_result(Result(id=request.id, text=text, finish_reason="stop"))


def test_a_retry_is_submitted_as_soon_as_its_attempt_fails_while_others_run():
    engine = HeldEngine()
    out = {}
    driver = threading.Thread(
        target=lambda: out.update(done=generate_validated(
            engine, [Request(id="a", seed=5), Request(id="b")], SCHEMA))
    )  # fmt: skip
    driver.start()
    a1, b1 = engine.wait_for(2)
    engine.reply(a1, BAD_FORMAT)
    a2 = engine.wait_for(3)[2]  # a's second attempt, while b's first is still running
    assert a2[0].id == "a" and a2[0].seed == retry_seed(Request(id="a", seed=5), 2)
    assert not b1[1].done()
    engine.reply(b1, GOOD)
    engine.reply(a2, GOOD)
    driver.join(30)
    assert [(r.id, r.valid, r.attempts) for r in out["done"]] == [("a", True, 2), ("b", True, 1)]
