"""The canonical order of native events (SPEC §2.2, §2.6) and their delivery."""

from __future__ import annotations

import anyio
import pytest

from steerline import (
    Agent,
    AgentEvent,
    AssistantMessage,
    EventStreamOverflow,
    ScriptedModel,
    ScriptedReply,
    ToolResultMessage,
    UserMessage,
)
from steerline.tools import echo

from .helpers import TIMEOUT, Gates, Recorder, Runner

pytestmark = pytest.mark.anyio


def _one_tool_agent() -> tuple[Agent, ScriptedModel]:
    model = ScriptedModel(
        [
            ScriptedReply(text="Let me echo.", tool_calls=[("echo", {"text": "hello"})]),
            ScriptedReply(text="It said hello."),
        ]
    )
    return Agent(model=model, tools=[echo]), model


async def test_one_prompt_one_tool_call_canonical_order() -> None:
    agent, model = _one_tool_agent()
    rec = Recorder(agent)

    result = await agent.prompt("say hello")

    assert rec.types(collapse_updates=True) == [
        "agent_start",
        "turn_start",
        "message_start",  # user
        "message_end",
        "message_start",  # assistant with the tool call
        "message_update",
        "message_end",
        "tool_execution_start",
        "tool_execution_end",
        "message_start",  # tool result
        "message_end",
        "turn_end",
        "turn_start",
        "message_start",  # assistant's final answer
        "message_update",
        "message_end",
        "turn_end",
        "agent_end",
    ]
    roles = [e.message.role for e in rec.events if e.type in ("message_start", "message_end")]
    assert roles == ["user"] * 2 + ["assistant"] * 2 + ["tool_result"] * 2 + ["assistant"] * 2

    # the deltas of the first assistant message: text block, then the call
    first_end = next(i for i, e in enumerate(rec.events) if e.type == "tool_execution_start")
    kinds = [e.delta.kind for e in rec.events[:first_end] if e.type == "message_update"]
    collapsed = [k for i, k in enumerate(kinds) if i == 0 or kinds[i - 1] != k]
    assert collapsed == [
        "text_start",
        "text_delta",
        "text_end",
        "toolcall_start",
        "toolcall_delta",
        "toolcall_end",
    ]

    # payloads
    (start,) = rec.of_type("tool_execution_start")
    (end,) = rec.of_type("tool_execution_end")
    call = agent.messages[1]
    assert isinstance(call, AssistantMessage)
    model_call_id = call.tool_calls[0].id
    assert (start.tool_call_id, start.tool_name, start.args) == (
        model_call_id,
        "echo",
        {"text": "hello"},
    )
    assert (end.tool_call_id, end.result, end.is_error, end.skipped) == (
        model_call_id,
        "hello",
        False,
        False,
    )
    turn_ends = rec.of_type("turn_end")
    assert turn_ends[0].message.tool_calls[0].id == model_call_id
    assert [r.text for r in turn_ends[0].tool_results] == ["hello"]
    assert turn_ends[1].tool_results == []
    (agent_end,) = rec.of_type("agent_end")
    assert agent_end.stop_reason == "completed"
    assert agent_end.messages == agent.messages == result.messages
    assert result.stop_reason == "completed"

    # the context
    assert [m.role for m in agent.messages] == ["user", "assistant", "tool_result", "assistant"]
    assert isinstance(agent.messages[0], UserMessage)
    assert agent.messages[0].text == "say hello"
    assert agent.messages[0].delivery == "prompt"
    assert isinstance(agent.messages[2], ToolResultMessage)
    assert agent.messages[2].tool_call_id == model_call_id
    assert agent.messages[3].text == "It said hello."
    assert [m.stop_reason for m in agent.messages if isinstance(m, AssistantMessage)] == [
        "tool_use",
        "stop",
    ]
    # the second model call saw the tool result
    assert len(model.streams) == 2
    assert model.requests[1].messages[-1] == agent.messages[2]

    # every event belongs to the run and seq goes up by one
    assert {e.run_id for e in rec.events} == {result.run_id}
    assert [e.seq for e in rec.events] == list(range(1, len(rec.events) + 1))
    assert agent.event_count == len(rec.events)


