"""Property test: random interleavings of everything a user can do to a running agent.

Each example builds an agent on a ``ScriptedModel`` whose replies carry tool
calls (tools that await checkpoints, one that waits on a gate the test opens,
a sequential-only one, unknown tools, invalid arguments) and random model
errors, then applies a random list of operations (prompt, steer, follow-up,
abort, clear, continue, mode and policy changes, releasing the gate, letting
the loop run a few steps). Everything runs on checkpoints, never on the clock,
so an example is deterministic and hypothesis can shrink it.

Checked afterwards:

- every tool call gets exactly one result: one ``tool_execution_start`` and
  one ``tool_execution_end`` per call, one ``ToolResultMessage`` per call in
  the context, right after its assistant message and in call order;
- every accepted (non-duplicate) message is delivered exactly once, or is
  still queued, or was removed by a clear; prompts are delivered once;
- a run that was aborted consumed nothing that was queued at the abort;
- start/end events are balanced per run and only ``queue_update`` happens
  between ``agent_end`` and the next ``agent_start``;
- ``seq`` goes up by exactly one, and ``events()`` sees what callbacks see.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note
from hypothesis import strategies as st

from steerline import (
    Agent,
    AgentBusyError,
    AgentEvent,
    AssistantMessage,
    ModelError,
    RetryPolicy,
    RunResult,
    ScriptedError,
    ScriptedModel,
    ScriptedReply,
    SteerlineError,
    ToolContext,
    ToolResultMessage,
    UserMessage,
    tool,
)

IDS = [f"m{i}" for i in range(6)]

# -- strategies ------------------------------------------------------------------

tool_calls = st.one_of(
    st.builds(lambda n: ("work", {"n": n}), st.integers(0, 4)),
    st.just(("block", {})),
    st.just(("block", {})),
    st.just(("serial", {})),
    st.just(("missing", {})),
    st.just(("work", {"n": "many"})),
)
reply_with_calls = st.builds(
    lambda text, calls: ScriptedReply(text=text, tool_calls=calls),
    st.sampled_from(["", "thinking out loud", "a b c d e f"]),
    st.lists(tool_calls, max_size=3),
)
replies = st.lists(
    st.one_of(
        reply_with_calls,
        reply_with_calls,
        reply_with_calls,
        st.builds(
            lambda transient: ScriptedError(ModelError("scripted failure", transient=transient)),
            st.booleans(),
        ),
        st.just(ScriptedReply(text="partial answer", fail_after=ModelError("cut", transient=True))),
    ),
    max_size=8,
)
# the first reply always waits on the gate, so operations land on running tools
first_reply = st.builds(
    lambda before, after: ScriptedReply(text="start", tool_calls=[*before, ("block", {}), *after]),
    st.lists(tool_calls, max_size=1),
    st.lists(tool_calls, max_size=1),
)
replies = st.tuples(first_reply, replies).map(lambda pair: [pair[0], *pair[1]])
operations = st.lists(
    st.one_of(
        st.just(("prompt",)),
        st.just(("prompt",)),
        st.tuples(st.just("steer"), st.sampled_from(IDS), st.integers(-1, 1), st.booleans()),
        st.tuples(st.just("follow_up"), st.sampled_from(IDS), st.integers(-1, 1)),
        st.tuples(st.just("abort"), st.booleans()),
        st.tuples(st.just("clear"), st.sampled_from([None, "steering", "follow_up"])),
        st.just(("continue",)),
        st.tuples(st.just("steering_mode"), st.sampled_from(["one-at-a-time", "all"])),
        st.tuples(st.just("follow_up_mode"), st.sampled_from(["one-at-a-time", "all"])),
        st.tuples(st.just("policy"), st.sampled_from(["immediate", "after_tool", "after_turn"])),
        st.tuples(st.just("tool_execution"), st.sampled_from(["parallel", "sequential"])),
        st.just(("release",)),
        st.tuples(st.just("step"), st.integers(1, 6)),
        st.tuples(st.just("step"), st.integers(10, 40)),
    ),
    min_size=1,
    max_size=30,
).map(lambda ops: [("prompt",), *ops])


# -- the scenario ------------------------------------------------------------------


@dataclass
class World:
    agent: Agent
    gate: anyio.Event = field(default_factory=anyio.Event)
    opened: bool = False
    events: list[AgentEvent] = field(default_factory=list)
    streamed: list[AgentEvent] = field(default_factory=list)
    accepted: set[str] = field(default_factory=set)
    cleared: set[str] = field(default_factory=set)
    prompts: list[str] = field(default_factory=list)
    results: list[RunResult] = field(default_factory=list)
    queued_at_abort: dict[str, set[str]] = field(default_factory=dict)
    """run id -> ids queued when that run was aborted."""
    runs_started: int = 0


def make_tools(world: World) -> list[Any]:
    @tool
    async def work(n: int) -> str:
        """Awaits n checkpoints."""
        for _ in range(n):
            await anyio.lowlevel.checkpoint()
        return f"worked {n}"

    @tool
    async def block(context: ToolContext) -> str:
        """Waits until the test opens the gate."""
        await world.gate.wait()
        return "released"

    @tool(sequential=True)
    async def serial() -> str:
        """Never runs alongside another tool."""
        await anyio.lowlevel.checkpoint()
        return "serial done"

    return [work, block, serial]


async def scenario(reply_script: list[Any], ops: list[tuple[Any, ...]]) -> World:
    model = ScriptedModel(reply_script)
    agent = Agent(model=model, retry=RetryPolicy(max_retries=2, base_delay=0, jitter=0))
    world = World(agent=agent)
    agent.tools = make_tools(world)
    agent.subscribe(world.events.append)
    stream = agent.events()
    prompt_count = 0

    async def consume() -> None:
        async for event in stream:
            world.streamed.append(event)

    async with anyio.create_task_group() as group:
        group.start_soon(consume)

        async def start(run: Callable[[], Awaitable[RunResult]]) -> None:
            finished = anyio.Event()

            async def go() -> None:
                try:
                    world.results.append(await run())
                finally:
                    finished.set()

            world.runs_started += 1
            group.start_soon(go)
            while not agent.is_running and not finished.is_set():
                await anyio.lowlevel.checkpoint()

        for op in ops:
            kind = op[0]
            if kind == "prompt":
                prompt_count += 1
                pid = f"p{prompt_count}"
                if agent.is_running:
                    with pytest.raises(AgentBusyError):
                        await agent.prompt(pid, id=pid)
                else:
                    world.prompts.append(pid)
                    await start(lambda pid=pid: agent.prompt(pid, id=pid))  # type: ignore[misc]
            elif kind == "steer":
                result = agent.steer(op[1], id=op[1], priority=op[2], interrupt=op[3])
                assert result.duplicate == (op[1] in world.accepted)
                world.accepted.add(op[1])
            elif kind == "follow_up":
                result = agent.follow_up(op[1], id=op[1], priority=op[2])
                assert result.duplicate == (op[1] in world.accepted)
                world.accepted.add(op[1])
            elif kind == "abort":
                run_id = agent.run_id
                removed = agent.abort(clear_queues=op[1])
                assert op[1] or removed == []
                world.cleared.update(m.id for m in removed)
                if run_id is not None:
                    snapshot = agent.queue_snapshot()
                    world.queued_at_abort[run_id] = {
                        m.id for m in snapshot.steering + snapshot.follow_up
                    }
            elif kind == "clear":
                world.cleared.update(m.id for m in agent.clear_queues(op[1]))
            elif kind == "continue":
                if agent.is_running:
                    with pytest.raises(AgentBusyError):
                        await agent.continue_()
                elif agent.has_queued_messages() or (
                    agent.messages and not isinstance(agent.messages[-1], AssistantMessage)
                ):
                    await start(agent.continue_)
                else:
                    with pytest.raises(SteerlineError):
                        await agent.continue_()
            elif kind == "steering_mode":
                agent.steering_mode = op[1]
            elif kind == "follow_up_mode":
                agent.follow_up_mode = op[1]
            elif kind == "policy":
                agent.steering_policy = op[1]
            elif kind == "tool_execution":
                agent.tool_execution = op[1]
            elif kind == "release":
                world.gate.set()
                world.gate = anyio.Event()
            elif kind == "step":
                for _ in range(op[1]):
                    await anyio.lowlevel.checkpoint()

        # drain: open the gate for good and let every run end
        world.gate.set()
        with anyio.fail_after(10):
            while agent.is_running or len(world.results) < world.runs_started:
                await agent.wait_for_idle()
                await anyio.lowlevel.checkpoint()
            await anyio.wait_all_tasks_blocked()
        stream.close()
    return world


# -- the invariants ------------------------------------------------------------------


def check_event_structure(events: list[AgentEvent]) -> list[tuple[str, list[Any]]]:
    """Balanced start/end per run; returns (run_id, agent_end messages) per run."""
    runs: list[tuple[str, list[Any]]] = []
    run_id: str | None = None
    in_turn = False
    open_message: Any = None
    open_tools: set[str] = set()
    started_tools: set[str] = set()
    for event in events:
        kind = event.type
        if kind == "queue_update":
            assert event.run_id == (run_id or "")
            continue
        if run_id is None:
            assert kind == "agent_start", f"{kind} outside a run"
            run_id = event.run_id
            continue
        assert event.run_id == run_id
        if kind == "agent_end":
            assert not in_turn and open_message is None and not open_tools
            runs.append((run_id, event.messages))
            run_id = None
        elif kind == "turn_start":
            assert not in_turn
            in_turn = True
        elif kind == "turn_end":
            assert in_turn and open_message is None and not open_tools
            in_turn = False
        elif kind == "message_start":
            assert in_turn and open_message is None and not open_tools
            open_message = event.message
        elif kind == "message_update":
            assert event.message is open_message
            assert isinstance(open_message, AssistantMessage)
        elif kind == "message_end":
            assert event.message is open_message
            open_message = None
        elif kind == "tool_execution_start":
            assert in_turn and open_message is None
            assert event.tool_call_id not in started_tools
            started_tools.add(event.tool_call_id)
            open_tools.add(event.tool_call_id)
        elif kind == "tool_execution_update":
            assert event.tool_call_id in open_tools
        elif kind == "tool_execution_end":
            assert event.tool_call_id in open_tools
            open_tools.remove(event.tool_call_id)
        else:
            raise AssertionError(f"unexpected {kind} inside a run")
    assert run_id is None, "a run never ended"
    return runs


def check_tool_accounting(world: World) -> None:
    messages = world.agent.messages
    call_ids: list[str] = []
    for i, message in enumerate(messages):
        if not isinstance(message, AssistantMessage):
            continue
        ids = [call.id for call in message.tool_calls]
        call_ids += ids
        following = messages[i + 1 : i + 1 + len(ids)]
        assert [m.tool_call_id for m in following if isinstance(m, ToolResultMessage)] == ids
    results = Counter(m.tool_call_id for m in messages if isinstance(m, ToolResultMessage))
    assert results == Counter(call_ids)
    starts = Counter(e.tool_call_id for e in world.events if e.type == "tool_execution_start")
    ends = [e for e in world.events if e.type == "tool_execution_end"]
    assert starts == Counter(call_ids)
    assert Counter(e.tool_call_id for e in ends) == Counter(call_ids)
    by_id = {m.tool_call_id: m for m in messages if isinstance(m, ToolResultMessage)}
    for end in ends:
        result = by_id[end.tool_call_id]
        assert (end.result, end.is_error, end.skipped) == (
            result.text,
            result.is_error,
            result.skipped,
        )


def check_delivery(world: World) -> None:
    agent = world.agent
    delivered = Counter(m.id for m in agent.messages if isinstance(m, UserMessage))
    snapshot = agent.queue_snapshot()
    queued = [m.id for m in snapshot.steering + snapshot.follow_up]
    assert len(queued) == len(set(queued))
    assert set(delivered) <= world.accepted | set(world.prompts)
    for pid in world.prompts:
        assert delivered[pid] == 1, pid
    for mid in world.accepted:
        where = [delivered[mid] == 1, mid in queued, mid in world.cleared and mid not in delivered]
        assert delivered[mid] <= 1, f"{mid} delivered {delivered[mid]} times"
        assert sum(where) == 1, (mid, where)


def check_runs(world: World, runs: list[tuple[str, list[Any]]]) -> None:
    assert len(runs) == len(world.results) == world.runs_started
    ended = {result.run_id: result for result in world.results}
    for run_id, messages in runs:
        result = ended[run_id]
        assert result.messages == messages
        if run_id in world.queued_at_abort:
            assert result.stop_reason in ("aborted", "error")
            taken = {m.id for m in messages if isinstance(m, UserMessage)}
            assert not taken & world.queued_at_abort[run_id]
        if result.stop_reason == "error":
            assert result.error_message


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(reply_script=replies, ops=operations)
def test_random_interleavings_keep_the_invariants(
    reply_script: list[Any], ops: list[tuple[Any, ...]]
) -> None:
    world = anyio.run(scenario, reply_script, ops)
    assert world.streamed == world.events
    assert [e.seq for e in world.events] == list(range(1, len(world.events) + 1))
    runs = check_event_structure(world.events)
    check_tool_accounting(world)
    check_delivery(world)
    check_runs(world, runs)
    for result in world.results:
        note(f"run stop_reason={result.stop_reason}")
    for end in world.events:
        if end.type == "tool_execution_end":
            note(f"tool result: {end.result.split(':')[0][:40]}")
