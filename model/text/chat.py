"""The DeepSeek-V4 chat format: messages -> prompt string, and a completion back into parts.

Our implementation of the official V4 encoding (`encoding_dsv4`); the official golden cases are
checked in tests/model/test_chat.py. The format in brief:

    BOS [effort prefix] system [## Tools] [<｜latest_reminder｜>text]
    <｜User｜>question<｜Assistant｜><think>reasoning</think>answer<｜end▁of▁sentence｜> ...
    <｜User｜>question<｜Assistant｜><think>          (thinking mode; chat mode ends in </think>)

Tool results become `<tool_result>…</tool_result>` inside a user turn; tool calls are written
in DSML after the answer. In thinking mode, reasoning of turns before the last user turn is
dropped (`drop_thinking`) unless the conversation defines tools.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flashbeam.model.text.tokenizer import (
    ASSISTANT,
    BOS,
    DSML,
    EOS,
    LATEST_REMINDER,
    TASK_TOKENS,
    THINK_END,
    THINK_START,
    USER,
)

ROLES = ("system", "developer", "user", "assistant", "tool", "latest_reminder")
REASONING_EFFORTS = ("low", "medium", "high", "xhigh", "max")  # only "max" changes the prompt

REASONING_EFFORT_MAX = (
    "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
    "You MUST be very thorough in your thinking and comprehensively decompose the problem to "
    "resolve the root cause, rigorously stress-testing your logic against all potential paths, "
    "edge cases, and adversarial scenarios.\n"
    "Explicitly write out your entire deliberation process, documenting every intermediate "
    "step, considered alternative, and rejected hypothesis to ensure absolutely no assumption "
    "is left unchecked.\n\n"
)

TOOLS_TEMPLATE = f"""## Tools

You have access to a set of tools to help answer the user's question. \
You can invoke tools by writing a "<{DSML}tool_calls>" block like the following:

<{DSML}tool_calls>
<{DSML}invoke name="$TOOL_NAME">
<{DSML}parameter name="$PARAMETER_NAME" string="true|false">$PARAMETER_VALUE</{DSML}parameter>
...
</{DSML}invoke>
<{DSML}invoke name="$TOOL_NAME2">
...
</{DSML}invoke>
</{DSML}tool_calls>

String parameters should be specified as is and set `string="true"`. For all other types \
(numbers, booleans, arrays, objects), pass the value in JSON format and set `string="false"`.

If thinking_mode is enabled (triggered by {THINK_START}), you MUST output your complete \
reasoning inside {THINK_START}...{THINK_END} BEFORE any tool calls or final response.

Otherwise, output directly after {THINK_END} with tool calls or final response.

### Available Tool Schemas

{{schemas}}

