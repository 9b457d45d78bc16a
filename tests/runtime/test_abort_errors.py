"""Abort, model errors and retries (SPEC §2.5)."""

from __future__ import annotations

import time

import anyio
import pytest

from steerline import (
    Agent,
    AssistantMessage,
    ModelError,
    RetryPolicy,
    ScriptedError,
    ScriptedModel,
    ScriptedReply,
    ToolContext,
    UserMessage,
    tool,
)

from .helpers import Gates, Recorder, Runner, is_text_delta

pytestmark = pytest.mark.anyio

LONG_TEXT = " ".join(f"word{i}" for i in range(300))
NO_WAIT = RetryPolicy(base_delay=0)


def _queue_both(agent: Agent) -> None:
    agent.steer("queued steer", id="s1")
    agent.follow_up("queued follow-up", id="f1")


def _assert_queues_intact(agent: Agent) -> None:
    snapshot = agent.queue_snapshot()
    assert [m.id for m in snapshot.steering] == ["s1"]
    assert [m.id for m in snapshot.follow_up] == ["f1"]
    assert agent.has_queued_messages("steering") and agent.has_queued_messages("follow_up")
    delivered = {m.id for m in agent.messages if isinstance(m, UserMessage)}
    assert not delivered & {"s1", "f1"}


def _assert_run_closed(rec: Recorder, stop_reason: str) -> None:
    types = rec.types()
    assert types[-3:] == ["message_end", "turn_end", "agent_end"] or types[-2:] == [
        "turn_end",
        "agent_end",
    ]
    assert types.count("turn_start") == types.count("turn_end")
    assert types.count("message_start") == types.count("message_end")
    assert rec.of_type("agent_end")[-1].stop_reason == stop_reason


async def test_abort_while_streaming_keeps_partial_text_and_queues() -> None:
    model = ScriptedModel([ScriptedReply(text=LONG_TEXT)], token_delay=0.01)
    agent = Agent(model=model)
    rec = Recorder(agent)
    async with anyio.create_task_group() as group:
        runner = Runner(agent, group)
        runner.prompt("talk")
        await rec.wait(lambda e: is_text_delta(e) and e.delta.delta == " word2")
        _queue_both(agent)  # after_tool: the steer does not cut the stream
        aborted_at = time.perf_counter()
        removed = agent.abort()
        result = await runner.wait(within=1)

    assert removed == []
    assert result.stop_reason == "aborted"
    closed_at = model.streams[0].closed_at
    assert closed_at is not None and closed_at - aborted_at < 0.05
    assert not model.streams[0].completed
    assert len(model.streams) == 1  # the queued steer was not served
    reply = agent.messages[-1]
    assert isinstance(reply, AssistantMessage)
    assert reply.stop_reason == "aborted"
    assert reply.text.startswith("word0 word1 word2")
    assert LONG_TEXT.startswith(reply.text) and reply.text != LONG_TEXT
    assert [m.role for m in agent.messages] == ["user", "assistant"]
    assert result.messages == agent.messages
    _assert_queues_intact(agent)
    _assert_run_closed(rec, "aborted")
    assert not agent.is_running


async def test_abort_while_tools_run_cancels_running_and_skips_the_rest() -> None:
    gates = Gates()
    model = ScriptedModel([ScriptedReply(text="two steps", tool_calls=[("a", {}), ("b", {})])])
    agent = Agent(
        model=model, tools=[gates.tool("a"), gates.tool("b")], tool_execution="sequential"
    )
    rec = Recorder(agent)
    async with anyio.create_task_group() as group:
        runner = Runner(agent, group)
        runner.prompt("work")
        await gates.wait_started("a")
        _queue_both(agent)
        agent.abort()
        result = await runner.wait(within=1)

    assert result.stop_reason == "aborted"
    assert gates["a"].cancelled and not gates["a"].finished
    assert gates["a"].context is not None and gates["a"].context.cancelled.is_set()
    assert not gates["b"].started.is_set()
    ends = rec.tool_ends()
    assert (ends["a"].result, ends["a"].is_error, ends["a"].skipped) == (
        "Cancelled due to abort.",
        True,
        False,
    )
    assert (ends["b"].result, ends["b"].is_error, ends["b"].skipped) == (
        "Skipped due to abort.",
        True,
        True,
    )
    # every call has its result in the context; no further model call
    assert [m.role for m in agent.messages] == ["user", "assistant", "tool_result", "tool_result"]
    assert agent.messages[1].text == "two steps"
    assert len(model.streams) == 1
    _assert_queues_intact(agent)
    _assert_run_closed(rec, "aborted")


