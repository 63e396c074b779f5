import json
from pathlib import Path

import pytest

from flashbeam.model.text.chat import (
    REASONING_EFFORT_MAX,
    ChatFormatError,
    ToolCall,
    encode_messages,
    parse_completion,
)
from flashbeam.model.text.tokenizer import (
    ASSISTANT,
    BOS,
    DSML,
    EOS,
    LATEST_REMINDER,
    THINK_END,
    THINK_START,
    USER,
    train_tokenizer,
)

GOLDEN = Path(__file__).parents[1] / "data" / "official" / "encoding-tests"

SYS = {"role": "system", "content": "You are terse."}
Q1 = {"role": "user", "content": "Hello"}
A1 = {"role": "assistant", "reasoning_content": "Greet back.", "content": "Hi!"}
Q2 = {"role": "user", "content": "Capital of France?"}

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def call(name, arguments, call_id=None):
    return ToolCall(name, arguments).to_openai(call_id)


@pytest.mark.parametrize("case, thinking", [(1, True), (2, True), (3, True), (4, False)])
def test_golden_cases(case, thinking):
    given = json.loads((GOLDEN / f"test_input_{case}.json").read_text(encoding="utf-8"))
    expected = (GOLDEN / f"test_output_{case}.txt").read_text(encoding="utf-8")
    if isinstance(given, dict):
        prompt = encode_messages(given["messages"], thinking=thinking, tools=given["tools"])
    else:
        prompt = encode_messages(given, thinking=thinking)
    assert prompt == expected


def test_chat_and_thinking_generation_prompts():
    assert encode_messages([SYS, Q1]) == f"{BOS}You are terse.{USER}Hello{ASSISTANT}{THINK_END}"
    assert encode_messages([SYS, Q1], thinking=True) == (
        f"{BOS}You are terse.{USER}Hello{ASSISTANT}{THINK_START}"
    )
    assert encode_messages([Q1], add_generation_prompt=False) == f"{BOS}{USER}Hello"


def test_multi_turn_drops_earlier_reasoning():
    msgs = [SYS, Q1, A1, Q2]
    head = f"{BOS}You are terse.{USER}Hello{ASSISTANT}"
    assert encode_messages(msgs, thinking=True) == (
        f"{head}{THINK_END}Hi!{EOS}{USER}Capital of France?{ASSISTANT}{THINK_START}"
    )
    assert encode_messages(msgs, thinking=True, drop_thinking=False) == (
        f"{head}{THINK_START}Greet back.{THINK_END}Hi!{EOS}"
        f"{USER}Capital of France?{ASSISTANT}{THINK_START}"
    )
    # Chat mode never shows reasoning.
    assert encode_messages(msgs, drop_thinking=False) == (
        f"{head}{THINK_END}Hi!{EOS}{USER}Capital of France?{ASSISTANT}{THINK_END}"
    )


def test_tools_keep_all_reasoning():
    msgs = [SYS, Q1, A1, Q2]
    prompt = encode_messages(msgs, thinking=True, tools=[WEATHER_TOOL])
    assert f"{ASSISTANT}{THINK_START}Greet back.{THINK_END}Hi!{EOS}" in prompt
    assert prompt.startswith(f"{BOS}You are terse.\n\n## Tools\n\n")
    assert '{"name": "get_weather", "description": "Weather for a city"' in prompt


def test_tools_without_a_system_message():
    prompt = encode_messages([Q1], tools=[WEATHER_TOOL])
    assert prompt.startswith(f"{BOS}\n\n## Tools\n\n")
    assert prompt.endswith(f"tool calls.\n{USER}Hello{ASSISTANT}{THINK_END}")


def test_reasoning_effort_max():
    assert encode_messages([Q1], thinking=True, reasoning_effort="max") == (
        f"{BOS}{REASONING_EFFORT_MAX}{USER}Hello{ASSISTANT}{THINK_START}"
    )
    assert REASONING_EFFORT_MAX.endswith("unchecked.\n\n")
    assert encode_messages([Q1], reasoning_effort="max") == encode_messages([Q1])
    assert encode_messages([Q1], thinking=True, reasoning_effort="high") == (
        encode_messages([Q1], thinking=True)
    )
    with pytest.raises(ChatFormatError, match="reasoning_effort='extreme'"):
        encode_messages([Q1], reasoning_effort="extreme")