You MUST strictly follow the above defined tool name and parameter schemas to invoke tool calls.
"""

RESPONSE_FORMAT_TEMPLATE = (
    "## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n{schema}"
)

TOOL_CALLS_START = f"\n\n<{DSML}tool_calls>"


class ChatFormatError(ValueError):
    """Messages that the V4 chat format cannot encode, or a completion it cannot parse."""


@dataclass
class ToolCall:
    name: str
    arguments: str  # a JSON object, as in the OpenAI API

    def to_openai(self, call_id: str | None = None) -> dict[str, Any]:
        call: dict[str, Any] = {
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }
        return {"id": call_id, **call} if call_id is not None else call


@dataclass
class ParsedCompletion:
    reasoning_content: str | None
    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)


@dataclass
class _Turn:
    """One rendered turn; `tool` messages are already merged into user turns."""

    role: str
    content: str = ""
    parts: list[str] = field(default_factory=list)  # user turn: text and <tool_result> parts
    result_ids: list[str | None] = field(default_factory=list)  # per part; None for user text
    reasoning: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    call_ids: list[str | None] = field(default_factory=list)
    tools: list[dict[str, Any]] = field(default_factory=list)
    response_format: Any = None
    task: str | None = None


# ---- encoding ---------------------------------------------------------------------------


def encode_messages(
    messages: Sequence[Mapping[str, Any]],
    thinking: bool = False,
    drop_thinking: bool = True,
    add_generation_prompt: bool = True,
    tools: Sequence[Mapping[str, Any]] | None = None,
    reasoning_effort: str | None = None,
) -> str:
    """The V4 prompt string for OpenAI-style `messages` (BOS included; encode it without BOS).

    `tools` (OpenAI format) are attached to the leading system message (one with empty text is
    added if there is none). A conversation that ends with a user, developer or tool turn ends
    with the generation prompt `<｜Assistant｜><think>` (thinking) or `<｜Assistant｜></think>`
    unless `add_generation_prompt` is false; one that ends with an assistant turn ends in EOS.
    """
    if reasoning_effort is not None and reasoning_effort not in REASONING_EFFORTS:
        raise ChatFormatError(
            f"reasoning_effort={reasoning_effort!r} is not supported; use one of "
            f"{', '.join(REASONING_EFFORTS)} or None"
        )
    turns = _to_turns(messages, tools)
    drop = drop_thinking and not any(t.tools for t in turns)
    if thinking and drop:
        last_user = _last_user_index(turns)
        # Earlier developer turns only steered earlier answers; the official encoder drops them.
        turns = [t for i, t in enumerate(turns) if t.role != "developer" or i >= last_user]
    last_user = _last_user_index(turns)

    prompt = BOS
    if thinking and reasoning_effort == "max":
        prompt += REASONING_EFFORT_MAX
    for i, turn in enumerate(turns):
        prev_task = turns[i - 1].task if i > 0 else None
        keep_reasoning = thinking and prev_task is None and (not drop or i > last_user)
        prompt += _render_turn(turn, keep_reasoning)
        if i + 1 < len(turns):
            # As in the official encoder, a reminder right after a user turn follows its prefix.
            if turns[i + 1].role not in ("assistant", "latest_reminder"):
                continue
        elif not add_generation_prompt:
            continue
        opens_thinking = thinking and (not drop or i >= last_user)
        prompt += _assistant_prefix(turn, thinking, opens_thinking)
    return prompt


def _render_turn(turn: _Turn, keep_reasoning: bool) -> str:
    if turn.role == "system":
        return turn.content + _tools_and_format(turn)
    if turn.role == "developer":
        return USER + turn.content + _tools_and_format(turn)
    if turn.role == "user":
        return USER + "\n\n".join(turn.parts)
    if turn.role == "latest_reminder":
        return LATEST_REMINDER + turn.content
    reasoning = turn.reasoning + THINK_END if keep_reasoning else ""
    calls = _render_tool_calls(turn.tool_calls) if turn.tool_calls else ""
    return reasoning + turn.content + calls + EOS


def _assistant_prefix(turn: _Turn, thinking: bool, opens_thinking: bool) -> str:
    """What follows a turn that the next assistant turn answers (or the generation prompt)."""
    if turn.task == "action":
        return ASSISTANT + (THINK_START if thinking else THINK_END) + TASK_TOKENS["action"]
    if turn.task is not None:
        return TASK_TOKENS[turn.task]
    if turn.role in ("user", "developer"):
        return ASSISTANT + (THINK_START if opens_thinking else THINK_END)
    return ""


def _tools_and_format(turn: _Turn) -> str:
    text = ""
    if turn.tools:
        schemas = "\n".join(_to_json(t["function"]) for t in turn.tools)
        text += "\n\n" + TOOLS_TEMPLATE.format(schemas=schemas)
    if turn.response_format:
        text += "\n\n" + RESPONSE_FORMAT_TEMPLATE.format(schema=_to_json(turn.response_format))
    return text


def _render_tool_calls(calls: list[ToolCall]) -> str:
    invokes = []
    for call in calls:
        params = []
        for key, value in _arguments_dict(call.arguments).items():
            # Strings go in as is; every other value as JSON.
            is_string = isinstance(value, str)
            params.append(
                f'<{DSML}parameter name="{key}" string="{str(is_string).lower()}">'
                f"{value if is_string else _to_json(value)}</{DSML}parameter>"
            )
        invokes.append(
            f'<{DSML}invoke name="{call.name}">\n' + "\n".join(params) + f"\n</{DSML}invoke>"
        )
    return f"{TOOL_CALLS_START}\n" + "\n".join(invokes) + f"\n</{DSML}tool_calls>"


def _arguments_dict(arguments: str) -> dict[str, Any]:
    try:
        parsed = json.loads(arguments)
    except json.JSONDecodeError:
        parsed = None
    # Arguments that are not a JSON object travel whole, as the official encoder does.
    return parsed if isinstance(parsed, dict) else {"arguments": arguments}


def _to_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _last_user_index(turns: list[_Turn]) -> int:
    return max((i for i, t in enumerate(turns) if t.role in ("user", "developer")), default=-1)


# ---- validation and normalisation -------------------------------------------------------


def _to_turns(
    messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None
) -> list[_Turn]:
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
        raise ChatFormatError("messages must be a non-empty list of {'role': ..., ...} dicts")
    turns: list[_Turn] = []
    for index, msg in enumerate(messages):
        if not isinstance(msg, Mapping):
            raise ChatFormatError(f"messages[{index}] is a {type(msg).__name__}, not a dict")
        role = msg.get("role")
        if role not in ROLES:
            raise ChatFormatError(
                f"messages[{index}]: role {role!r} is not supported; use one of {', '.join(ROLES)}"
            )
        for key in ("tools", "response_format"):
            if msg.get(key) and role not in ("system", "developer"):
                raise ChatFormatError(
                    f"messages[{index}] ({role}): {key!r} belongs on a system or developer message"
                )
        if role in ("user", "tool"):
            _merge_user_part(turns, msg, index)
        else:
            turns.append(_plain_turn(msg, index))
    if tools:
        _attach_tools(turns, tools)
    _order_tool_results(turns)
    return turns


def _plain_turn(msg: Mapping[str, Any], index: int) -> _Turn:
    role = msg["role"]
    where = f"messages[{index}] ({role})"
    task = _task(msg, where)
    if role == "assistant":
        raw_calls = msg.get("tool_calls") or []
        if msg.get("content") is None and not raw_calls and not msg.get("reasoning_content"):
            raise ChatFormatError(f"{where}: needs 'content' (the answer text) or 'tool_calls'")
        calls = [_tool_call(c, f"{where}.tool_calls[{k}]") for k, c in enumerate(raw_calls)]
        return _Turn(
            role,
            content=_text(msg.get("content") or "", where),
            reasoning=_text(msg.get("reasoning_content") or "", where),
            tool_calls=calls,
            call_ids=[c.get("id") if isinstance(c, Mapping) else None for c in raw_calls],
            task=task,
        )
    content = _required_text(msg, where)
    if role == "developer" and not content:
        raise ChatFormatError(f"{where}: 'content' is empty; a developer turn needs text")
    msg_tools = msg.get("tools") or []
    _check_tools(msg_tools, f"{where}: tools")
    return _Turn(
        role,
        content=content,
        tools=list(msg_tools),
        response_format=msg.get("response_format"),
        task=task,
    )


def _merge_user_part(turns: list[_Turn], msg: Mapping[str, Any], index: int) -> None:
    """A tool result or user text joins the preceding user turn, or starts a new one."""
    role = msg["role"]
    where = f"messages[{index}] ({role})"
    text = _required_text(msg, where)
    task = _task(msg, where)
    prev = turns[-1] if turns and turns[-1].role == "user" else None
    if role == "tool":
        part, result_id = f"<tool_result>{text}</tool_result>", str(msg.get("tool_call_id") or "")
    else:
        part, result_id = text, None
        if prev is not None and prev.task is not None:
            prev = None  # a task turn is complete; the next user text starts a new turn
    if prev is None:
        prev = _Turn("user")
        turns.append(prev)
    prev.parts.append(part)
    prev.result_ids.append(result_id)
    prev.task = task or prev.task


def _order_tool_results(turns: list[_Turn]) -> None:
    """Sort a turn's tool results into the order of the calls that asked for them."""
    order: dict[str, int] = {}
    for turn in turns:
        if turn.role == "assistant" and turn.tool_calls:
            order = {cid: k for k, cid in enumerate(turn.call_ids) if cid}
        elif turn.role == "user" and order:
            slots = [k for k, rid in enumerate(turn.result_ids) if rid is not None]
            ranked = sorted(slots, key=lambda k: order.get(turn.result_ids[k], 0))
            parts = [turn.parts[k] for k in ranked]
            for slot, part in zip(slots, parts):
                turn.parts[slot] = part