async def test_abort_clear_queues_returns_the_removed_messages() -> None:
    model = ScriptedModel([ScriptedReply(text=LONG_TEXT)], token_delay=0.01)
    agent = Agent(model=model)
    rec = Recorder(agent)
    async with anyio.create_task_group() as group:
        runner = Runner(agent, group)
        runner.prompt("talk")
        await rec.wait(is_text_delta)
        _queue_both(agent)
        agent.follow_up("another", id="f2", priority=5)
        removed = agent.abort(clear_queues=True)
        result = await runner.wait(within=1)
    assert result.stop_reason == "aborted"
    assert [m.id for m in removed] == ["s1", "f2", "f1"]
    assert [m.lane for m in removed] == ["steering", "follow_up", "follow_up"]
    assert not agent.has_queued_messages()
    last_queue = rec.of_type("queue_update")[-1]
    assert last_queue.steering == [] and last_queue.follow_up == []


async def test_abort_when_idle_changes_nothing() -> None:
    agent = Agent(model=ScriptedModel())
    agent.follow_up("kept", id="f1")
    assert agent.abort() == []
    assert agent.has_queued_messages("follow_up")
    assert [m.id for m in agent.abort(clear_queues=True)] == ["f1"]


async def test_after_abort_continue_serves_the_kept_queue() -> None:
    model = ScriptedModel([ScriptedReply(text=LONG_TEXT)], token_delay=0.01)
    agent = Agent(model=model)
    rec = Recorder(agent)
    async with anyio.create_task_group() as group:
        runner = Runner(agent, group)
        runner.prompt("talk")
        await rec.wait(is_text_delta)
        _queue_both(agent)
        agent.abort()
        await runner.wait(within=1)
    model.token_delay = 0
    result = await agent.continue_()
    assert result.stop_reason == "completed"
    users = [(m.id, m.delivery) for m in agent.messages if isinstance(m, UserMessage)]
    assert users[1:] == [("s1", "steer"), ("f1", "follow_up")]
    assert not agent.has_queued_messages()


async def test_uncooperative_tool_is_torn_down_after_the_grace_period() -> None:
    started = anyio.Event()
    saw_signal = anyio.Event()

    @tool
    async def stubborn(context: ToolContext) -> str:
        """Ignores the first cancellation signal, then keeps running."""
        started.set()
        await context.cancelled.wait()
        saw_signal.set()
        await anyio.Event().wait()  # never returns by itself
        return "unreachable"

    model = ScriptedModel([ScriptedReply(tool_calls=[("stubborn", {})])])
    agent = Agent(model=model, tools=[stubborn], tool_cancel_grace=0.1)
    async with anyio.create_task_group() as group:
        runner = Runner(agent, group)
        runner.prompt("go")
        with anyio.fail_after(5):
            await started.wait()
        aborted_at = time.perf_counter()
        agent.abort()
        with anyio.fail_after(1):
            await saw_signal.wait()
        result = await runner.wait(within=2)
    elapsed = time.perf_counter() - aborted_at
    assert result.stop_reason == "aborted"
    assert 0.09 <= elapsed < 1.5
    assert agent.messages[-1].text == "Cancelled due to abort."