def test_latest_reminder_developer_and_response_format():
    msgs = [
        {"role": "system", "content": "S", "response_format": {"type": "json_object"}},
        {"role": "latest_reminder", "content": "2026-01-01"},
        {"role": "developer", "content": "D"},
    ]
    assert encode_messages(msgs) == (
        f"{BOS}S\n\n## Response Format:\n\nYou MUST strictly adhere to the following schema "
        f'to reply:\n{{"type": "json_object"}}{LATEST_REMINDER}2026-01-01{USER}D{ASSISTANT}'
        f"{THINK_END}"
    )
    # With reasoning dropped, a developer turn before the last user turn is dropped too.
    later = [*msgs, {"role": "assistant", "content": "A"}, Q2]
    assert f"{USER}D" not in encode_messages(later, thinking=True)
    assert f"{USER}D" in encode_messages(later, thinking=False)


def test_tool_results_merge_and_follow_call_order():
    msgs = [
        Q1,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [call("a", '{"x": 1}', "c1"), call("b", "{}", "c2")],
        },
        {"role": "tool", "tool_call_id": "c2", "content": "B"},
        {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "A"}]},
        {"role": "user", "content": "and?"},
    ]
    prompt = encode_messages(msgs)
    assert prompt.endswith(
        f"{USER}<tool_result>A</tool_result>\n\n<tool_result>B</tool_result>\n\nand?"
        f"{ASSISTANT}{THINK_END}"
    )
    assert (
        f"{ASSISTANT}{THINK_END}\n\n<{DSML}tool_calls>\n"
        f'<{DSML}invoke name="a">\n<{DSML}parameter name="x" string="false">1</{DSML}parameter>\n'
        f"</{DSML}invoke>\n"
        f'<{DSML}invoke name="b">\n\n</{DSML}invoke>\n'
        f"</{DSML}tool_calls>{EOS}"
    ) in prompt


def test_tool_call_arguments_forms():
    def rendered(arguments):
        msg = {"role": "assistant", "content": None, "tool_calls": [call("f", arguments)]}
        return encode_messages([Q1, msg])

    as_dict = rendered({"s": "text", "n": [1, 2], "b": True})
    assert as_dict == rendered('{"s": "text", "n": [1, 2], "b": true}')
    assert f'<{DSML}parameter name="s" string="true">text</{DSML}parameter>' in as_dict
    assert f'<{DSML}parameter name="n" string="false">[1, 2]</{DSML}parameter>' in as_dict
    assert f'<{DSML}parameter name="b" string="false">true</{DSML}parameter>' in as_dict
    # Arguments that are not a JSON object travel whole.
    assert f'name="arguments" string="true">not json</{DSML}parameter>' in rendered("not json")


def test_tasks():
    action = {"role": "user", "content": "Q", "task": "action"}
    assert encode_messages([action], thinking=True) == (
        f"{BOS}{USER}Q{ASSISTANT}{THINK_START}<｜action｜>"
    )
    query = {"role": "user", "content": "Q", "task": "query"}
    assert encode_messages([query]) == f"{BOS}{USER}Q<｜query｜>"
    titled = [Q1, {"role": "assistant", "content": "Hi", "task": "title"}]
    assert encode_messages(titled).endswith(f"Hi{EOS}<｜title｜>")
    # The answer to a task carries no reasoning block, even in thinking mode.
    answered = [action, {"role": "assistant", "content": "Search", "reasoning_content": "r"}]
    assert encode_messages(answered, thinking=True).endswith(f"<｜action｜>Search{EOS}")


@pytest.mark.parametrize(
    "messages, where",
    [
        ("hello", "non-empty list"),
        ([], "non-empty list"),
        ([Q1, "hi"], r"messages\[1\] is a str"),
        ([{"role": "bot", "content": "x"}], r"messages\[0\]: role 'bot'"),
        ([{"content": "x"}], r"messages\[0\]: role None"),
        ([SYS, {"role": "user"}], r"messages\[1\] \(user\): missing 'content'"),
        ([{"role": "system", "content": None}], r"messages\[0\] \(system\): missing"),
        ([{"role": "user", "content": 3}], r"messages\[0\] \(user\): 'content' must be"),
        ([Q1, {"role": "assistant"}], r"messages\[1\] \(assistant\): needs 'content'"),
        ([{"role": "developer", "content": ""}], r"messages\[0\] \(developer\): 'content' is"),
        ([{"role": "user", "content": "x", "tools": [WEATHER_TOOL]}], r"messages\[0\].*tools"),
        ([{"role": "system", "content": "", "tools": [{"name": "f"}]}], r"messages\[0\].*\[0\]"),
        ([Q1, {"role": "assistant", "tool_calls": [{"name": "f"}]}], r"tool_calls\[0\]"),
        ([{"role": "user", "content": "x", "task": "poem"}], r"task 'poem'"),
        ([{"role": "tool", "content": {"a": 1}}], r"messages\[0\] \(tool\)"),
    ],
)
def test_bad_messages(messages, where):
    with pytest.raises(ChatFormatError, match=where):
        encode_messages(messages)


