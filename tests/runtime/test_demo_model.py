"""The offline ``demo`` model and the demo tools (SPEC §2.8)."""

from __future__ import annotations

import datetime
import time

import anyio
import pytest

from steerline import (
    Agent,
    AssistantMessage,
    DemoModel,
    TextContent,
    ToolContext,
    ToolError,
    ToolResultMessage,
    demo_agent,
    demo_tools,
)
from steerline.tools import FunctionTool, calculator, clock, echo, sleep

from .helpers import Recorder

pytestmark = pytest.mark.anyio


def _agent() -> tuple[Agent, Recorder]:
    agent = Agent(model=DemoModel(), tools=demo_tools())
    return agent, Recorder(agent)


def _assistants(agent: Agent) -> list[AssistantMessage]:
    return [m for m in agent.messages if isinstance(m, AssistantMessage)]


def _results(agent: Agent) -> list[ToolResultMessage]:
    return [m for m in agent.messages if isinstance(m, ToolResultMessage)]


async def test_plain_text_is_echoed_token_by_token() -> None:
    agent, rec = _agent()
    result = await agent.prompt("  hello there  ")
    assert result.stop_reason == "completed"
    (reply,) = _assistants(agent)
    assert reply.text == "Echo: hello there"
    assert reply.stop_reason == "stop"
    deltas = [e.delta.delta for e in rec.of_type("message_update") if e.delta.kind == "text_delta"]
    assert deltas == ["Echo:", " hello", " there"]


async def test_several_call_lines_make_several_calls_then_results() -> None:
    agent, rec = _agent()
    result = await agent.prompt(
        'please\n/call echo {"text": "hi"}\n/call calculator {"expression": "2 * (3 + 4)"}'
    )
    assert result.stop_reason == "completed"
    first, second = _assistants(agent)
    assert first.text == "Echo: please"
    assert [(c.name, c.arguments) for c in first.tool_calls] == [
        ("echo", {"text": "hi"}),
        ("calculator", {"expression": "2 * (3 + 4)"}),
    ]
    assert first.stop_reason == "tool_use"
    assert [r.text for r in _results(agent)] == ["hi", "14"]
    assert second.text == "Results: echo=hi; calculator=14"
    assert second.tool_calls == []
    assert [m.role for m in agent.messages] == [
        "user",
        "assistant",
        "tool_result",
        "tool_result",
        "assistant",
    ]
    assert len(rec.of_type("tool_execution_end")) == 2


async def test_only_directives_gives_no_text_part() -> None:
    agent, _ = _agent()
    await agent.prompt("/call clock {}")
    first = _assistants(agent)[0]
    assert not any(isinstance(part, TextContent) for part in first.content)
    assert [c.name for c in first.tool_calls] == ["clock"]
    assert _assistants(agent)[1].text.startswith("Results: clock=")


async def test_think_streams_reasoning_first() -> None:
    agent, rec = _agent()
    await agent.prompt("/think pondering deeply\nanswer me")
    (reply,) = _assistants(agent)
    assert (reply.thinking, reply.text) == ("pondering deeply", "Echo: answer me")
    kinds = [e.delta.kind for e in rec.of_type("message_update")]
    assert kinds[0] == "thinking_start"
    assert kinds.index("thinking_end") < kinds.index("text_start")


async def test_directives_apply_to_every_call_until_the_next_user_message() -> None:
    agent, _ = _agent()
    await agent.prompt('/think hmm\n/call echo {"text": "x"}')
    first, second = _assistants(agent)
    assert first.thinking == "hmm" and second.thinking == "hmm"
    assert second.text == "Results: echo=x"
    await agent.prompt("plain")
    third = _assistants(agent)[2]
    assert third.thinking == "" and third.text == "Echo: plain"


async def test_delay_paces_the_tokens() -> None:
    agent, _ = _agent()
    started = time.perf_counter()
    await agent.prompt("/delay 30\na b c d")  # "Echo:", " a", " b", " c", " d"
    elapsed = time.perf_counter() - started
    assert elapsed >= 5 * 0.03 * 0.9
    assert _assistants(agent)[0].text == "Echo: a b c d"
    started = time.perf_counter()
    await agent.prompt("a b c d")  # the default delay is 0
    assert time.perf_counter() - started < 0.1