async def test_cooperative_tool_may_finish_within_the_grace_period() -> None:
    @tool
    async def tidy(context: ToolContext) -> str:
        """Stops cleanly when asked."""
        await context.cancelled.wait()
        return "stopped cleanly"

    model = ScriptedModel([ScriptedReply(tool_calls=[("tidy", {})])])
    agent = Agent(model=model, tools=[tidy], tool_cancel_grace=5)
    rec = Recorder(agent)
    async with anyio.create_task_group() as group:
        runner = Runner(agent, group)
        runner.prompt("go")
        await rec.wait_type("tool_execution_start")
        await anyio.wait_all_tasks_blocked()
        agent.abort()
        result = await runner.wait(within=1)
    assert result.stop_reason == "aborted"
    # its own words are kept, and the result still says it was cancelled (SPEC §2.4)
    assert agent.messages[-1].text == "Cancelled due to abort. stopped cleanly"
    assert agent.messages[-1].is_error


async def test_transient_errors_are_retried_within_one_run() -> None:
    model = ScriptedModel(
        [
            ScriptedError(ModelError("x", transient=True)),
            ScriptedError(ModelError("x", transient=True)),
            ScriptedReply(text="finally"),
        ]
    )
    agent = Agent(model=model, retry=NO_WAIT)
    rec = Recorder(agent)
    result = await agent.prompt("hi")
    assert result.stop_reason == "completed"
    assert result.error_message is None
    assert len(model.streams) == 3
    assert len(rec.of_type("agent_start")) == len(rec.of_type("agent_end")) == 1
    assert len(rec.of_type("turn_start")) == 1
    assert [m.role for m in agent.messages] == ["user", "assistant"]
    assert agent.messages[-1].text == "finally"
    # every attempt saw the same context
    assert all(r.messages == model.requests[0].messages for r in model.requests)


async def test_transient_errors_beyond_the_retry_budget_end_the_run() -> None:
    model = ScriptedModel([ScriptedError(ModelError("busy", transient=True))] * 3)
    agent = Agent(model=model, retry=RetryPolicy(max_retries=2, base_delay=0))
    result = await agent.prompt("hi")
    assert result.stop_reason == "error"
    assert len(model.streams) == 3
    assert result.error_message is not None and "busy" in result.error_message


async def test_connection_errors_count_as_transient() -> None:
    model = ScriptedModel([ScriptedError(ConnectionResetError("reset")), "ok"])  # type: ignore[arg-type]
    agent = Agent(model=model, retry=NO_WAIT)
    result = await agent.prompt("hi")
    assert result.stop_reason == "completed"
    assert len(model.streams) == 2


async def test_permanent_error_ends_the_run_keeping_message_and_queues() -> None:
    model = ScriptedModel(
        [ScriptedReply(text=LONG_TEXT, fail_after=ModelError("bad request"))], token_delay=0.001
    )
    agent = Agent(model=model, retry=NO_WAIT)
    rec = Recorder(agent)
    async with anyio.create_task_group() as group:
        runner = Runner(agent, group)
        runner.prompt("hi")
        await rec.wait(is_text_delta)
        _queue_both(agent)
        result = await runner.wait()

    assert result.stop_reason == "error"
    assert result.error_message == "bad request"
    assert len(model.streams) == 1  # permanent: no retry, the steer is not served
    reply = agent.messages[-1]
    assert isinstance(reply, AssistantMessage)
    assert (reply.stop_reason, reply.error_message) == ("error", "bad request")
    assert reply.text == LONG_TEXT
    end = rec.of_type("agent_end")[-1]
    assert (end.stop_reason, end.error_message) == ("error", "bad request")
    _assert_queues_intact(agent)
    _assert_run_closed(rec, "error")


async def test_immediate_model_error_and_unexpected_exception() -> None:
    model = ScriptedModel([ScriptedError(ModelError("denied")), ScriptedError(ValueError("bug"))])  # type: ignore[arg-type]
    agent = Agent(model=model, retry=NO_WAIT)
    first = await agent.prompt("one")
    assert (first.stop_reason, first.error_message) == ("error", "denied")
    second = await agent.prompt("two")
    assert second.stop_reason == "error"
    assert second.error_message is not None and "bug" in second.error_message
    assert len(model.streams) == 2