async def test_thinking_streams_before_text() -> None:
    model = ScriptedModel([ScriptedReply(thinking="hmm let me see", text="answer")])
    agent = Agent(model=model)
    rec = Recorder(agent)
    await agent.prompt("q")
    kinds = [e.delta.kind for e in rec.of_type("message_update")]
    assert kinds[0] == "thinking_start"
    assert kinds.index("thinking_end") < kinds.index("text_start")
    assert kinds[-1] == "text_end"
    reply = agent.messages[-1]
    assert isinstance(reply, AssistantMessage)
    assert (reply.thinking, reply.text) == ("hmm let me see", "answer")
    # the deltas rebuild the text exactly
    text = "".join(
        e.delta.delta for e in rec.of_type("message_update") if e.delta.kind == "text_delta"
    )
    assert text == "answer"


async def test_events_iterator_sees_every_event_in_order() -> None:
    agent, _ = _one_tool_agent()
    rec = Recorder(agent)
    seen: list[AgentEvent] = []
    stream = agent.events()

    async def consume() -> None:
        async for event in stream:
            seen.append(event)
            if event.type == "agent_end":
                return

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as group:
            group.start_soon(consume)
            await agent.prompt("say hello")
    stream.close()

    assert seen == rec.events
    assert [e.seq for e in seen] == list(range(1, len(seen) + 1))
    assert seen[0].type == "agent_start"
    assert seen[-1].type == "agent_end"


async def test_events_iterator_ends_when_closed_and_buffers_while_unread() -> None:
    agent, _ = _one_tool_agent()
    stream = agent.events()
    await agent.prompt("say hello")
    stream.close()
    seen = [event async for event in stream]
    assert seen[0].type == "agent_start" and seen[-1].type == "agent_end"
    assert [e.seq for e in seen] == list(range(1, len(seen) + 1))


async def test_callback_that_steers_keeps_every_consumer_in_seq_order() -> None:
    """A UI callback may call steer() synchronously; others must still see seq in order."""
    gates = Gates()
    model = ScriptedModel([ScriptedReply(tool_calls=[("a", {})]), "one", "two"])
    agent = Agent(model=model, tools=[gates.tool("a")])
    steered = False

    def steer_on_tool_start(event: AgentEvent) -> None:
        nonlocal steered
        if event.type == "tool_execution_start" and not steered:
            steered = True
            agent.steer("from a callback")

    agent.subscribe(steer_on_tool_start)
    rec = Recorder(agent)  # subscribed after the steering callback
    stream = agent.events()
    async with anyio.create_task_group() as group:
        runner = Runner(agent, group)
        runner.prompt("go")
        await gates.wait_started("a")
        gates.release()
        await runner.wait()
    stream.close()
    streamed = [event async for event in stream]

    for seen in (rec.events, streamed):
        assert [e.seq for e in seen] == list(range(1, len(seen) + 1))
    assert [m.text for m in agent.messages if isinstance(m, UserMessage)] == [
        "go",
        "from a callback",
    ]


async def test_unsubscribe_stops_callbacks_and_a_failing_callback_is_isolated() -> None:
    agent = Agent(model=ScriptedModel(["x", "y"]))
    got: list[str] = []

    def broken(event: AgentEvent) -> None:
        raise RuntimeError("subscriber bug")

    agent.subscribe(broken)
    unsubscribe = agent.subscribe(lambda e: got.append(e.type))
    result = await agent.prompt("a")
    assert result.stop_reason == "completed"
    assert got[0] == "agent_start" and got[-1] == "agent_end"
    count = len(got)
    unsubscribe()
    await agent.prompt("b")
    assert len(got) == count


async def test_an_overflowing_stream_does_not_starve_the_others() -> None:
    agent, _ = _one_tool_agent()
    small = agent.events(max_buffer=3)
    full = agent.events()
    rec = Recorder(agent)
    await agent.prompt("say hello")
    full.close()
    seen = [event async for event in full]
    assert seen == rec.events
    got: list[AgentEvent] = []
    with pytest.raises(EventStreamOverflow):
        async for event in small:
            got.append(event)
    assert [e.seq for e in got] == [1, 2, 3]