async def test_invalid_json_in_a_call_is_an_invalid_arguments_result_and_the_run_goes_on() -> None:
    agent, _rec = _agent()
    result = await agent.prompt('/call echo {"text": oops}\n/call echo {"text": "fine"}')
    assert result.stop_reason == "completed"
    bad, good = _results(agent)
    assert bad.is_error and bad.text.startswith(
        "Invalid arguments for echo: arguments are not valid JSON"
    )
    assert (good.is_error, good.text) == (False, "fine")
    last = _assistants(agent)[-1]
    assert last.text.startswith("Results: echo=Invalid arguments for echo")
    assert last.text.endswith("; echo=fine")


async def test_demo_model_can_be_steered_while_it_types() -> None:
    agent, rec = _agent()
    agent.steering_policy = "immediate"
    async with anyio.create_task_group() as group:
        group.start_soon(agent.prompt, "/delay 20\n" + " ".join(["word"] * 200))
        await rec.wait(lambda e: e.type == "message_update" and e.delta.kind == "text_delta")
        agent.steer("stop typing")
        await rec.wait_type("agent_end")
    first, second = _assistants(agent)
    assert first.stop_reason == "steered"
    assert second.text == "Echo: stop typing"


async def test_demo_agent_factory() -> None:
    agent = demo_agent(steering_policy="after_turn")
    assert isinstance(agent.model, DemoModel)
    assert {t.spec.name for t in agent.tools} == {"sleep", "clock", "calculator", "echo"}
    assert agent.steering_policy == "after_turn"


# -- the demo tools, called directly -------------------------------------------


async def _call(t: FunctionTool, **arguments: object) -> str:
    context = ToolContext(tool_call_id="call-test", tool_name=t.name)
    return await t.execute(t.validate(dict(arguments)), context)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("2 * (3 + 4)", "14"),
        ("7 / 2", "3.5"),
        ("7 // 2", "3"),
        ("-3 ** 2", "-9"),
        ("2 ** 10", "1024"),
        ("sqrt(16) + abs(-1)", "5"),
        ("10 % 3", "1"),
    ],
)
async def test_calculator_evaluates_arithmetic(expression: str, expected: str) -> None:
    assert await _call(calculator, expression=expression) == expected


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os')",
        "__import__('os').system('true')",
        "os",
        "x + 1",
        "open('/etc/passwd')",
        "(1).__class__",
        "[1, 2]",
        "'a' * 3",
        "lambda: 1",
        "sqrt(x=4)",
        "10 ** 100000",
        "9 ** 9 ** 9",
        "10 ** 99 * 10 ** 99",
        "1 / 0",
        "2 +",
        "1" * 2000,
    ],
)
async def test_calculator_rejects_unsafe_or_huge_expressions(expression: str) -> None:
    started = time.perf_counter()
    with pytest.raises(ToolError):
        await _call(calculator, expression=expression)
    assert time.perf_counter() - started < 1


async def test_calculator_error_reaches_the_model_as_an_error_result() -> None:
    agent, _ = _agent()
    await agent.prompt('/call calculator {"expression": "__import__(\'os\')"}')
    (result,) = _results(agent)
    assert result.is_error
    assert "unsupported" in result.text


async def test_clock_returns_utc_iso_time() -> None:
    text = await _call(clock)
    moment = datetime.datetime.fromisoformat(text)
    assert moment.utcoffset() == datetime.timedelta(0)
    now = datetime.datetime.now(datetime.UTC)
    assert abs((now - moment).total_seconds()) < 5


async def test_echo_returns_its_text() -> None:
    assert await _call(echo, text="same  text ") == "same  text "


async def test_sleep_waits_and_validates() -> None:
    assert await _call(sleep, seconds=0.01) == "slept 0.01s"
    assert await _call(sleep, seconds=0) == "slept 0s"
    with pytest.raises(ToolError, match="between 0 and"):
        await _call(sleep, seconds=-1)
    with pytest.raises(ToolError, match="between 0 and"):
        await _call(sleep, seconds=10_000)
    with pytest.raises(ToolError, match="seconds"):
        sleep.validate({"seconds": "long"})


async def test_sleep_is_cancellable() -> None:
    with anyio.move_on_after(0.05) as scope:
        await _call(sleep, seconds=30)
    assert scope.cancelled_caught