def _attach_tools(turns: list[_Turn], tools: Sequence[Mapping[str, Any]]) -> None:
    _check_tools(tools, "tools")
    if not turns or turns[0].role != "system":
        turns.insert(0, _Turn("system"))
    if turns[0].tools:
        raise ChatFormatError(
            "tools are given both as an argument and on messages[0]; give them once"
        )
    turns[0].tools = list(tools)


def _check_tools(tools: Any, where: str) -> None:
    if not isinstance(tools, Sequence):
        raise ChatFormatError(f"{where} must be a list of OpenAI function tools")
    for k, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise ChatFormatError(
                f"{where}[{k}]: a tool is {{'type': 'function', 'function': {{'name': ..., "
                f"'description': ..., 'parameters': {{...}}}}}}"
            )


def _tool_call(call: Any, where: str) -> ToolCall:
    function = call.get("function") if isinstance(call, Mapping) else None
    if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
        raise ChatFormatError(
            f"{where}: a tool call is {{'type': 'function', 'function': {{'name': ..., "
            f"'arguments': '<JSON object>'}}}}"
        )
    arguments = function.get("arguments", "{}")
    if isinstance(arguments, Mapping):
        arguments = _to_json(dict(arguments))
    if not isinstance(arguments, str):
        raise ChatFormatError(f"{where}: 'arguments' must be a JSON string or a dict")
    return ToolCall(function["name"], arguments)


