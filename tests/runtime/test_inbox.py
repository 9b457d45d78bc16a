"""The inbox through the Agent: dedup, priority, limits, continue_, busy (SPEC §2.1, §2.7)."""

from __future__ import annotations

import anyio
import pytest

from steerline import (
    Agent,
    AgentBusyError,
    ImageContent,
    InboxError,
    InboxLimits,
    InvalidValueError,
    MessageTooLargeError,
    QueueFullError,
    ScriptedModel,
    ScriptedReply,
    SteerlineError,
    TextContent,
    UserMessage,
)

from .helpers import Gates, Recorder, Runner

pytestmark = pytest.mark.anyio


def _users(agent: Agent) -> list[str]:
    return [m.text for m in agent.messages if isinstance(m, UserMessage)]


async def test_same_id_twice_is_queued_once_and_reported_as_duplicate() -> None:
    agent = Agent(model=ScriptedModel())
    rec = Recorder(agent)
    first = agent.steer("hello", id="m1")
    second = agent.steer("hello again", id="m1")
    third = agent.follow_up("other lane", id="m1")
    assert (first.duplicate, first.position) == (False, 0)
    assert (second.duplicate, second.position) == (True, -1)
    assert third.duplicate
    assert second.message.id == "m1" and second.message.content == [TextContent(text="hello")]
    snapshot = agent.queue_snapshot()
    assert [m.id for m in snapshot.steering] == ["m1"] and snapshot.follow_up == []
    assert len(rec.of_type("queue_update")) == 1  # duplicates change nothing


async def test_an_id_stays_known_after_its_delivery() -> None:
    agent = Agent(model=ScriptedModel())
    agent.follow_up("once", id="m1")
    await agent.continue_()
    assert _users(agent) == ["once"]
    assert agent.follow_up("once", id="m1").duplicate
    assert agent.steer("once", id="m1").duplicate
    assert not agent.has_queued_messages()


async def test_the_dedup_window_is_bounded() -> None:
    agent = Agent(model=ScriptedModel(), inbox_limits=InboxLimits(dedup_window=2))
    agent.follow_up("a", id="a")
    agent.follow_up("b", id="b")
    assert agent.follow_up("a", id="a").duplicate
    agent.follow_up("c", id="c")  # "a" falls out of the window
    assert not agent.follow_up("a", id="a").duplicate


async def test_priority_first_then_arrival_within_a_lane() -> None:
    agent = Agent(model=ScriptedModel())
    positions = [
        agent.follow_up("a", id="a").position,
        agent.follow_up("b", id="b", priority=5).position,
        agent.follow_up("c", id="c").position,
        agent.follow_up("d", id="d", priority=5).position,
        agent.follow_up("e", id="e", priority=-1).position,
    ]
    assert positions == [0, 0, 2, 1, 4]
    assert [m.id for m in agent.queue_snapshot().follow_up] == ["b", "d", "a", "c", "e"]
    assert [m.priority for m in agent.queue_snapshot().follow_up] == [5, 5, 0, 0, -1]
    await agent.continue_()
    assert _users(agent) == ["b", "d", "a", "c", "e"]


async def test_steering_lane_is_delivered_before_follow_ups_by_continue() -> None:
    agent = Agent(model=ScriptedModel())
    agent.follow_up("f1")
    agent.steer("s-low")
    agent.steer("s-high", priority=1)
    result = await agent.continue_()
    assert result.stop_reason == "completed"
    assert _users(agent) == ["s-high", "s-low", "f1"]
    deliveries = [m.delivery for m in agent.messages if isinstance(m, UserMessage)]
    assert deliveries == ["steer", "steer", "follow_up"]