async def test_caller_cancellation_during_tools_ends_the_run_like_an_abort() -> None:
    """A cancelled ``prompt`` (timeout, shutdown) still closes everything it opened."""
    gates = Gates()
    model = ScriptedModel([ScriptedReply(tool_calls=[("a", {}), ("b", {})]), "next prompt"])
    agent = Agent(
        model=model, tools=[gates.tool("a"), gates.tool("b")], tool_execution="sequential"
    )
    rec = Recorder(agent)
    with anyio.CancelScope() as outer:
        async with anyio.create_task_group() as group:
            group.start_soon(agent.prompt, "work")
            await gates.wait_started("a")
            _queue_both(agent)
            outer.cancel()
    assert outer.cancelled_caught
    assert not agent.is_running
    assert gates["a"].cancelled
    ends = rec.tool_ends()
    assert ends["a"].result == "Cancelled due to abort."
    assert ends["b"].result == "Skipped due to abort."
    assert [m.role for m in agent.messages] == ["user", "assistant", "tool_result", "tool_result"]
    _assert_queues_intact(agent)
    _assert_run_closed(rec, "aborted")
    # the context is well formed for the next run
    agent.clear_queues()
    result = await agent.prompt("again")
    assert result.stop_reason == "completed"


async def test_caller_timeout_while_streaming_keeps_the_partial_message() -> None:
    model = ScriptedModel([ScriptedReply(text=LONG_TEXT)], token_delay=0.01)
    agent = Agent(model=model)
    rec = Recorder(agent)
    with pytest.raises(TimeoutError), anyio.fail_after(10) as scope:

        def expire_after_the_third_token(event: object) -> None:
            if sum(1 for e in rec.events if is_text_delta(e)) == 3:
                scope.deadline = anyio.current_time()  # the caller's deadline passes now

        agent.subscribe(expire_after_the_third_token)
        await agent.prompt("talk")
    assert not agent.is_running
    reply = agent.messages[-1]
    assert isinstance(reply, AssistantMessage)
    assert reply.stop_reason == "aborted" and reply.text.startswith("word0")
    assert model.streams[0].closed_at is not None
    _assert_run_closed(rec, "aborted")


def test_retry_policy_backs_off_exponentially_and_honours_retry_after() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=3, jitter=0)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 3.0]
    assert policy.delay(1, retry_after=2.5) == 2.5
    assert policy.delay(3, retry_after=0.1) == 2.0
    assert policy.delay(1, retry_after=60) == 3.0
    jittered = RetryPolicy(base_delay=1, jitter=0.2)
    assert all(0.8 <= jittered.delay(1) <= 1.2 for _ in range(50))
    assert RetryPolicy().max_retries == 3


async def test_abort_during_the_retry_backoff_ends_the_run_at_once() -> None:
    model = ScriptedModel([ScriptedError(ModelError("429", transient=True)), "never"])
    agent = Agent(model=model, retry=RetryPolicy(base_delay=30, jitter=0))
    rec = Recorder(agent)
    async with anyio.create_task_group() as group:
        runner = Runner(agent, group)
        runner.prompt("hi")
        # the failed attempt ended; the retry's message started and waits 30 s
        await rec.wait(lambda e: e.type == "message_end" and e.message.role == "assistant")
        await rec.wait(
            lambda e: (
                e.type == "message_start"
                and e.message.role == "assistant"
                and e.message.stop_reason is None
            )
        )
        agent.abort()
        result = await runner.wait(within=1)
    assert result.stop_reason == "aborted"
    assert len(model.streams) == 1
    failed = [e.message for e in rec.of_type("message_end") if e.message.role == "assistant"]
    assert failed[0].stop_reason == "error" and "retrying" in (failed[0].error_message or "")
    assert agent.messages[-1].stop_reason == "aborted"