def _task(msg: Mapping[str, Any], where: str) -> str | None:
    task = msg.get("task")
    if task is not None and task not in TASK_TOKENS:
        raise ChatFormatError(
            f"{where}: task {task!r} is not supported; use one of {', '.join(TASK_TOKENS)}"
        )
    return task


def _required_text(msg: Mapping[str, Any], where: str) -> str:
    if msg.get("content") is None:
        raise ChatFormatError(f"{where}: missing 'content'; give the message text as a string")
    return _text(msg["content"], where)


def _text(content: Any, where: str) -> str:
    """Message text: a string, or a list of {'type': 'text', 'text': ...} parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, Mapping) and p.get("type") == "text" and isinstance(p.get("text"), str)
        for p in content
    ):
        return "\n\n".join(p["text"] for p in content)
    raise ChatFormatError(
        f"{where}: 'content' must be a string or a list of {{'type': 'text', 'text': ...}} parts"
    )


# ---- parsing a completion ---------------------------------------------------------------

_INVOKE = re.compile(rf'<{DSML}invoke name="([^"]*)">\n')
_PARAM = re.compile(
    rf'<{DSML}parameter name="([^"]*)" string="(true|false)">(.*?)</{DSML}parameter>\n',
    re.DOTALL,
)
_INVOKE_END = f"</{DSML}invoke>\n"
_CALLS_END = f"</{DSML}tool_calls>"


def parse_completion(text: str, thinking: bool) -> ParsedCompletion:
    """Split generated text (what follows the generation prompt) into its parts.

    In thinking mode the reasoning runs up to `</think>`; text cut off before `</think>` is all
    reasoning. The completion ends at the first EOS; a DSML tool-call block after the answer
    becomes `tool_calls` (a malformed block raises ChatFormatError).
    """
    text = text.partition(EOS)[0]
    reasoning = None
    if thinking:
        reasoning, sep, text = text.partition(THINK_END)
        if not sep:
            return ParsedCompletion(reasoning_content=reasoning, content="")
    content, sep, calls = text.partition(TOOL_CALLS_START)
    tool_calls = _parse_tool_calls(calls) if sep else []
    return ParsedCompletion(reasoning_content=reasoning, content=content, tool_calls=tool_calls)


def _parse_tool_calls(block: str) -> list[ToolCall]:
    """Parse the DSML block after `<｜DSML｜tool_calls>` up to and including its end tag."""
    pos = _expect(block, 0, "\n")
    calls = []
    while not block.startswith(_CALLS_END, pos):
        invoke = _INVOKE.match(block, pos)
        if invoke is None:
            raise _malformed(block, pos, f'<{DSML}invoke name="...">')
        pos = invoke.end()
        if block.startswith("\n", pos):  # a call without parameters leaves an empty line
            pos += 1
        arguments: dict[str, Any] = {}
        while (param := _PARAM.match(block, pos)) is not None:
            name, is_string, value = param.groups()
            if name in arguments:
                raise ChatFormatError(f"tool call {invoke[1]!r} repeats parameter {name!r}")
            arguments[name] = value if is_string == "true" else _json_value(value, name)
            pos = param.end()
        pos = _expect(block, pos, _INVOKE_END)
        calls.append(ToolCall(invoke[1], _to_json(arguments)))
    if block[pos + len(_CALLS_END) :].strip():
        raise _malformed(block, pos + len(_CALLS_END), "the end of the completion")
    return calls


def _expect(block: str, pos: int, literal: str) -> int:
    if not block.startswith(literal, pos):
        raise _malformed(block, pos, repr(literal))
    return pos + len(literal)


def _json_value(value: str, name: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        raise ChatFormatError(
            f'tool-call parameter {name!r} is marked string="false" but {value!r} is not JSON'
        ) from None


def _malformed(block: str, pos: int, wanted: str) -> ChatFormatError:
    return ChatFormatError(
        f"malformed DSML tool_calls block: expected {wanted} at {block[pos : pos + 40]!r} "
        f"(the completion may have been cut off by max_tokens)"
    )