async def test_queue_full_is_a_clear_error_and_loses_nothing() -> None:
    agent = Agent(model=ScriptedModel(), inbox_limits=InboxLimits(max_messages=2))
    agent.steer("s1", id="s1")
    agent.follow_up("f1", id="f1")
    with pytest.raises(QueueFullError) as caught:
        agent.steer("s2", id="s2")
    assert isinstance(caught.value, InboxError)
    assert caught.value.code == "queue_full"
    assert "2" in str(caught.value)
    with pytest.raises(QueueFullError):
        agent.follow_up("f2", id="f2")
    snapshot = agent.queue_snapshot()
    assert [m.id for m in snapshot.steering] == ["s1"]
    assert [m.id for m in snapshot.follow_up] == ["f1"]
    # a refused id was not remembered: it is accepted once there is room
    agent.clear_queues("follow_up")
    assert not agent.steer("s2", id="s2").duplicate


async def test_message_too_large_is_a_clear_error_and_loses_nothing() -> None:
    agent = Agent(model=ScriptedModel(), inbox_limits=InboxLimits(max_message_bytes=10))
    agent.steer("0123456789", id="ok")  # exactly the limit
    with pytest.raises(MessageTooLargeError) as caught:
        agent.steer("01234567890", id="big")
    assert caught.value.code == "message_too_large"
    with pytest.raises(MessageTooLargeError):
        agent.follow_up("é" * 6)  # 12 bytes in UTF-8
    with pytest.raises(MessageTooLargeError):
        await agent.prompt("01234567890")
    assert not agent.is_running
    assert [m.id for m in agent.queue_snapshot().steering] == ["ok"]
    assert not agent.steer("small", id="big").duplicate


async def test_clear_per_lane_returns_the_removed_messages() -> None:
    agent = Agent(model=ScriptedModel())
    rec = Recorder(agent)
    agent.steer("s", id="s")
    agent.follow_up("f1", id="f1")
    agent.follow_up("f2", id="f2")
    assert [m.id for m in agent.clear_follow_up_queue()] == ["f1", "f2"]
    assert agent.has_queued_messages("steering") and not agent.has_queued_messages("follow_up")
    assert [m.id for m in agent.clear_steering_queue()] == ["s"]
    assert agent.clear_queues() == []
    assert not agent.has_queued_messages()
    updates = rec.of_type("queue_update")
    assert len(updates) == 5  # three pushes, two clears; the empty clear emits nothing
    assert [[m.id for m in u.follow_up] for u in updates] == [[], ["f1"], ["f1", "f2"], [], []]
    assert all(u.run_id == "" for u in updates)  # idle


async def test_queue_update_follows_every_inbox_change_during_a_run() -> None:
    gates = Gates()
    model = ScriptedModel([ScriptedReply(tool_calls=[("a", {})])])
    agent = Agent(model=model, tools=[gates.tool("a")])
    rec = Recorder(agent)
    async with anyio.create_task_group() as group:
        runner = Runner(agent, group)
        runner.prompt("go")
        await gates.wait_started("a")
        agent.steer("s", id="s")
        update = rec.of_type("queue_update")[-1]
        assert [m.id for m in update.steering] == ["s"]
        assert update.run_id == agent.run_id
        gates.release()
        await runner.wait()
    # taking the steer emptied the lane, and said so
    assert rec.of_type("queue_update")[-1].steering == []


async def test_invalid_modes_and_lanes_are_refused() -> None:
    agent = Agent(model=ScriptedModel())
    with pytest.raises(InvalidValueError):
        agent.steering_mode = "some"  # type: ignore[assignment]
    with pytest.raises(InvalidValueError):
        agent.steering_policy = "never"
    with pytest.raises(InvalidValueError):
        agent.tool_execution = "random"
    with pytest.raises(InvalidValueError):
        agent.has_queued_messages("urgent")  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError):
        Agent(model=ScriptedModel(), follow_up_mode="many")  # type: ignore[arg-type]
    assert agent.steering_mode == "one-at-a-time"
    assert agent.steering_policy == "after_tool"