def test_tools_given_twice():
    system = {"role": "system", "content": "S", "tools": [WEATHER_TOOL]}
    with pytest.raises(ChatFormatError, match="given both"):
        encode_messages([system, Q1], tools=[WEATHER_TOOL])


def test_parse_completion_modes():
    parsed = parse_completion(f"Simple.{THINK_END}2 + 2 = 4.{EOS}", thinking=True)
    assert (parsed.reasoning_content, parsed.content, parsed.tool_calls) == (
        "Simple.",
        "2 + 2 = 4.",
        [],
    )
    parsed = parse_completion(f"Hi there{EOS}", thinking=False)
    assert (parsed.reasoning_content, parsed.content) == (None, "Hi there")
    assert parse_completion("cut off", thinking=False).content == "cut off"
    truncated = parse_completion("still thinking", thinking=True)
    assert (truncated.reasoning_content, truncated.content) == ("still thinking", "")
    assert parse_completion(f"r{THINK_END}a{EOS}ignored", thinking=True).content == "a"


@pytest.mark.parametrize("case", [1, 3])
def test_parse_round_trips_golden_assistant_turns(case):
    given = json.loads((GOLDEN / f"test_input_{case}.json").read_text(encoding="utf-8"))
    expected = (GOLDEN / f"test_output_{case}.txt").read_text(encoding="utf-8")
    messages = given["messages"] if isinstance(given, dict) else given
    turns = [m for m in messages if m["role"] == "assistant"]
    completions = [c.split(EOS)[0] + EOS for c in expected.split(f"{ASSISTANT}{THINK_START}")[1:]]
    assert len(completions) == len(turns)
    for turn, completion in zip(turns, completions):
        parsed = parse_completion(completion, thinking=True)
        assert parsed.reasoning_content == turn["reasoning_content"]
        assert parsed.content == (turn.get("content") or "")
        want = [
            (c["function"]["name"], json.loads(c["function"]["arguments"]))
            for c in turn.get("tool_calls") or []
        ]
        assert [(c.name, json.loads(c.arguments)) for c in parsed.tool_calls] == want


def test_parse_round_trips_encoded_tool_calls():
    calls = [call("f", '{"s": "a\\nb <x>", "n": 2.5, "o": {"k": [null]}}'), call("g", "{}")]
    turn = {"role": "assistant", "reasoning_content": "plan", "content": "ok", "tool_calls": calls}
    prompt = encode_messages([Q1, turn], thinking=True)
    completion = prompt.split(f"{ASSISTANT}{THINK_START}", 1)[1]
    parsed = parse_completion(completion, thinking=True)
    assert (parsed.reasoning_content, parsed.content) == ("plan", "ok")
    assert [c.to_openai() for c in parsed.tool_calls] == calls


@pytest.mark.parametrize(
    "block, error",
    [
        (f'<{DSML}invoke name="f">\n', "expected"),
        (f'\n<{DSML}invoke name="f">\n</{DSML}invoke>\n', "cut off"),
        (
            f'\n<{DSML}invoke name="f">\n<{DSML}parameter name="n" string="false">nope'
            f"</{DSML}parameter>\n</{DSML}invoke>\n</{DSML}tool_calls>",
            "not JSON",
        ),
        (
            f'\n<{DSML}invoke name="f">\n'
            + f'<{DSML}parameter name="a" string="true">1</{DSML}parameter>\n' * 2
            + f"</{DSML}invoke>\n</{DSML}tool_calls>",
            "repeats parameter 'a'",
        ),
        (f"\n</{DSML}tool_calls>trailing", "end of the completion"),
    ],
)
def test_parse_malformed_tool_calls(block, error):
    with pytest.raises(ChatFormatError, match=error):
        parse_completion(f"answer\n\n<{DSML}tool_calls>{block}", thinking=False)


def test_prompt_tokenizes_with_one_bos():
    tok = train_tokenizer(["Hello there. Capital of France?"] * 3, vocab_size=320)
    ids = tok.encode(encode_messages([SYS, Q1, A1, Q2], thinking=True))
    assert ids[0] == tok.bos_id and ids.count(tok.bos_id) == 1
    assert ids[-2:] == [tok.assistant_id, tok.think_start_id]
    assert ids.count(tok.user_id) == 2 and ids.count(tok.eos_id) == 1
