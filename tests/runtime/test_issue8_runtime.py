"""Runtime defects of issue 8: an abort from a subscriber keeps what was taken
from the inbox (SPEC §2.5), ``continue_`` answers pending input first
(§2.2 step 6), sequential tool results follow their own tool (§2.3), and an
aborted reply / run says why (``error_message``)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from steerline import (
    Agent,
    AgentEvent,
    AssistantMessage,
    ScriptedModel,
    ScriptedReply,
    TextContent,
    ToolCall,
    ToolResultMessage,
    UserMessage,
    tool,
)
from steerline.tools import echo

from .helpers import Gates, Recorder, Runner, is_text_delta, user_texts

pytestmark = pytest.mark.anyio

ABORTED = "Request was aborted"
LONG_TEXT = " ".join(f"word{i}" for i in range(300))


def _on(agent: Agent, type_: str, nth: int, action: Any) -> None:
    """Call ``action()`` from a subscriber on the ``nth`` event of ``type_``."""
    seen = 0

    def callback(event: AgentEvent) -> None:
        nonlocal seen
        if event.type == type_:
            seen += 1
            if seen == nth:
                action()

    agent.subscribe(callback)


def _queue(agent: Agent) -> list[tuple[str, str, int, float]]:
    snapshot = agent.queue_snapshot()
    return [
        (lane, m.id, m.priority, m.created_at)
        for lane, views in (("steering", snapshot.steering), ("follow_up", snapshot.follow_up))
        for m in views
    ]


def _delivered(agent: Agent) -> list[str]:
    return [m.id for m in agent.messages if isinstance(m, UserMessage)]


def _user_starts(rec: Recorder) -> list[str]:
    return [
        e.message.id for e in rec.of_type("message_start") if isinstance(e.message, UserMessage)
    ]


# -- 16: an abort from a subscriber never consumes a queued message ----------------


async def test_abort_on_agent_start_puts_the_polled_steer_back_at_its_position() -> None:
    model = ScriptedModel(["never said"])
    agent = Agent(model=model)
    agent.steer("low", id="s-low")
    agent.steer("high", id="s-high", priority=5)  # first in the lane: the P0 poll takes it
    agent.steer("low 2", id="s-low2")
    agent.follow_up("later", id="f1")
    before = _queue(agent)
    _on(agent, "agent_start", 1, agent.abort)
    rec = Recorder(agent)

    result = await agent.prompt("hello", id="p1")

    assert result.stop_reason == "aborted"
    assert _queue(agent) == before  # same ids, lanes, order, priorities, created_at
    assert _delivered(agent) == ["p1"]
    assert _user_starts(rec) == ["p1"]
    assert model.streams == []  # aborted before the model call: it is not made


async def test_abort_on_agent_start_keeps_the_prompt_with_an_aborted_reply() -> None:
    """The decision for the prompt itself (docs/runtime.md): it is the run's own
    input, so it is recorded and gets the aborted reply, as an abort one token
    later would give it; the model is not called."""
    model = ScriptedModel(["never said"])
    agent = Agent(model=model)
    _on(agent, "agent_start", 1, agent.abort)
    rec = Recorder(agent)

    result = await agent.prompt("hello", id="p1")

    assert result.stop_reason == "aborted"
    assert [m.role for m in agent.messages] == ["user", "assistant"]
    assert agent.messages[0].id == "p1"  # type: ignore[union-attr]
    reply = agent.messages[1]
    assert isinstance(reply, AssistantMessage)
    assert (reply.stop_reason, reply.content) == ("aborted", [])
    assert result.messages == agent.messages
    assert model.streams == []
    assert rec.types() == [
        "agent_start",
        "turn_start",
        "message_start",
        "message_end",
        "message_start",
        "message_end",
        "turn_end",
        "agent_end",
    ]


async def test_abort_on_turn_start_puts_the_taken_steer_back() -> None:
    model = ScriptedModel(["first answer", "never said"])
    agent = Agent(model=model)
    # the steer arrives while turn 1 ends; the loop takes it for turn 2
    _on(agent, "turn_end", 1, lambda: agent.steer("steer", id="s1", priority=2))
    _on(agent, "turn_start", 2, agent.abort)
    rec = Recorder(agent)

    result = await agent.prompt("hello", id="p1")

    assert result.stop_reason == "aborted"
    assert _delivered(agent) == ["p1"]
    assert _user_starts(rec) == ["p1"]
    snapshot = agent.queue_snapshot()
    assert [(m.id, m.priority) for m in snapshot.steering] == [("s1", 2)]
    assert snapshot.follow_up == []
    assert len(model.streams) == 1


async def test_abort_on_turn_start_puts_the_taken_follow_up_back_first_in_its_lane() -> None:
    model = ScriptedModel(["first answer", "never said"])
    agent = Agent(model=model)

    def queue_two() -> None:
        agent.follow_up("first", id="f1")
        agent.follow_up("second", id="f2")

    _on(agent, "turn_end", 1, queue_two)
    _on(agent, "turn_start", 2, agent.abort)

    result = await agent.prompt("hello", id="p1")

    assert result.stop_reason == "aborted"
    assert _delivered(agent) == ["p1"]
    assert [m.id for m in agent.queue_snapshot().follow_up] == ["f1", "f2"]
    assert len(model.streams) == 1
    # nothing was lost or duplicated: the next continue_ serves both, in order
    await agent.continue_()
    assert _delivered(agent) == ["p1", "f1", "f2"]


async def test_abort_on_agent_start_of_continue_puts_all_taken_messages_back() -> None:
    model = ScriptedModel(["never said"])
    agent = Agent(model=model, follow_up_mode="all")
    agent.follow_up("a", id="a")
    agent.follow_up("b", id="b", priority=3)
    agent.follow_up("c", id="c")
    before = _queue(agent)
    _on(agent, "agent_start", 1, agent.abort)
    rec = Recorder(agent)

    result = await agent.continue_()

    assert result.stop_reason == "aborted"
    assert _queue(agent) == before
    assert _delivered(agent) == [] and _user_starts(rec) == []
    assert model.streams == []


async def test_abort_with_clear_queues_on_turn_start_returns_the_taken_message() -> None:
    model = ScriptedModel(["first answer", "never said"])
    agent = Agent(model=model)
    removed: list[str] = []
    _on(agent, "turn_end", 1, lambda: agent.steer("steer", id="s1"))
    _on(
        agent,
        "turn_start",
        2,
        lambda: removed.extend(m.id for m in agent.abort(clear_queues=True)),
    )

    result = await agent.prompt("hello", id="p1")

    assert result.stop_reason == "aborted"
    assert removed == ["s1"]
    assert not agent.has_queued_messages()
    assert _delivered(agent) == ["p1"]


# -- 17: continue_ answers pending input before a queued follow-up ------------------


async def test_continue_answers_a_pending_user_message_before_the_queued_follow_up() -> None:
    model = ScriptedModel(["answer to the question", "answer to the follow-up"])
    history = [UserMessage(id="u1", content=[TextContent(text="restored question")])]
    agent = Agent(model=model, messages=history)
    agent.follow_up("follow-up", id="f1")

    result = await agent.continue_()

    assert result.stop_reason == "completed"
    assert len(model.requests) == 2
    assert model.requests[0].messages[-1].text == "restored question"  # type: ignore[union-attr]
    assert model.requests[1].messages[-1].text == "follow-up"  # type: ignore[union-attr]
    assert [(m.role, getattr(m, "text", "")) for m in agent.messages] == [
        ("user", "restored question"),
        ("assistant", "answer to the question"),
        ("user", "follow-up"),
        ("assistant", "answer to the follow-up"),
    ]


async def test_continue_answers_pending_tool_results_before_the_queued_follow_up() -> None:
    model = ScriptedModel(["it said hi", "answer to the follow-up"])
    call = ToolCall(id="call-1", name="echo", arguments={"text": "hi"})
    history = [
        UserMessage(id="u1", content=[TextContent(text="echo hi")]),
        AssistantMessage(content=[call], stop_reason="tool_use"),
        ToolResultMessage(
            tool_call_id="call-1", tool_name="echo", content=[TextContent(text="hi")]
        ),
    ]
    agent = Agent(model=model, tools=[echo], messages=history)
    agent.follow_up("follow-up", id="f1")

    await agent.continue_()

    assert len(model.requests) == 2
    assert model.requests[0].messages[-1].role == "tool_result"
    assert model.requests[1].messages[-1].text == "follow-up"  # type: ignore[union-attr]
    assert [m.role for m in agent.messages[3:]] == ["assistant", "user", "assistant"]


# -- 18: sequential tool results follow their own tool ------------------------------


def _tool_trace(rec: Recorder) -> list[tuple[str, str]]:
    trace: list[tuple[str, str]] = []
    for event in rec.events:
        if event.type in ("tool_execution_start", "tool_execution_end"):
            trace.append((event.type, event.tool_name))
        elif event.type in ("message_start", "message_end") and isinstance(
            event.message, ToolResultMessage
        ):
            trace.append((event.type, event.message.tool_name))
    return trace


async def test_sequential_tool_result_message_follows_its_own_tool_execution_end() -> None:
    @tool(name="one")
    def one() -> str:
        return "1"

    @tool(name="two")
    def two() -> str:
        return "2"

    model = ScriptedModel([ScriptedReply(tool_calls=[("one", {}), ("two", {})]), "done"])
    agent = Agent(model=model, tools=[one, two], tool_execution="sequential")
    rec = Recorder(agent)

    await agent.prompt("go")

    assert _tool_trace(rec) == [
        ("tool_execution_start", "one"),
        ("tool_execution_end", "one"),
        ("message_start", "one"),
        ("message_end", "one"),
        ("tool_execution_start", "two"),
        ("tool_execution_end", "two"),
        ("message_start", "two"),
        ("message_end", "two"),
    ]
    (turn_end, _) = rec.of_type("turn_end")
    assert [r.tool_name for r in turn_end.tool_results] == ["one", "two"]
    assert [m.role for m in agent.messages] == [
        "user",
        "assistant",
        "tool_result",
        "tool_result",
        "assistant",
    ]


async def test_sequential_results_of_a_cancelled_and_a_skipped_call_follow_their_ends() -> None:
    gates = Gates()
    model = ScriptedModel([ScriptedReply(tool_calls=[("a", {}), ("b", {})])])
    agent = Agent(
        model=model, tools=[gates.tool("a"), gates.tool("b")], tool_execution="sequential"
    )
    rec = Recorder(agent)
    async with anyio.create_task_group() as group:
        runner = Runner(agent, group)
        runner.prompt("work")
        await gates.wait_started("a")
        agent.abort()
        await runner.wait()

    assert _tool_trace(rec) == [
        ("tool_execution_start", "a"),
        ("tool_execution_end", "a"),
        ("message_start", "a"),
        ("message_end", "a"),
        ("tool_execution_start", "b"),
        ("tool_execution_end", "b"),
        ("message_start", "b"),
        ("message_end", "b"),
    ]


async def test_parallel_tool_results_are_still_appended_in_call_order_after_the_batch() -> None:
    gates = Gates()
    model = ScriptedModel([ScriptedReply(tool_calls=[("a", {}), ("b", {})]), "done"])
    agent = Agent(model=model, tools=[gates.tool("a"), gates.tool("b")])
    rec = Recorder(agent)
    async with anyio.create_task_group() as group:
        runner = Runner(agent, group)
        runner.prompt("work")
        await gates.wait_started("a", "b")
        gates.release("b")
        await rec.wait_type("tool_execution_end", tool_name="b")
        gates.release("a")
        await runner.wait()

    assert _tool_trace(rec) == [
        ("tool_execution_start", "a"),
        ("tool_execution_start", "b"),
        ("tool_execution_end", "b"),
        ("tool_execution_end", "a"),
        ("message_start", "a"),
        ("message_end", "a"),
        ("message_start", "b"),
        ("message_end", "b"),
    ]


# -- 19: an aborted reply and run carry an error message ----------------------------


async def test_abort_while_streaming_sets_error_message_on_reply_result_and_agent_end() -> None:
    model = ScriptedModel([ScriptedReply(text=LONG_TEXT)], token_delay=0.01)
    agent = Agent(model=model)
    rec = Recorder(agent)
    async with anyio.create_task_group() as group:
        runner = Runner(agent, group)
        runner.prompt("talk")
        await rec.wait(is_text_delta)
        agent.abort()
        result = await runner.wait()

    reply = agent.messages[-1]
    assert isinstance(reply, AssistantMessage)
    assert (reply.stop_reason, reply.error_message) == ("aborted", ABORTED)
    assert (result.stop_reason, result.error_message) == ("aborted", ABORTED)
    (end,) = rec.of_type("agent_end")
    assert (end.stop_reason, end.error_message) == ("aborted", ABORTED)
    (message_end,) = [e for e in rec.of_type("message_end") if e.message is reply]
    assert message_end.message.error_message == ABORTED


async def test_abort_while_tools_run_sets_error_message_on_the_run_result() -> None:
    gates = Gates()
    model = ScriptedModel([ScriptedReply(text="working", tool_calls=[("a", {})])])
    agent = Agent(model=model, tools=[gates.tool("a")])
    rec = Recorder(agent)
    async with anyio.create_task_group() as group:
        runner = Runner(agent, group)
        runner.prompt("work")
        await gates.wait_started("a")
        agent.abort()
        result = await runner.wait()

    # the reply itself finished normally (tool_use): only the run was aborted
    reply = agent.messages[1]
    assert isinstance(reply, AssistantMessage)
    assert (reply.stop_reason, reply.error_message) == ("tool_use", None)
    assert (result.stop_reason, result.error_message) == ("aborted", ABORTED)
    assert rec.of_type("agent_end")[0].error_message == ABORTED
    assert user_texts(agent.messages) == ["work"]