async def test_prompt_and_continue_while_running_raise_agent_busy() -> None:
    gates = Gates()
    model = ScriptedModel([ScriptedReply(tool_calls=[("a", {})])])
    agent = Agent(model=model, tools=[gates.tool("a")])
    async with anyio.create_task_group() as group:
        runner = Runner(agent, group)
        runner.prompt("first")
        await gates.wait_started("a")
        assert agent.is_running and agent.run_id is not None
        with pytest.raises(AgentBusyError):
            await agent.prompt("second")
        with pytest.raises(AgentBusyError):
            await agent.continue_()
        gates.release()
        await runner.wait()
    assert _users(agent) == ["first"]
    assert not agent.is_running and agent.run_id is None
    await agent.wait_for_idle()  # returns at once when idle


async def test_wait_for_idle_returns_when_the_run_ends() -> None:
    gates = Gates()
    model = ScriptedModel([ScriptedReply(tool_calls=[("a", {})])])
    agent = Agent(model=model, tools=[gates.tool("a")])
    async with anyio.create_task_group() as group:
        runner = Runner(agent, group)
        runner.prompt("first")
        await gates.wait_started("a")
        idle = anyio.Event()

        async def waiter() -> None:
            await agent.wait_for_idle()
            idle.set()

        group.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        assert not idle.is_set()
        gates.release()
        with anyio.fail_after(5):
            await idle.wait()
        assert not agent.is_running


async def test_queues_wait_after_a_run_until_continue() -> None:
    gates = Gates()
    model = ScriptedModel([ScriptedReply(text="first answer")])
    agent = Agent(model=model, tools=[gates.tool("a")])
    await agent.prompt("p")
    agent.follow_up("f1", id="f1")
    agent.follow_up("f2", id="f2")
    agent.steer("s1", id="s1")
    await anyio.wait_all_tasks_blocked()
    assert not agent.is_running  # queued messages start nothing by themselves
    assert len(model.streams) == 1
    result = await agent.continue_()
    assert result.stop_reason == "completed"
    assert _users(agent) == ["p", "s1", "f1", "f2"]
    assert [m.role for m in result.messages] == ["user", "assistant"] * 3
    assert len(model.streams) == 4


async def test_continue_without_anything_to_do_is_an_error() -> None:
    agent = Agent(model=ScriptedModel())
    with pytest.raises(SteerlineError):
        await agent.continue_()
    await agent.prompt("p")
    with pytest.raises(SteerlineError):
        await agent.continue_()


async def test_continue_answers_a_context_ending_with_a_user_message() -> None:
    model = ScriptedModel(["answer"])
    history = [UserMessage(id="u1", content=[TextContent(text="restored question")])]
    agent = Agent(model=model, messages=history)
    result = await agent.continue_()
    assert result.stop_reason == "completed"
    assert [m.text for m in agent.messages] == ["restored question", "answer"]
    assert model.requests[0].messages[-1].text == "restored question"


async def test_prompt_with_content_parts_and_explicit_id() -> None:
    model = ScriptedModel(["ok"])
    agent = Agent(model=model)
    await agent.prompt([TextContent(text="a"), TextContent(text="b")], id="p1")
    first = agent.messages[0]
    assert isinstance(first, UserMessage)
    assert (first.id, first.text) == ("p1", "ab")
    assert agent.steer("dup", id="p1").duplicate  # the prompt id is known


async def test_images_are_allowed_as_content_parts() -> None:
    model = ScriptedModel(["seen"])
    agent = Agent(model=model, inbox_limits=InboxLimits(max_message_bytes=20))
    parts = [TextContent(text="look"), ImageContent(data="aGVsbG8=", mime_type="image/png")]
    agent.steer(parts, id="img")
    with pytest.raises(MessageTooLargeError):
        agent.steer([ImageContent(data="A" * 21, mime_type="image/png")])
    await agent.prompt("first")
    delivered = agent.messages[1]
    assert isinstance(delivered, UserMessage)
    assert delivered.id == "img" and delivered.content == parts
    assert model.requests[0].messages[-1] == delivered
