"""The `flashbeam` command line: arguments, exit codes and the commands' wiring."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from flashbeam import cli


def test_beam_options_follow_a_double_dash_for_run_and_eval_only():
    split = cli._split_beam_args
    assert split(["run", "j.yaml", "--set", "a=1", "--", "--runner=X", "--y"]) == (
        ["run", "j.yaml", "--set", "a=1"],
        ["--runner=X", "--y"],
    )
    assert split(["-v", "eval", "j.yaml", "--", "--z"]) == (["-v", "eval", "j.yaml"], ["--z"])
    assert split(["bench", "kernels", "--", "--x"]) == (["bench", "kernels", "--", "--x"], [])


def test_bad_arguments_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["run", "j.yaml", "--date", "31/01/2026"])
    assert info.value.code == 2
    assert "'31/01/2026' is not a date; use YYYY-MM-DD" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        cli.main(["frobnicate"])
    assert info.value.code == 2


def test_validate_passes_beam_options_through(tmp_path, capsys, monkeypatch):
    (tmp_path / "d.jsonl").write_text('{"text": "x"}\n')
    (tmp_path / "j.yaml").write_text("name: j\ninput:\n  path: d.jsonl\n")
    monkeypatch.setenv("COLUMNS", "200")
    code = cli.main(["validate", str(tmp_path / "j.yaml"), "--skip-model-check"])
    out = capsys.readouterr().out
    assert code == 0 and "--direct_running_mode=in_memory" in out and "1 records" in out


def test_validate_lists_what_the_grammar_relaxes_and_exact_refuses(tmp_path, capsys, monkeypatch):
    (tmp_path / "d.jsonl").write_text('{"text": "x"}\n')
    schema = {"type": "object", "properties": {"a": {"type": "string", "not": {"const": "x"}}}}
    job = {"name": "j", "input": {"path": "d.jsonl"}, "task": {"schema": schema}}
    (tmp_path / "j.yaml").write_text(json.dumps(job))
    monkeypatch.setenv("COLUMNS", "200")
    code = cli.main(["validate", str(tmp_path / "j.yaml"), "--skip-model-check"])
    out = capsys.readouterr().out
    assert code == 0 and "task constraint" in out and "relaxed" in out
    assert "$.properties.a: dropped 'not'" in out
    code = cli.main(["validate", str(tmp_path / "j.yaml"), "--skip-model-check",
                     "--set", "task.constraint=exact"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "cannot be used for constrained decoding" in err


def test_bench_pipeline_prints_json(monkeypatch, capsys):
    seen = {}

    def fake(**kwargs):
        seen.update(kwargs)
        return {"benchmark": "pipeline", "grouping_speedup": 1.5}

    monkeypatch.setattr("flashbeam.pipelines.bench.bench_pipeline", fake)
    code = cli.main(["bench", "pipeline", "--documents", "3", "--questions", "2", "--threads", "1"])
    assert code == 0
    assert json.loads(capsys.readouterr().out) == {"benchmark": "pipeline", "grouping_speedup": 1.5}
    assert seen["documents"] == 3 and seen["questions"] == 2 and seen["threads"] == 1
    assert seen["doc_tokens"] == 1024 and seen["preset"] == "tiny"


def test_python_dash_m_runs_the_same_command():
    done = subprocess.run(
        [sys.executable, "-m", "flashbeam", "--help"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0
    for command in ("run", "validate", "show", "eval", "bench"):
        assert command in done.stdout
    assert "3 completed with error rows" in done.stdout
