"""`flashbeam bench schemas`: reading schema files, merged engine rounds, and a smoke run."""

import json
import threading

import pytest
import torch

from flashbeam.model.engine.request import Request, Result
from flashbeam.schemas import generate_validated
from flashbeam.schemas.bench import _RoundBatcher, main, read_schemas

KEYS = {
    "schemas", "accepted_ratio", "levels", "level_shares", "relaxed_changes",
    "mask_cost_vs_decode_token", "constrained_decode_overhead", "valid_first_attempt_ratio",
    "valid_after_retries_ratio",
    "mask_us_p50", "mask_us_p99", "constrained_vs_unconstrained", "compile_ms_p50",
    "compile_ms_p99", "compile_failures", "model", "workload",
}  # fmt: skip
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}
TAGS = {
    "type": "object",
    "properties": {
        "kind": {"enum": ["invoice", "receipt"]},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 3},
    },
    "required": ["kind", "tags"],
}
DEPENDENT = {  # llguidance does not implement "dependencies": relaxed
    "type": "object",
    "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
    "dependencies": {"a": ["b"]},
}
MISSPELLED = {"type": "strnig"}  # fails the meta-schema check


def write_jsonl(path, lines):
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    return path


def test_read_schemas_takes_records_and_bare_schemas_and_samples_evenly(tmp_path):
    records = [{"unique_id": f"r{i}", "schema": {"type": "integer"}} for i in range(10)]
    path = write_jsonl(tmp_path / "s.jsonl", [*records, PERSON])
    cases = read_schemas(path)
    assert [c.id for c in cases] == [*(f"r{i}" for i in range(10)), "s:11"]
    assert cases[-1].schema == PERSON
    assert [c.id for c in read_schemas(path, limit=4)] == ["r0", "r2", "r5", "r8"]
    write_jsonl(tmp_path / "t.jsonl", [TAGS])  # a folder reads every .jsonl in name order
    assert [c.id for c in read_schemas(tmp_path)][-2:] == ["s:11", "t:1"]


def test_read_schemas_names_bad_lines_and_paths(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"schema": {}}\n{not json\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: not a JSON line"):
        read_schemas(path)
    with pytest.raises(FileNotFoundError, match="expected a .jsonl file"):
        read_schemas(tmp_path / "missing.jsonl")


class CountingEngine:
    """Answers `{"n": 1}` to everything and records each generate call's request ids."""

    def __init__(self):
        self.calls: list[list[str]] = []

    def generate(self, requests):
        self.calls.append([r.id for r in requests])
        text = '{"n": 1}' if len(self.calls) > 1 else '{"n": "x"}'  # round 1 fails validation
        return [Result(id=r.id, text=text) for r in requests]


def test_round_batcher_merges_concurrent_callers_into_one_call_per_round():
    engine = CountingEngine()
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    batcher = _RoundBatcher(engine, callers=3)
    outcomes = {}

    def caller(i):
        try:
            outcomes[i] = generate_validated(batcher, [Request(id=f"q{i}")], schema)[0]
        finally:
            batcher.leave()

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert [sorted(call) for call in engine.calls] == [["q0", "q1", "q2"]] * 2
    assert all(outcomes[i].valid and outcomes[i].attempts == 2 for i in range(3))


def test_bench_schemas_smoke(tmp_path, capsys):
    path = write_jsonl(
        tmp_path / "mini.jsonl",
        [
            {"unique_id": "person", "schema": PERSON},
            {"unique_id": "tags", "schema": TAGS},
            {"unique_id": "dependent", "schema": DEPENDENT},
            {"unique_id": "misspelled", "schema": MISSPELLED},
        ],
    )
    threads = torch.get_num_threads()
    try:
        argv = [str(path), "--threads", "1", "--batch", "4", "--min-max-tokens", "32"]
        assert main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    out = json.loads(capsys.readouterr().out)  # exactly one JSON object on stdout

    assert out.keys() >= KEYS
    assert (out["schemas"], out["accepted"], out["accepted_ratio"]) == (4, 3, 0.75)
    assert out["levels"] == {"exact": 2, "relaxed": 1, "none": 0}
    assert out["relaxed_changes"] == {"dropped 'dependencies'": 1}
    failures = out["compile_failures"]
    assert sum(failures.values()) == 1
    assert any(k.startswith("invalid_schema") and "strnig" in k for k in failures)
    first, after = out["valid_first_attempt_ratio"], out["valid_after_retries_ratio"]
    assert 0 <= first <= after <= 1
    assert out["valid_after_retries_by_level"]["exact"] == 1.0  # grammar + budget steering
    assert sum(out["valid_at_attempt"].values()) == round(after * 3)
    assert 0 < out["compile_ms_p50"] <= out["compile_ms_p99"]
    assert 0 < out["mask_us_p50"] <= out["mask_us_p99"] and out["mask_tokens"] > 0
    assert out["mask_replay_rejected_tokens"] == 0
    assert out["constrained_vs_unconstrained"] > 0 and out["throughput_errors"] == 0
    assert out["mask_cost_vs_decode_token"] > 0
    assert out["workload"]["torch_threads"] == 1 and out["workload"]["batch"] == 4
