"""Delivery modes per lane and the order of steering vs follow-ups (SPEC §2.1, §2.2)."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest

from steerline import Agent, ScriptedModel, ScriptedReply, UserMessage

from .helpers import Gates, Recorder, Runner

pytestmark = pytest.mark.anyio


def _gated_agent(**settings: object) -> tuple[Agent, ScriptedModel, Gates, Recorder]:
    gates = Gates()
    model = ScriptedModel([ScriptedReply(tool_calls=[("a", {})])])
    agent = Agent(model=model, tools=[gates.tool("a")], **settings)  # type: ignore[arg-type]
    return agent, model, gates, Recorder(agent)


async def _while_tool_runs(agent: Agent, gates: Gates, action: Callable[[], None]) -> None:
    """Prompt, call ``action`` while tool ``a`` runs, let the run finish."""
    async with anyio.create_task_group() as group:
        runner = Runner(agent, group)
        runner.prompt("start")
        await gates.wait_started("a")
        action()
        gates.release("a")
        result = await runner.wait()
    assert result.stop_reason == "completed"


def _last_users(model: ScriptedModel) -> list[list[str]]:
    """For every model call, the user messages at the end of its context."""
    out: list[list[str]] = []
    for request in model.requests:
        tail: list[str] = []
        for message in reversed(request.messages):
            if not isinstance(message, UserMessage):
                break
            tail.insert(0, message.text)
        out.append(tail)
    return out


@pytest.mark.parametrize("lane", ["steering", "follow_up"])
async def test_one_at_a_time_delivers_one_message_per_model_call(lane: str) -> None:
    agent, model, gates, rec = _gated_agent()

    def queue_three() -> None:
        for text in ("m1", "m2", "m3"):
            if lane == "steering":
                agent.steer(text)
            else:
                agent.follow_up(text)

    await _while_tool_runs(agent, gates, queue_three)
    if lane == "steering":
        # tool turn, then one call per steer (the tool result rides with m1)
        assert _last_users(model) == [["start"], ["m1"], ["m2"], ["m3"]]
    else:
        # tool turn, result turn, then one call per follow-up
        assert _last_users(model) == [["start"], [], ["m1"], ["m2"], ["m3"]]
    delivery = "steer" if lane == "steering" else "follow_up"
    users = [m for m in agent.messages if isinstance(m, UserMessage)]
    assert [(m.text, m.delivery) for m in users] == [("start", "prompt")] + [
        (t, delivery) for t in ("m1", "m2", "m3")
    ]
    assert len(rec.of_type("agent_start")) == 1  # all in the same run


@pytest.mark.parametrize("lane", ["steering", "follow_up"])
async def test_all_delivers_the_whole_lane_before_one_model_call(lane: str) -> None:
    mode = {"steering_mode": "all"} if lane == "steering" else {"follow_up_mode": "all"}
    agent, model, gates, rec = _gated_agent(**mode)

    def queue_three() -> None:
        for text in ("m1", "m2", "m3"):
            if lane == "steering":
                agent.steer(text)
            else:
                agent.follow_up(text)

    await _while_tool_runs(agent, gates, queue_three)
    if lane == "steering":
        assert _last_users(model) == [["start"], ["m1", "m2", "m3"]]
    else:
        assert _last_users(model) == [["start"], [], ["m1", "m2", "m3"]]
    # three consecutive user messages, one turn
    roles = [m.role for m in agent.messages]
    i = roles.index("user", 1)
    assert roles[i : i + 4] == ["user", "user", "user", "assistant"]
    assert len(rec.of_type("agent_start")) == 1


async def test_steering_first_even_when_follow_ups_were_queued_before() -> None:
    agent, model, gates, _ = _gated_agent()

    def queue() -> None:
        agent.follow_up("F1")
        agent.follow_up("F2")
        agent.steer("S1")

    await _while_tool_runs(agent, gates, queue)
    users = [m.text for m in agent.messages if isinstance(m, UserMessage)]
    assert users == ["start", "S1", "F1", "F2"]
    assert _last_users(model) == [["start"], ["S1"], ["F1"], ["F2"]]


async def test_follow_ups_wait_until_the_agent_would_stop() -> None:
    """A follow-up never interrupts: tool results get their model call first."""
    agent, model, gates, rec = _gated_agent()
    await _while_tool_runs(agent, gates, lambda: agent.follow_up("later"))
    assert [m.role for m in agent.messages] == [
        "user",
        "assistant",
        "tool_result",
        "assistant",
        "user",
        "assistant",
    ]
    assert not any(e.skipped for e in rec.of_type("tool_execution_end"))
    assert agent.messages[4].text == "later"
    assert model.requests[2].messages[-1] == agent.messages[4]


async def test_steer_during_a_follow_up_turn_is_served_before_remaining_follow_ups() -> None:
    agent, _model, gates, _rec = _gated_agent()
    steered = False

    def on_event(event: object) -> None:
        nonlocal steered
        message = getattr(event, "message", None)
        if (
            getattr(event, "type", "") == "message_end"
            and isinstance(message, UserMessage)
            and message.text == "F1"
            and not steered
        ):
            steered = True
            agent.steer("S2")

    agent.subscribe(on_event)

    def queue() -> None:
        agent.follow_up("F1")
        agent.follow_up("F2")

    await _while_tool_runs(agent, gates, queue)
    users = [m.text for m in agent.messages if isinstance(m, UserMessage)]
    assert users == ["start", "F1", "S2", "F2"]


async def test_mode_change_while_running_takes_effect_at_the_next_poll() -> None:
    agent, model, gates, _ = _gated_agent()

    def queue_then_switch() -> None:
        for text in ("s1", "s2", "s3"):
            agent.steer(text)
        agent.follow_up("f1")
        agent.follow_up("f2")
        agent.steering_mode = "all"
        agent.follow_up_mode = "all"

    await _while_tool_runs(agent, gates, queue_then_switch)
    assert _last_users(model) == [["start"], ["s1", "s2", "s3"], ["f1", "f2"]]


async def test_switching_back_to_one_at_a_time_mid_run() -> None:
    agent, model, gates, _ = _gated_agent(steering_mode="all")

    def queue_then_switch() -> None:
        for text in ("s1", "s2"):
            agent.steer(text)
        agent.steering_mode = "one-at-a-time"

    await _while_tool_runs(agent, gates, queue_then_switch)
    assert _last_users(model) == [["start"], ["s1"], ["s2"]]
