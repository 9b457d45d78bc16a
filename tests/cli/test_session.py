"""The in-process chat session: what each key does to the agent, without a terminal."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from steerline.cli.session import LocalSession
from steerline.cli.transcript import line_text
from steerline.core.events import AgentEnd, AgentEvent, ToolExecutionStart
from steerline.core.messages import UserMessage
from steerline.models.demo import DemoModel
from steerline.runtime.agent import Agent
from steerline.runtime.hub import EventStream
from steerline.runtime.inbox import InboxLimits
from steerline.tools.builtin import demo_tools

pytestmark = pytest.mark.anyio


@pytest.fixture
async def session() -> AsyncIterator[LocalSession]:
    agent = Agent(model=DemoModel(), tools=demo_tools(), inbox_limits=InboxLimits(max_messages=3))
    local = LocalSession(agent)
    async with anyio.create_task_group() as group:
        await group.start(local.run)
        yield local
        await local.aclose()
        group.cancel_scope.cancel()


async def _until(events: EventStream, kind: type[AgentEvent]) -> AgentEvent:
    with anyio.fail_after(10):
        async for event in events:
            if isinstance(event, kind):
                return event
    raise AssertionError("event stream ended")


def _users(agent: Agent) -> list[tuple[str, str]]:
    return [(m.delivery, m.text) for m in agent.messages if isinstance(m, UserMessage)]


def _lines(session: LocalSession) -> list[str]:
    return [line_text(line) for line in session.transcript.take_committed()]


async def test_enter_starts_a_run_when_idle_and_steers_while_running(
    session: LocalSession,
) -> None:
    agent = session.agent
    events = agent.events()
    session.send('/call sleep {"seconds": 0.2}\nbusy')
    assert session.running  # at once: a second Enter steers instead of failing
    await _until(events, ToolExecutionStart)
    session.send("change of plan")
    await _until(events, AgentEnd)
    assert _users(agent) == [
        ("prompt", '/call sleep {"seconds": 0.2}\nbusy'),
        ("steer", "change of plan"),
    ]
    assert "Echo: change of plan" in _lines(session)


async def test_alt_enter_follows_up_and_alt_i_interrupts(session: LocalSession) -> None:
    agent = session.agent
    events = agent.events()
    session.send('/call sleep {"seconds": 30}\nbusy')
    await _until(events, ToolExecutionStart)
    session.follow_up("and then?")
    assert [item.text for item in session.transcript.follow_up] == ["and then?"]
    session.interrupt("stop now")
    await _until(events, AgentEnd)
    assert _users(agent)[1:] == [("steer", "stop now"), ("follow_up", "and then?")]
    assert "  ✗ sleep: Cancelled due to queued user message." in _lines(session)


async def test_esc_keeps_the_queue_and_enter_on_empty_sends_it(session: LocalSession) -> None:
    agent = session.agent
    events = agent.events()
    session.send('/call sleep {"seconds": 30}\nbusy')
    await _until(events, ToolExecutionStart)
    session.follow_up("later")
    session.abort()
    end = await _until(events, AgentEnd)
    assert isinstance(end, AgentEnd) and end.stop_reason == "aborted"
    with anyio.fail_after(5):
        await session.wait_idle()
    assert session.has_queue and [i.text for i in session.transcript.queued] == ["later"]
    assert "Enter on an empty input sends the kept queue" in line_text(
        session.transcript.queue_lines()[-1]
    )
    _lines(session)
    session.send_queue()
    await _until(events, AgentEnd)
    assert _users(agent)[-1] == ("follow_up", "later")
    assert not session.has_queue
    # as the server's ``POST …/queue/send``: the kept message goes in the first turn,
    # the model does not first answer the aborted turn's cancelled tool results alone
    lines = _lines(session)
    answers = [line for line in lines if line.startswith(("Echo:", "Results:"))]
    assert answers == ["Echo: later"], lines


async def test_alt_up_takes_the_queue_back(session: LocalSession) -> None:
    session.follow_up("one")
    session.follow_up("two")
    assert await session.take_queue() == ["one", "two"]
    assert not session.has_queue and session.transcript.queued == []


async def test_a_steer_typed_as_the_run_ends_is_not_stranded(session: LocalSession) -> None:
    agent = session.agent
    events = agent.events()
    session.send("hi")
    await _until(events, AgentEnd)
    assert session.running  # the run task has not returned yet
    session.send("just in time")  # queued as a steer after the last poll
    with anyio.fail_after(10):
        await session.wait_idle()
    assert _users(agent)[-1] == ("steer", "just in time")
    assert not session.has_queue


async def test_refusals_become_notices(session: LocalSession) -> None:
    for text in ("a", "b", "c", "d"):
        session.follow_up(text)  # the inbox takes 3
    assert _lines(session)[-1].startswith("not sent: ")
    await session.take_queue()
    session.send_queue()
    assert _lines(session) == ["the queue is empty: nothing to send"]
