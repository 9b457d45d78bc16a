"""How hard a steer interrupts: ``after_tool``, ``immediate``, ``after_turn`` (SPEC §2.4)."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from steerline import (
    Agent,
    AssistantMessage,
    ScriptedModel,
    ScriptedReply,
    ToolResultMessage,
    UserMessage,
)
from steerline.models import StreamEnd, TextPart, ToolCallEndPart, ToolCallPart
from steerline.tools import echo, sleep

from .helpers import CANCELLED, SKIPPED, TIMEOUT, Gates, Recorder, Runner, is_text_delta

pytestmark = pytest.mark.anyio

THREE_CALLS = ScriptedReply(text="working", tool_calls=[("a", {}), ("b", {}), ("c", {})])
LONG_TEXT = " ".join(f"word{i}" for i in range(200))


def _three_tool_agent(**settings: Any) -> tuple[Agent, ScriptedModel, Gates, Recorder]:
    gates = Gates()
    model = ScriptedModel([THREE_CALLS, ScriptedReply(text="steered answer")])
    agent = Agent(
        model=model, tools=[gates.tool("a"), gates.tool("b"), gates.tool("c")], **settings
    )
    return agent, model, gates, Recorder(agent)


def _assert_steer_next(agent: Agent, model: ScriptedModel, steer_text: str, calls: int) -> None:
    """After the three tool results: the steer, then the model saw it."""
    roles = [m.role for m in agent.messages]
    assert roles == ["user", "assistant", *["tool_result"] * 3, "user", "assistant"]
    steer = agent.messages[5]
    assert isinstance(steer, UserMessage)
    assert (steer.text, steer.delivery) == (steer_text, "steer")
    assert len(model.streams) == calls
    assert model.requests[-1].messages[-1] == steer
    assert not agent.has_queued_messages()


def _results(agent: Agent) -> dict[str, ToolResultMessage]:
    return {m.tool_name: m for m in agent.messages if isinstance(m, ToolResultMessage)}


def _assert_turn_boundary(rec: Recorder) -> None:
    """The last tool result ends the turn; the next turn starts with the steer."""
    types = rec.types(collapse_updates=True)
    i = types.index("turn_end")
    assert types[i - 2 : i + 4] == [
        "message_start",  # last tool result
        "message_end",
        "turn_end",
        "turn_start",
        "message_start",  # the steer
        "message_end",
    ]
    steer_start = [e for e in rec.events if e.type == "message_start"][5]
    assert steer_start.message.role == "user"


@pytest.mark.parametrize("settings", [{"tool_execution": "sequential"}, {}], ids=str)
async def test_after_tool_sequential_steer_skips_the_remaining_calls(
    settings: dict[str, Any],
) -> None:
    """Default policy is after_tool; also the default when not given."""
    agent, model, gates, rec = _three_tool_agent(**settings)
    if not settings:
        agent.tool_execution = "sequential"
    assert agent.steering_policy == "after_tool"
    async with anyio.create_task_group() as group:
        runner = Runner(agent, group)
        runner.prompt("do three things")
        await gates.wait_started("a")
        agent.steer("change of plan")
        assert not gates["a"].cancelled
        gates.release("a")
        result = await runner.wait()

    assert result.stop_reason == "completed"
    assert gates["a"].finished
    assert not gates["b"].started.is_set() and not gates["c"].started.is_set()
    ends = rec.tool_ends()
    assert (ends["a"].result, ends["a"].is_error, ends["a"].skipped) == ("done a", False, False)
    for name in ("b", "c"):
        assert (ends[name].result, ends[name].is_error, ends[name].skipped) == (
            SKIPPED,
            True,
            True,
        )
    starts = [e.tool_name for e in rec.of_type("tool_execution_start")]
    assert starts == ["a", "b", "c"]
    results = _results(agent)
    assert [results[n].text for n in "abc"] == ["done a", SKIPPED, SKIPPED]
    assert results["b"].skipped and results["b"].is_error
    _assert_steer_next(agent, model, "change of plan", calls=2)
    _assert_turn_boundary(rec)


@pytest.mark.parametrize("cap", [1, 2])
async def test_after_tool_parallel_with_cap_skips_only_unstarted_calls(cap: int) -> None:
    agent, model, gates, rec = _three_tool_agent(max_parallel_tools=cap)
    assert agent.tool_execution == "parallel"
    running = "ab"[:cap]
    async with anyio.create_task_group() as group:
        runner = Runner(agent, group)
        runner.prompt("do three things")
        await gates.wait_started(*running)
        await anyio.wait_all_tasks_blocked()
        assert not gates["c"].started.is_set()  # waiting behind the cap
        agent.steer("stop that")
        gates.release(*running)
        await runner.wait()

    ends = rec.tool_ends()
    for name in running:
        assert gates[name].finished
        assert (ends[name].result, ends[name].skipped) == (f"done {name}", False)
    for name in "abc"[cap:]:
        assert not gates[name].started.is_set()
        assert (ends[name].result, ends[name].skipped, ends[name].is_error) == (
            SKIPPED,
            True,
            True,
        )
    _assert_steer_next(agent, model, "stop that", calls=2)


async def test_after_tool_parallel_without_cap_skips_nothing_already_started() -> None:
    agent, model, gates, rec = _three_tool_agent()
    async with anyio.create_task_group() as group:
        runner = Runner(agent, group)
        runner.prompt("do three things")
        await gates.wait_started("a", "b", "c")
        agent.steer("stop that")
        # results are appended in call order whatever the finishing order
        gates.release("c")
        await rec.wait_type("tool_execution_end", tool_name="c")
        gates.release("b")
        await rec.wait_type("tool_execution_end", tool_name="b")
        gates.release("a")
        await runner.wait()

    assert [e.tool_name for e in rec.of_type("tool_execution_end")] == ["c", "b", "a"]
    assert [m.tool_name for m in agent.messages if isinstance(m, ToolResultMessage)] == [
        "a",
        "b",
        "c",
    ]
    for name in "abc":
        assert gates[name].finished and not gates[name].cancelled
        assert rec.tool_ends()[name].result == f"done {name}"
    _assert_steer_next(agent, model, "stop that", calls=2)


async def test_after_tool_steer_while_streaming_lets_the_stream_finish() -> None:
    model = ScriptedModel([ScriptedReply(text="one two three four five six"), "second"])
    agent = Agent(model=model)
    rec = Recorder(agent)
    async with anyio.create_task_group() as group:
        runner = Runner(agent, group)
        runner.prompt("hi")
        await rec.wait(is_text_delta)
        agent.steer("btw")
        await runner.wait()
    first = agent.messages[1]
    assert isinstance(first, AssistantMessage)
    assert (first.text, first.stop_reason) == ("one two three four five six", "stop")
    assert model.streams[0].completed
    assert [m.role for m in agent.messages] == ["user", "assistant", "user", "assistant"]
    assert agent.messages[2].text == "btw"


async def test_immediate_steer_cancels_the_stream_within_50ms() -> None:
    model = ScriptedModel(
        [ScriptedReply(text=LONG_TEXT), ScriptedReply(text="ok, switching")], token_delay=0.05
    )
    agent = Agent(model=model, steering_policy="immediate")
    rec = Recorder(agent)
    async with anyio.create_task_group() as group:
        runner = Runner(agent, group)
        runner.prompt("write a lot")
        await rec.wait(lambda e: is_text_delta(e) and e.delta.content_index == 0)
        await rec.wait(lambda e: is_text_delta(e) and e.delta.delta == " word1")
        steered_at = time.perf_counter()
        agent.steer("stop, do something else")
        await rec.wait(
            lambda e: e.type == "message_end" and e.message.role == "assistant", within=1
        )
        closed_at = model.streams[0].closed_at
        assert closed_at is not None
        assert closed_at - steered_at < 0.05
        # the next stream must not be the slow one
        model.token_delay = 0
        result = await runner.wait()

    assert result.stop_reason == "completed"
    cut = agent.messages[1]
    assert isinstance(cut, AssistantMessage)
    assert cut.stop_reason == "steered"
    assert cut.text.startswith("word0 word1")
    assert len(cut.text) < len(LONG_TEXT)
    assert LONG_TEXT.startswith(cut.text)
    assert not model.streams[0].completed
    # the steered message's end event carries the partial text
    ends = [e for e in rec.of_type("message_end") if e.message.role == "assistant"]
    assert ends[0].message.stop_reason == "steered" and ends[0].message.text == cut.text
    # steer delivered in the next turn, then the model answered it
    assert [m.role for m in agent.messages] == ["user", "assistant", "user", "assistant"]
    steer = agent.messages[2]
    assert isinstance(steer, UserMessage) and steer.delivery == "steer"
    assert model.requests[1].messages[-1] == steer
    assert agent.messages[3].text == "ok, switching"
    assert rec.types().count("turn_start") == 2


async def test_immediate_steer_keeps_finished_calls_as_skipped_and_drops_a_streaming_one() -> None:
    parts = [
        TextPart("calling"),
        ToolCallPart(index=0, id="call-done", name="echo"),
        ToolCallPart(index=0, arguments='{"text": "x"}'),
        ToolCallEndPart(0),
        ToolCallPart(index=1, id="call-partial", name="echo"),
        ToolCallPart(index=1, arguments='{"te'),
        *[TextPart(" more") for _ in range(200)],
        StreamEnd("tool_use"),
    ]
    model = ScriptedModel([ScriptedReply(parts=parts), "after"], token_delay=0.01)
    agent = Agent(model=model, tools=[echo], steering_policy="immediate")
    rec = Recorder(agent)
    async with anyio.create_task_group() as group:
        runner = Runner(agent, group)
        runner.prompt("go")
        await rec.wait(
            lambda e: (
                e.type == "message_update"
                and e.delta.kind == "toolcall_delta"
                and e.delta.tool_call.id == "call-partial"
            )
        )
        agent.steer("no")
        await runner.wait()

    cut = agent.messages[1]
    assert isinstance(cut, AssistantMessage)
    assert cut.stop_reason == "steered"
    assert [c.id for c in cut.tool_calls] == ["call-done"]
    (end,) = rec.of_type("tool_execution_end")
    assert (end.tool_call_id, end.result, end.skipped) == ("call-done", SKIPPED, True)
    assert len(rec.of_type("tool_execution_start")) == 1
    assert [m.role for m in agent.messages] == [
        "user",
        "assistant",
        "tool_result",
        "user",
        "assistant",
    ]
    assert agent.messages[3].text == "no"


async def test_immediate_steer_cancels_a_running_sleep_and_skips_the_rest() -> None:
    model = ScriptedModel(
        [
            ScriptedReply(tool_calls=[("sleep", {"seconds": 30}), ("echo", {"text": "later"})]),
            "ok",
        ]
    )
    agent = Agent(
        model=model, tools=[sleep, echo], steering_policy="immediate", tool_execution="sequential"
    )
    rec = Recorder(agent)
    async with anyio.create_task_group() as group:
        runner = Runner(agent, group)
        runner.prompt("nap")
        await rec.wait_type("tool_execution_start", tool_name="sleep")
        await anyio.wait_all_tasks_blocked()  # the sleep is really sleeping
        steered_at = time.perf_counter()
        agent.steer("wake up")
        end = await rec.wait_type("tool_execution_end", tool_name="sleep", within=1)
        assert time.perf_counter() - steered_at < 0.5
        result = await runner.wait()

    assert result.stop_reason == "completed"
    assert (end.result, end.is_error, end.skipped) == (CANCELLED, True, False)
    echo_end = rec.tool_ends()["echo"]
    assert (echo_end.result, echo_end.skipped) == (SKIPPED, True)
    assert [m.role for m in agent.messages] == [
        "user",
        "assistant",
        "tool_result",
        "tool_result",
        "user",
        "assistant",
    ]
    assert agent.messages[2].text == CANCELLED
    assert agent.messages[4].text == "wake up"
    assert model.requests[1].messages[-1] == agent.messages[4]


async def test_immediate_steer_cancels_every_running_parallel_tool() -> None:
    agent, model, gates, rec = _three_tool_agent(steering_policy="immediate")
    async with anyio.create_task_group() as group:
        runner = Runner(agent, group)
        runner.prompt("go")
        await gates.wait_started("a", "b", "c")
        agent.steer("halt")
        await runner.wait()
    for name in "abc":
        assert gates[name].cancelled and not gates[name].finished
        assert gates[name].context is not None and gates[name].context.cancelled.is_set()
        end = rec.tool_ends()[name]
        assert (end.result, end.is_error, end.skipped) == (CANCELLED, True, False)
    _assert_steer_next(agent, model, "halt", calls=2)


async def test_interrupt_flag_makes_one_steer_immediate_under_after_tool() -> None:
    model = ScriptedModel([ScriptedReply(text=LONG_TEXT), "ok"], token_delay=0.01)
    agent = Agent(model=model)
    rec = Recorder(agent)
    async with anyio.create_task_group() as group:
        runner = Runner(agent, group)
        runner.prompt("go")
        await rec.wait(is_text_delta)
        agent.steer("polite")  # after_tool: does not cut
        await rec.wait(lambda e: is_text_delta(e) and e.delta.delta == " word3")
        assert model.streams[0].closed_at is None
        agent.steer("urgent", interrupt=True)
        model.token_delay = 0
        await runner.wait()
    cut = agent.messages[1]
    assert isinstance(cut, AssistantMessage) and cut.stop_reason == "steered"
    assert [m.text for m in agent.messages if isinstance(m, UserMessage)] == [
        "go",
        "polite",
        "urgent",
    ]


async def test_policy_change_while_streaming_applies_to_the_next_steer() -> None:
    model = ScriptedModel([ScriptedReply(text=LONG_TEXT), "ok"], token_delay=0.01)
    agent = Agent(model=model)
    rec = Recorder(agent)
    async with anyio.create_task_group() as group:
        runner = Runner(agent, group)
        runner.prompt("go")
        await rec.wait(is_text_delta)
        agent.steering_policy = "immediate"
        agent.steer("now")
        model.token_delay = 0
        await runner.wait()
    cut = agent.messages[1]
    assert isinstance(cut, AssistantMessage) and cut.stop_reason == "steered"


@pytest.mark.parametrize("mode", ["sequential", "parallel"])
async def test_after_turn_runs_the_whole_batch(mode: str) -> None:
    agent, model, gates, rec = _three_tool_agent(
        steering_policy="after_turn", tool_execution=mode, max_parallel_tools=1
    )
    async with anyio.create_task_group() as group:
        runner = Runner(agent, group)
        runner.prompt("do three things")
        await gates.wait_started("a")
        agent.steer("when you are done")
        for name in "abc":
            await gates.wait_started(name)
            gates.release(name)
        await runner.wait()
    for name in "abc":
        assert gates[name].finished
        end = rec.tool_ends()[name]
        assert (end.result, end.skipped, end.is_error) == (f"done {name}", False, False)
    assert not any(e.skipped for e in rec.of_type("tool_execution_end"))
    _assert_steer_next(agent, model, "when you are done", calls=2)
    _assert_turn_boundary(rec)


async def test_after_turn_steer_while_streaming_lets_the_stream_finish() -> None:
    model = ScriptedModel([ScriptedReply(text="one two three four"), "second"], token_delay=0.001)
    agent = Agent(model=model, steering_policy="after_turn")
    rec = Recorder(agent)
    async with anyio.create_task_group() as group:
        runner = Runner(agent, group)
        runner.prompt("hi")
        await rec.wait(is_text_delta)
        agent.steer("btw")
        await runner.wait()
    first = agent.messages[1]
    assert isinstance(first, AssistantMessage) and first.stop_reason == "stop"
    assert first.text == "one two three four"
    assert agent.messages[2].text == "btw"


async def test_steer_while_idle_joins_the_first_turn() -> None:
    model = ScriptedModel(["answer"])
    agent = Agent(model=model)
    rec = Recorder(agent)
    agent.steer("context first")
    assert not agent.is_running  # a steer while idle starts nothing
    with anyio.fail_after(TIMEOUT):
        await agent.prompt("the question")
    assert [m.text for m in agent.messages] == ["the question", "context first", "answer"]
    assert len(model.streams) == 1
    assert rec.types().count("turn_start") == 1
