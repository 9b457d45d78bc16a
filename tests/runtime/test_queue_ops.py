"""The queue is visible and editable; steering is race-safe (SPEC §2.9), library level.

``edit_queued`` / ``remove_queued`` / ``move_queued`` on the inbox and the
agent, the cause carried by every ``queue_update``, ``expected_run_id`` and
the acknowledgement fields of ``EnqueueResult``, and ``send_now``. Nothing
sleeps to synchronise: runs are held on gated tools.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steerline import (
    Agent,
    AgentBusyError,
    AgentEvent,
    InboxLimits,
    InvalidValueError,
    MessageTooLargeError,
    ScriptedModel,
    ScriptedReply,
    TextContent,
    UserMessage,
    encode_event,
)
from steerline.core.errors import (
    AlreadyDeliveredError,
    QueuedMessageNotFoundError,
    RunMismatchError,
)
from steerline.core.events import QueueChange, QueueUpdate
from steerline.runtime.inbox import LANES, Inbox, Lane, QueuedMessage

from .helpers import CANCELLED, Gates, Recorder, Runner

pytestmark = pytest.mark.anyio


def _ids(agent: Agent, lane: Lane) -> list[str]:
    return [m.id for m in agent.inbox.messages(lane)]


def _users(agent: Agent) -> list[tuple[str, str]]:
    return [(m.text, m.delivery) for m in agent.messages if isinstance(m, UserMessage)]


def _causes(rec: Recorder) -> list[QueueChange | None]:
    return [u.cause for u in rec.of_type("queue_update")]


def _gated_agent(**kwargs: Any) -> tuple[Agent, Gates, Recorder]:
    """An agent whose first reply calls the gated tool ``a``; then ``ok`` forever."""
    gates = Gates()
    model = ScriptedModel([ScriptedReply(tool_calls=[("a", {})])])
    agent = Agent(model=model, tools=[gates.tool("a")], **kwargs)
    return agent, gates, Recorder(agent)


# -- edit ------------------------------------------------------------------------


async def test_edit_replaces_content_in_place_and_priority_resorts() -> None:
    agent = Agent(model=ScriptedModel())
    for name in ("a", "b", "c"):
        agent.follow_up(name, id=name)
    rec = Recorder(agent)
    old_content = agent.inbox.find("b").content  # type: ignore[union-attr]

    edited = agent.edit_queued("b", content="bee")
    assert edited.id == "b" and edited.content == [TextContent(text="bee")]
    assert edited.content is not old_content  # a new list: a store sees the change
    assert _ids(agent, "follow_up") == ["a", "b", "c"]

    agent.edit_queued("c", priority=5)
    assert _ids(agent, "follow_up") == ["c", "a", "b"]
    # back to 0: arrival order among equals again (its arrival was kept)
    agent.edit_queued("c", priority=0, content=[TextContent(text="sea")])
    assert _ids(agent, "follow_up") == ["a", "b", "c"]
    assert agent.queue_snapshot().follow_up[2].content == [TextContent(text="sea")]

    assert _causes(rec) == [
        QueueChange(kind="edited", message_ids=["b"], lane="follow_up", position=1),
        QueueChange(kind="edited", message_ids=["c"], lane="follow_up", position=0),
        QueueChange(kind="edited", message_ids=["c"], lane="follow_up", position=2),
    ]


async def test_edit_is_checked_before_anything_changes() -> None:
    agent = Agent(model=ScriptedModel(), inbox_limits=InboxLimits(max_message_bytes=4))
    agent.steer("abc", id="s")
    rec = Recorder(agent)
    with pytest.raises(MessageTooLargeError):
        agent.edit_queued("s", content="abcde", priority=3)
    with pytest.raises(InvalidValueError):
        agent.edit_queued("s")  # nothing to edit
    message = agent.inbox.find("s")
    assert message is not None
    assert (message.content, message.priority) == ([TextContent(text="abc")], 0)
    assert rec.of_type("queue_update") == []


# -- remove ----------------------------------------------------------------------


async def test_remove_returns_the_message_and_keeps_its_id_known() -> None:
    agent = Agent(model=ScriptedModel())
    agent.steer("s1", id="s1")
    agent.steer("s2", id="s2")
    rec = Recorder(agent)
    removed = agent.remove_queued("s2")
    assert (removed.id, removed.lane) == ("s2", "steering")
    assert _ids(agent, "steering") == ["s1"]
    assert _causes(rec) == [
        QueueChange(kind="removed", message_ids=["s2"], lane="steering", position=1)
    ]
    assert agent.steer("again", id="s2").duplicate  # accepted once, so still a duplicate
    with pytest.raises(QueuedMessageNotFoundError):
        agent.remove_queued("s2")  # removed, not delivered: not found


# -- move ------------------------------------------------------------------------


async def test_promote_joins_the_steering_lane_after_its_priority_group() -> None:
    agent = Agent(model=ScriptedModel())
    agent.follow_up("f1", id="f1")  # the oldest message
    agent.steer("s1", id="s1")
    agent.steer("s2", id="s2")
    agent.steer("low", id="low", priority=-1)
    rec = Recorder(agent)
    moved = agent.move_queued("f1", lane="steering")
    assert moved.lane == "steering"
    # as if it arrived now: after the steers of its priority, before lower ones
    assert _ids(agent, "steering") == ["s1", "s2", "f1", "low"]
    assert _ids(agent, "follow_up") == []
    assert _causes(rec) == [
        QueueChange(kind="moved", message_ids=["f1"], lane="steering", position=2)
    ]


async def test_demote_clears_interrupt_and_keeps_priority() -> None:
    agent = Agent(model=ScriptedModel())
    agent.steer("urgent", id="u", priority=2, interrupt=True)
    agent.follow_up("f1", id="f1", priority=5)
    agent.follow_up("f2", id="f2")
    moved = agent.move_queued("u", lane="follow_up")
    assert (moved.lane, moved.priority, moved.interrupt) == ("follow_up", 2, False)
    assert _ids(agent, "follow_up") == ["f1", "u", "f2"]
    assert not agent.inbox.has_interrupt()


async def test_move_before_takes_the_priority_and_the_place() -> None:
    agent = Agent(model=ScriptedModel())
    for name, priority in [("a", 5), ("b", 0), ("c", 0), ("d", 0), ("e", -1)]:
        agent.follow_up(name, id=name, priority=priority)
    agent.steer("s", id="s", priority=9)
    rec = Recorder(agent)

    # within a lane, into a dense group (arrivals b, c, d are consecutive)
    agent.move_queued("d", before="c")
    assert _ids(agent, "follow_up") == ["a", "b", "d", "c", "e"]
    # to the front of a lower group, taking its priority
    moved = agent.move_queued("a", before="e")
    assert moved.priority == -1
    assert _ids(agent, "follow_up") == ["b", "d", "c", "a", "e"]
    # from the other lane, before the head
    moved = agent.move_queued("s", lane="follow_up", before="b")
    assert (moved.lane, moved.priority) == ("follow_up", 0)
    assert _ids(agent, "follow_up") == ["s", "b", "d", "c", "a", "e"]
    assert agent.queue_snapshot().steering == []
    # later messages of the same priority still come after the group
    assert agent.follow_up("new", id="new").position == 4
    assert _ids(agent, "follow_up") == ["s", "b", "d", "c", "new", "a", "e"]
    assert [c.position for c in _causes(rec) if c is not None and c.kind == "moved"] == [2, 3, 0]


async def test_move_refuses_bad_targets_and_changes_nothing() -> None:
    agent = Agent(model=ScriptedModel())
    agent.steer("s", id="s")
    agent.follow_up("f", id="f")
    rec = Recorder(agent)
    with pytest.raises(InvalidValueError):
        agent.move_queued("s", before="f")  # f is not in the steering lane
    with pytest.raises(InvalidValueError):
        agent.move_queued("s", lane="follow_up", before="s")
    with pytest.raises(InvalidValueError):
        agent.move_queued("s", before="s")
    with pytest.raises(InvalidValueError):
        agent.move_queued("s")  # neither lane nor before
    with pytest.raises(InvalidValueError):
        agent.move_queued("s", lane="urgent")  # type: ignore[arg-type]
    assert (_ids(agent, "steering"), _ids(agent, "follow_up")) == (["s"], ["f"])
    assert rec.of_type("queue_update") == []
    # its own lane and no anchor: nothing moves, still one update
    agent.move_queued("s", lane="steering")
    assert _causes(rec) == [
        QueueChange(kind="moved", message_ids=["s"], lane="steering", position=0)
    ]


# -- unknown and delivered ids ---------------------------------------------------------


async def test_unknown_id_is_not_found_for_every_operation() -> None:
    agent = Agent(model=ScriptedModel())
    operations: list[Callable[[], QueuedMessage]] = [
        lambda: agent.edit_queued("nope", content="x"),
        lambda: agent.remove_queued("nope"),
        lambda: agent.move_queued("nope", lane="steering"),
    ]
    for operation in operations:
        with pytest.raises(QueuedMessageNotFoundError) as caught:
            operation()
        assert caught.value.code == "queued_message_not_found"
        assert "nope" in caught.value.message


async def test_a_delivered_id_is_already_delivered() -> None:
    agent = Agent(model=ScriptedModel())
    agent.follow_up("later", id="f1")
    agent.follow_up("removed", id="f2")
    agent.remove_queued("f2")
    await agent.prompt("hi", id="p1")  # delivers f1 as a follow-up too
    assert _users(agent) == [("hi", "prompt"), ("later", "follow_up")]
    for message_id in ("f1", "p1"):  # a queued message, and a prompt
        with pytest.raises(AlreadyDeliveredError) as caught:
            agent.edit_queued(message_id, content="too late")
        assert caught.value.code == "already_delivered"
        with pytest.raises(AlreadyDeliveredError):
            agent.move_queued(message_id, lane="steering")
        with pytest.raises(AlreadyDeliveredError):
            agent.remove_queued(message_id)
    with pytest.raises(QueuedMessageNotFoundError):
        agent.edit_queued("f2", content="removed, not delivered")


async def test_taken_then_returned_is_editable_again() -> None:
    inbox = Inbox()
    inbox.push("steering", "s", id="s")
    taken = inbox.take("steering")
    with pytest.raises(AlreadyDeliveredError):
        inbox.edit_queued("s", priority=1)  # held by a run for its next turn
    inbox.put_back(taken)
    assert inbox.edit_queued("s", priority=1).priority == 1


async def test_a_returned_message_goes_back_to_the_head() -> None:
    inbox = Inbox()
    for name in ("y", "z"):
        inbox.push("follow_up", name, id=name)
    inbox.push("steering", "x", id="x")
    taken = inbox.take("follow_up")  # y, held by a run
    inbox.move_queued("x", lane="follow_up", before="z")  # x takes y's old place
    inbox.put_back(taken)  # the run was aborted: y was there first
    assert [m.id for m in inbox.messages("follow_up")] == ["y", "x", "z"]
    keys = [m.sort_key() for m in inbox.messages("follow_up")]
    assert keys == sorted(set(keys))  # strictly ordered: no ties left behind


async def test_the_delivered_window_is_bounded() -> None:
    inbox = Inbox(limits=InboxLimits(dedup_window=2))
    for name in ("a", "b", "c"):
        inbox.push("follow_up", name, id=name)
        inbox.take("follow_up")
    with pytest.raises(QueuedMessageNotFoundError):
        inbox.remove_queued("a")  # fell out of both windows
    with pytest.raises(AlreadyDeliveredError):
        inbox.remove_queued("b")


# -- one queue_update per change, with its cause -----------------------------------------


async def test_every_change_is_one_queue_update_with_its_cause() -> None:
    agent = Agent(model=ScriptedModel())
    rec = Recorder(agent)
    agent.follow_up("f1", id="f1")
    agent.follow_up("f2", id="f2", priority=1)
    agent.steer("s1", id="s1")
    agent.edit_queued("f1", content="f1!")
    agent.move_queued("f1", lane="steering")
    agent.remove_queued("s1")
    agent.clear_queues("steering")
    taken = agent.inbox.take("follow_up")
    agent.inbox.put_back(taken)
    agent.clear_queues()
    expected = [
        QueueChange(kind="queued", message_ids=["f1"], lane="follow_up", position=0),
        QueueChange(kind="queued", message_ids=["f2"], lane="follow_up", position=0),
        QueueChange(kind="queued", message_ids=["s1"], lane="steering", position=0),
        QueueChange(kind="edited", message_ids=["f1"], lane="follow_up", position=1),
        QueueChange(kind="moved", message_ids=["f1"], lane="steering", position=1),
        QueueChange(kind="removed", message_ids=["s1"], lane="steering", position=0),
        QueueChange(kind="cleared", message_ids=["f1"], lane="steering", position=None),
        QueueChange(kind="taken", message_ids=["f2"], lane="follow_up", position=None),
        QueueChange(kind="returned", message_ids=["f2"], lane="follow_up", position=None),
        QueueChange(kind="cleared", message_ids=["f2"], lane=None, position=None),
    ]
    assert _causes(rec) == expected
    # each update shows the queue after its change
    move = rec.of_type("queue_update")[4]
    assert [m.id for m in move.steering] == ["s1", "f1"] and [m.id for m in move.follow_up] == [
        "f2"
    ]
    # the cause is part of the encoded native event
    encoded = json.loads(encode_event(move))
    assert encoded["cause"] == {
        "kind": "moved",
        "message_ids": ["f1"],
        "lane": "steering",
        "position": 1,
    }


async def test_a_run_taking_a_message_says_so() -> None:
    agent, gates, rec = _gated_agent()
    async with anyio.create_task_group() as group:
        runner = Runner(agent, group)
        runner.prompt("go")
        await gates.wait_started("a")
        agent.steer("s", id="s")
        gates.release()
        await runner.wait()
    kinds = [(c.kind, c.message_ids) for c in _causes(rec) if c is not None]
    assert kinds == [("queued", ["s"]), ("taken", ["s"])]
    assert all(isinstance(e, QueueUpdate) and e.run_id for e in rec.of_type("queue_update"))


# -- in a real run -------------------------------------------------------------------


async def test_promoted_follow_up_is_delivered_as_a_steer_before_the_other_follow_ups() -> None:
    agent, gates, rec = _gated_agent()
    async with anyio.create_task_group() as group:
        runner = Runner(agent, group)
        runner.prompt("go")
        await gates.wait_started("a")
        for name in ("f1", "f2", "f3"):
            agent.follow_up(name, id=name)
        agent.move_queued("f2", lane="steering")
        gates.release()
        result = await runner.wait()
    assert result.stop_reason == "completed"
    assert _users(agent) == [
        ("go", "prompt"),
        ("f2", "steer"),
        ("f1", "follow_up"),
        ("f3", "follow_up"),
    ]
    # after_tool: the running tool finished normally
    assert rec.tool_ends()["a"].result == "done a"


async def test_promoting_while_running_applies_the_steering_policy() -> None:
    agent, gates, rec = _gated_agent(steering_policy="immediate")
    async with anyio.create_task_group() as group:
        runner = Runner(agent, group)
        runner.prompt("go")
        await gates.wait_started("a")
        agent.follow_up("now", id="f1")
        assert not gates["a"].cancelled  # a follow-up does not interrupt
        agent.move_queued("f1", lane="steering")
        result = await runner.wait()
    assert result.stop_reason == "completed"
    assert gates["a"].cancelled and not gates["a"].finished
    assert rec.tool_ends()["a"].result == CANCELLED
    assert _users(agent)[1] == ("now", "steer")


async def test_moving_within_the_steering_lane_is_not_a_new_steer() -> None:
    agent, gates, _ = _gated_agent()
    async with anyio.create_task_group() as group:
        runner = Runner(agent, group)
        runner.prompt("go")
        await gates.wait_started("a")
        agent.steer("s1", id="s1")
        agent.steer("s2", id="s2")
        agent.steering_policy = "immediate"
        agent.move_queued("s2", before="s1")
        agent.edit_queued("s1", priority=3)
        assert not gates["a"].cancelled
        gates.release()
        await runner.wait()
    assert [text for text, _ in _users(agent)] == ["go", "s1", "s2"]


# -- race-safe steer and the acknowledgement ----------------------------------------------


async def test_acknowledgement_says_lane_position_and_the_run_that_takes_it() -> None:
    agent, gates, _ = _gated_agent()
    idle = agent.follow_up("early", id="early")
    assert (idle.lane, idle.position, idle.run_id) == ("follow_up", 0, None)
    async with anyio.create_task_group() as group:
        runner = Runner(agent, group)
        runner.prompt("go", run_id="run-1")
        await gates.wait_started("a")
        steer = agent.steer("s", id="s", expected_run_id="run-1")
        assert (steer.lane, steer.position, steer.run_id, steer.duplicate) == (
            "steering",
            0,
            "run-1",
            False,
        )
        # an interrupt steer reports its position at acceptance
        urgent = agent.steer("u", id="u", priority=-1, interrupt=True)
        assert (urgent.position, urgent.run_id) == (1, "run-1")
        follow = agent.follow_up("f", id="f", expected_run_id="run-1")
        assert (follow.lane, follow.position, follow.run_id) == ("follow_up", 1, "run-1")
        # a duplicate: where the message is now
        again = agent.follow_up("f", id="f")
        assert (again.duplicate, again.lane, again.position, again.run_id) == (
            True,
            "follow_up",
            -1,
            "run-1",
        )
        agent.abort()  # an aborting run takes nothing more
        late = agent.follow_up("late", id="late")
        assert late.run_id is None
        with pytest.raises(RunMismatchError):
            agent.steer("x", expected_run_id="run-1")
        await runner.wait()
    # the aborted run never reached its follow-ups: still queued, for a future run
    still_queued = agent.follow_up("f", id="early")
    assert still_queued.duplicate and still_queued.run_id is None
    assert _ids(agent, "follow_up") == ["early", "f", "late"]


async def test_stale_expected_run_id_is_refused_and_nothing_is_queued() -> None:
    agent, gates, rec = _gated_agent()
    with pytest.raises(RunMismatchError) as caught:
        agent.steer("idle", id="x1", expected_run_id="run-old")
    assert caught.value.code == "run_mismatch"
    assert (caught.value.expected, caught.value.actual) == ("run-old", None)
    async with anyio.create_task_group() as group:
        runner = Runner(agent, group)
        runner.prompt("go", run_id="run-2")
        await gates.wait_started("a")
        with pytest.raises(RunMismatchError) as caught:
            agent.follow_up("other", id="x2", expected_run_id="run-old")
        assert caught.value.actual == "run-2"
        gates.release()
        await runner.wait()
    with pytest.raises(RunMismatchError):
        agent.steer("ended", id="x3", expected_run_id="run-2")
    assert not agent.has_queued_messages()
    assert rec.of_type("queue_update") == []
    # nothing was remembered either: the ids can still be sent
    assert not agent.steer("idle", id="x1").duplicate
    # a retry of an accepted id is acknowledged as a duplicate, run or no run
    assert agent.steer("idle", id="x1", expected_run_id="run-2").duplicate


async def test_a_run_past_its_last_poll_does_not_take_new_messages() -> None:
    agent = Agent(model=ScriptedModel())
    seen: list[tuple[str | None, str | None]] = []

    def on_event(event: AgentEvent) -> None:
        if event.type == "agent_end":
            assert agent.run_id == event.run_id  # still the active run
            seen.append((agent.accepting_run_id, agent.follow_up("at end").run_id))
            with pytest.raises(RunMismatchError):
                agent.steer("too late", expected_run_id=event.run_id)

    agent.subscribe(on_event)
    await agent.prompt("hi")
    assert seen == [(None, None)]
    assert _ids(agent, "follow_up") != []  # waits for a future run


# -- send_now --------------------------------------------------------------------------


async def test_send_now_after_abort_delivers_the_kept_queue() -> None:
    agent, gates, _ = _gated_agent()
    async with anyio.create_task_group() as group:
        runner = Runner(agent, group)
        runner.prompt("go")
        await gates.wait_started("a")
        agent.follow_up("f1", id="f1")
        agent.steer("s1", id="s1")
        agent.abort()
        assert (await runner.wait()).stop_reason == "aborted"
    assert agent.messages[-1].role == "tool_result"  # the aborted turn's input
    assert (_ids(agent, "steering"), _ids(agent, "follow_up")) == (["s1"], ["f1"])
    model = agent.model
    assert isinstance(model, ScriptedModel)
    calls_before = len(model.streams)
    result = await agent.send_now(run_id="run-now")
    assert (result.run_id, result.stop_reason) == ("run-now", "completed")
    assert _users(agent) == [("go", "prompt"), ("s1", "steer"), ("f1", "follow_up")]
    # the first model call of the new run already had the steer
    first = model.requests[calls_before].messages[-1]
    assert isinstance(first, UserMessage) and first.id == "s1"
    assert not agent.has_queued_messages()


async def test_send_now_while_running_is_busy_and_with_nothing_queued_invalid() -> None:
    agent, gates, _ = _gated_agent()
    with pytest.raises(InvalidValueError):
        await agent.send_now()
    async with anyio.create_task_group() as group:
        runner = Runner(agent, group)
        runner.prompt("go")
        await gates.wait_started("a")
        agent.follow_up("f1", id="f1")
        with pytest.raises(AgentBusyError):
            await agent.send_now()
        assert _ids(agent, "follow_up") == ["f1"]
        gates.release()
        await runner.wait()
    assert _users(agent)[-1] == ("f1", "follow_up")


# -- property: random operations keep the lanes sorted and every id in one place ---------

_NAMES = [f"m{i}" for i in range(8)]
_names = st.sampled_from(_NAMES)
_lanes = st.sampled_from(LANES)
_priorities = st.integers(-1, 1)  # few values: equal-priority groups are common
_push = st.tuples(st.just("push"), _lanes, _names, _priorities)
_operation = st.one_of(
    _push,
    st.tuples(st.just("edit"), _names, st.none() | _priorities, st.booleans()),
    st.tuples(st.just("remove"), _names),
    st.tuples(st.just("move"), _names, st.none() | _lanes, st.none() | _names),
    st.tuples(st.just("move"), _names, st.none() | _lanes, _names),
    st.tuples(st.just("move"), _names, st.none(), _names),
    st.tuples(st.just("take"), _lanes),
    st.tuples(st.just("return")),
    st.tuples(st.just("mode"), _lanes, st.sampled_from(["one-at-a-time", "all"])),
)
_operations = st.builds(
    lambda prelude, rest: prelude + rest,
    st.lists(_push, min_size=3, max_size=8),
    st.lists(_operation, min_size=1, max_size=40),
)


def _lane_ids(inbox: Inbox) -> dict[Lane, list[str]]:
    return {lane: [m.id for m in inbox.messages(lane)] for lane in LANES}


def _check_invariants(inbox: Inbox, held: list[QueuedMessage], gone: set[str]) -> None:
    for lane in LANES:
        messages = inbox.messages(lane)
        assert all(m.lane == lane for m in messages)
        keys = [m.sort_key() for m in messages]
        # strictly: equal keys would make the next re-sort ambiguous
        assert all(x < y for x, y in itertools.pairwise(keys)), f"{lane}: {keys}"
    assert all(m.arrival <= inbox._arrivals for lane in LANES for m in inbox.messages(lane))
    places = [m.id for lane in LANES for m in inbox.messages(lane)] + [m.id for m in held]
    assert len(places) == len(set(places)), f"an id in two places: {places}"
    assert not (set(places) & gone)
    assert len(inbox) == len(places) - len(held)


@settings(max_examples=400, deadline=None)
@given(_operations)
def test_random_queue_operations_keep_lanes_sorted_and_ids_in_one_place(
    operations: list[tuple[Any, ...]],
) -> None:
    causes: list[QueueChange] = []
    inbox = Inbox(on_change=causes.append)
    held: list[QueuedMessage] = []  # taken, not yet returned
    gone: set[str] = set()  # removed (and not pushed again: ids stay known)
    for operation in operations:
        before_ids = _lane_ids(inbox)
        count = len(causes)
        kind = operation[0]
        concerned: str | None = None
        try:
            if kind == "push":
                _, lane, name, priority = operation
                result = inbox.push(lane, name, id=name, priority=priority)
                if not result.duplicate:
                    concerned = name
                    queue = inbox.messages(lane)
                    assert queue[result.position].id == name
                    # last of its priority group
                    assert all(m.priority < priority for m in queue[result.position + 1 :])
            elif kind == "edit":
                _, name, priority, new_text = operation
                old = inbox.find(name)
                old_position = inbox.messages(old.lane).index(old) if old else -1
                old_priority = old.priority if old else None
                edited = inbox.edit_queued(
                    name, content=f"{name}'" if new_text else None, priority=priority
                )
                concerned = name
                if priority is None or priority == old_priority:
                    assert inbox.messages(edited.lane).index(edited) == old_position
            elif kind == "remove":
                gone.add(inbox.remove_queued(operation[1]).id)
                concerned = operation[1]
            elif kind == "move":
                _, name, lane, anchor = operation
                original = inbox.find(name)
                original_lane = original.lane if original else None
                moved = inbox.move_queued(name, lane=lane, before=anchor)
                concerned = name
                order = [m.id for m in inbox.messages(moved.lane)]
                if anchor is not None:
                    assert order[order.index(name) + 1] == anchor
                    assert inbox.find(anchor).priority == moved.priority  # type: ignore[union-attr]
                elif lane != original_lane:
                    group = [m for m in inbox.messages(moved.lane) if m.priority == moved.priority]
                    assert group[-1] is moved  # joined as if it arrived now
            elif kind == "take":
                taken = inbox.take(operation[1])
                held += taken
                assert all(inbox.is_delivered(m.id) for m in taken)
            elif kind == "return":
                returning, held = held, []
                inbox.put_back(returning)
            else:
                inbox.set_mode(operation[1], operation[2])
        except (QueuedMessageNotFoundError, AlreadyDeliveredError, InvalidValueError) as error:
            assert len(causes) == count, "a refused operation changed something"
            assert _lane_ids(inbox) == before_ids
            if isinstance(error, AlreadyDeliveredError):
                assert any(m.id == operation[1] for m in held)
            _check_invariants(inbox, held, gone)
            continue
        if kind == "mode":
            assert len(causes) == count
        elif kind == "push" and concerned is None:
            assert len(causes) == count  # a duplicate changes nothing
        elif kind in ("take", "return") and len(causes) == count:
            pass  # an empty lane / nothing held: no change, no update
        else:
            assert len(causes) == count + 1, f"{operation}: {causes[count:]}"
            if concerned is not None:
                assert causes[-1].message_ids == [concerned]
        if concerned is not None:
            # every other message keeps its relative order
            after_ids = _lane_ids(inbox)
            for lane in LANES:
                others_before = [i for i in before_ids[lane] if i != concerned]
                others_after = [i for i in after_ids[lane] if i != concerned]
                assert others_after == others_before
        _check_invariants(inbox, held, gone)
    # whatever is held goes back where it belongs, still sorted
    inbox.put_back(held)
    _check_invariants(inbox, [], gone)
