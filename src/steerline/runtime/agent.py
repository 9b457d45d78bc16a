"""The public ``Agent``: a model, tools, an inbox and the runs between them.

All methods are meant to be called from the event loop's thread. ``steer``,
``follow_up``, ``abort`` and the queue operations (``edit_queued``,
``remove_queued``, ``move_queued``) are synchronous on purpose: they only
queue or signal, so a UI callback can call them without awaiting anything,
and the running turn reacts at its next checkpoint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Literal, get_args

import anyio
import anyio.lowlevel

from steerline.core.errors import (
    AgentBusyError,
    InvalidValueError,
    MessageTooLargeError,
    RunMismatchError,
    SteerlineError,
)
from steerline.core.events import AgentEvent, QueueChange, QueueUpdate
from steerline.core.ids import new_id
from steerline.core.messages import (
    AssistantMessage,
    Message,
    UserContent,
    UserMessage,
    as_user_content,
    content_size,
)
from steerline.models.base import Model
from steerline.runtime.executor import ToolExecution
from steerline.runtime.hub import EventCallback, EventHub, EventStream
from steerline.runtime.inbox import (
    LANES,
    DeliveryMode,
    EnqueueResult,
    Inbox,
    InboxLimits,
    InboxSnapshot,
    Lane,
    QueuedMessage,
    check_lane,
)
from steerline.runtime.retry import RetryPolicy
from steerline.runtime.run import Run, RunResult, RunSettings, SteeringPolicy
from steerline.tools.base import Tool

STEERING_POLICIES: tuple[SteeringPolicy, ...] = get_args(SteeringPolicy)
TOOL_EXECUTIONS: tuple[ToolExecution, ...] = get_args(ToolExecution)


def check_policy(value: str) -> SteeringPolicy:
    if value not in STEERING_POLICIES:
        raise InvalidValueError(
            f"unknown steering policy {value!r}; expected one of {', '.join(STEERING_POLICIES)}"
        )
    return value


def check_tool_execution(value: str) -> ToolExecution:
    if value not in TOOL_EXECUTIONS:
        raise InvalidValueError(
            f"unknown tool execution {value!r}; expected one of {', '.join(TOOL_EXECUTIONS)}"
        )
    return value


class Agent:
    """An interactive agent you can steer while it works (SPEC §2.7)."""

    def __init__(
        self,
        model: Model | None = None,
        tools: Iterable[Tool] = (),
        system_prompt: str = "",
        *,
        steering_mode: DeliveryMode = "one-at-a-time",
        follow_up_mode: DeliveryMode = "one-at-a-time",
        steering_policy: SteeringPolicy = "after_tool",
        tool_execution: ToolExecution = "parallel",
        max_parallel_tools: int = 8,
        retry: RetryPolicy | None = None,
        inbox_limits: InboxLimits | None = None,
        tool_cancel_grace: float = 0.0,
        messages: Iterable[Message] = (),
    ) -> None:
        if model is None:
            raise TypeError(
                "Agent needs a model: pass model=...; steerline.DemoModel() is the offline demo "
                "(or use steerline.demo_agent())"
            )
        self.model: Model = model
        self.tools: list[Tool] = list(tools)
        self.system_prompt = system_prompt
        self.steering_policy = steering_policy
        self.tool_execution = tool_execution
        self.max_parallel_tools = max_parallel_tools
        self.retry = retry or RetryPolicy()
        self.tool_cancel_grace = tool_cancel_grace
        self.messages: list[Message] = list(messages)
        """The conversation context, appended to by every run."""
        self._hub = EventHub()
        self.inbox = Inbox(
            limits=inbox_limits,
            steering_mode=steering_mode,
            follow_up_mode=follow_up_mode,
            on_change=self._queue_changed,
        )
        self._run: Run | None = None

    # -- settings ------------------------------------------------------------
    @property
    def steering_policy(self) -> SteeringPolicy:
        return self._steering_policy

    @steering_policy.setter
    def steering_policy(self, value: str) -> None:
        self._steering_policy = check_policy(value)
        if getattr(self, "_run", None) is not None:
            assert self._run is not None
            self._run.settings.steering_policy = self._steering_policy

    @property
    def tool_execution(self) -> ToolExecution:
        return self._tool_execution

    @tool_execution.setter
    def tool_execution(self, value: str) -> None:
        self._tool_execution = check_tool_execution(value)
        if getattr(self, "_run", None) is not None:
            assert self._run is not None
            self._run.settings.tool_execution = self._tool_execution

    @property
    def steering_mode(self) -> DeliveryMode:
        return self.inbox.mode("steering")

    @steering_mode.setter
    def steering_mode(self, value: DeliveryMode) -> None:
        self.inbox.set_mode("steering", value)

    @property
    def follow_up_mode(self) -> DeliveryMode:
        return self.inbox.mode("follow_up")

    @follow_up_mode.setter
    def follow_up_mode(self, value: DeliveryMode) -> None:
        self.inbox.set_mode("follow_up", value)

    # -- state ---------------------------------------------------------------
    @property
    def is_running(self) -> bool:
        return self._run is not None

    @property
    def run_id(self) -> str | None:
        """The id of the active run, if any."""
        return self._run.run_id if self._run is not None else None

    @property
    def accepting_run_id(self) -> str | None:
        """The run that would take a message queued now: the active run unless
        it is ending (aborted, or past its last poll); ``None`` otherwise."""
        run = self._run
        if run is None or run.aborted or run.stopping:
            return None
        return run.run_id

    def has_queued_messages(self, lane: Lane | None = None) -> bool:
        return self.inbox.has(check_lane(lane) if lane is not None else None)

    def queue_snapshot(self) -> InboxSnapshot:
        return self.inbox.snapshot()

    # -- running -------------------------------------------------------------
    async def prompt(
        self,
        content: str | list[UserContent],
        *,
        id: str | None = None,
        run_id: str | None = None,
        delivery: Literal["prompt", "steer", "follow_up"] = "prompt",
    ) -> RunResult:
        """Start a run with this message and wait for it to end.

        Raises ``AgentBusyError`` if a run is active: use ``steer`` or
        ``follow_up`` then. ``run_id`` lets a caller know the run's id before
        it starts (the server correlates log events with it).
        """
        self._ensure_idle()
        parts = as_user_content(content)
        self._check_size(parts)
        message = UserMessage(id=id or new_id("msg"), content=parts, delivery=delivery)
        self.inbox.remember(message.id)
        self.inbox.mark_delivered(message.id)  # the run's first turn adds it, always
        return await self._execute([message], poll_first=True, run_id=run_id)

    async def continue_(self, *, run_id: str | None = None) -> RunResult:
        """Start a run after a run ended (as pi-mono's ``continue``).

        If the context ends with input that awaits an answer (a user message
        or tool results), the run answers it first: its first model call is
        on the context as it is, with queued steering joining that turn (the
        P0 poll); follow-ups come after, as in any run. Otherwise the run
        starts from what is queued, steering lane first.
        """
        self._ensure_idle()
        if self.messages and not isinstance(self.messages[-1], AssistantMessage):
            return await self._execute([], poll_first=True, run_id=run_id)
        if not self.inbox.has():
            raise SteerlineError("nothing to continue: no queued message and no pending input")
        return await self._send_queued(run_id)

    async def send_now(self, *, run_id: str | None = None) -> RunResult:
        """Start a run with what is queued (SPEC §2.9) and wait for it to end.

        For an idle agent whose queue was kept (an abort, a model error, a
        restored conversation). The first turn gets what one delivery point
        takes per the delivery modes: the steering lane if it has anything,
        else the follow-up lane; the rest follows as in any run (steering
        after each turn, follow-ups when the agent would stop).

        Unlike ``continue_()``, the queued messages are delivered in the
        first turn even when the context ends with input awaiting an answer
        (the tool results of an aborted turn, a user message whose reply
        failed): the model answers that input and the queued messages in one
        call. When the context ends with an assistant message the two are
        the same. Raises ``AgentBusyError`` while a run is active and
        ``InvalidValueError`` when nothing is queued.
        """
        self._ensure_idle()
        if not self.inbox.has():
            raise InvalidValueError("nothing is queued to send")
        return await self._send_queued(run_id)

    async def _send_queued(self, run_id: str | None) -> RunResult:
        for lane in LANES:  # steering, then follow-up
            taken = self.inbox.take(lane)
            if taken:
                return await self._execute([], taken=taken, poll_first=False, run_id=run_id)
        raise AssertionError("the inbox was checked to be non-empty")  # pragma: no cover

    async def wait_for_idle(self) -> None:
        """Return once no run is active."""
        while self._run is not None:
            await self._run.done.wait()

    # -- the inbox -----------------------------------------------------------
    def steer(
        self,
        content: str | list[UserContent],
        *,
        id: str | None = None,
        priority: int = 0,
        interrupt: bool = False,
        expected_run_id: str | None = None,
    ) -> EnqueueResult:
        """Queue a steering message: it interrupts the running turn per policy.

        ``interrupt=True`` applies the ``immediate`` policy to this message.
        While idle, it waits for (and joins the first turn of) the next run.
        ``expected_run_id``: refuse (``RunMismatchError``, nothing queued)
        unless that run is the one that would take the message (see
        ``accepting_run_id``). A duplicate id is acknowledged as such without
        this check (its first request was accepted).
        """
        self._check_expected_run(expected_run_id, id)
        result = self.inbox.push("steering", content, id=id, priority=priority, interrupt=interrupt)
        if not result.duplicate and self._run is not None:
            self._run.on_steer(interrupt)
        return self._acknowledge(result)

    def follow_up(
        self,
        content: str | list[UserContent],
        *,
        id: str | None = None,
        priority: int = 0,
        expected_run_id: str | None = None,
    ) -> EnqueueResult:
        """Queue a message for when the agent would otherwise stop.

        ``expected_run_id`` as for ``steer``.
        """
        self._check_expected_run(expected_run_id, id)
        return self._acknowledge(self.inbox.push("follow_up", content, id=id, priority=priority))

    def edit_queued(
        self,
        id: str,
        content: str | list[UserContent] | None = None,
        priority: int | None = None,
    ) -> QueuedMessage:
        """Change a queued message's content and/or priority (SPEC §2.9).

        Raises ``QueuedMessageNotFoundError``, ``AlreadyDeliveredError``,
        ``MessageTooLargeError`` or ``InvalidValueError`` (neither given);
        nothing changes then. See ``Inbox.edit_queued``.
        """
        return self.inbox.edit_queued(id, content, priority)

    def remove_queued(self, id: str) -> QueuedMessage:
        """Take a queued message out undelivered and return it (SPEC §2.9)."""
        return self.inbox.remove_queued(id)

    def move_queued(
        self, id: str, lane: Lane | None = None, before: str | None = None
    ) -> QueuedMessage:
        """Change a queued message's lane and/or place it before another of the
        target lane, taking that one's priority (SPEC §2.9; ``Inbox.move_queued``).

        Promoting a message into the steering lane while a run is active acts
        like a new steer: the steering policy applies (``immediate`` cuts the
        stream at once, the others at their checkpoints).
        """
        current = self.inbox.find(id)
        promoted = current is not None and current.lane != "steering"
        message = self.inbox.move_queued(id, lane, before)
        if promoted and message.lane == "steering" and self._run is not None:
            self._run.on_steer(message.interrupt)
        return message

    def clear_queues(self, lane: Lane | None = None) -> list[QueuedMessage]:
        """Remove and return queued messages (one lane, or both)."""
        return self.inbox.clear(lane)

    def clear_steering_queue(self) -> list[QueuedMessage]:
        return self.inbox.clear("steering")

    def clear_follow_up_queue(self) -> list[QueuedMessage]:
        return self.inbox.clear("follow_up")

    def abort(self, clear_queues: bool = False) -> list[QueuedMessage]:
        """Stop the active run; queued messages stay unless ``clear_queues``.

        Returns the removed messages (empty unless ``clear_queues``).
        """
        if self._run is not None:
            self._run.abort()  # first: what the run took and did not deliver goes back
        return self.inbox.clear() if clear_queues else []

    # -- events --------------------------------------------------------------
    def events(self, *, max_buffer: int | None = None) -> EventStream:
        """Every event from now on, as an async iterator (close it when done)."""
        return self._hub.stream(max_buffer)

    def subscribe(self, callback: EventCallback) -> Callable[[], None]:
        """Call ``callback`` synchronously for every event; returns unsubscribe."""
        return self._hub.subscribe(callback)

    @property
    def event_count(self) -> int:
        """The ``seq`` of the last emitted event."""
        return self._hub.seq

    # -- internals -----------------------------------------------------------
    def _check_expected_run(self, expected_run_id: str | None, message_id: str | None) -> None:
        if expected_run_id is None:
            return
        if message_id is not None and self.inbox.is_duplicate(message_id):
            return
        actual = self.accepting_run_id
        if actual == expected_run_id:
            return
        if actual is not None:
            now = f"run {actual!r} is active"
        elif self._run is not None:
            now = f"run {self._run.run_id!r} is ending"
        else:
            now = "no run is active"
        raise RunMismatchError(
            f"expected run {expected_run_id!r}, but {now}; nothing was queued",
            expected=expected_run_id,
            actual=actual,
        )

    def _acknowledge(self, result: EnqueueResult) -> EnqueueResult:
        queued = self.inbox.find(result.message.id) is result.message
        return dataclasses.replace(result, run_id=self.accepting_run_id if queued else None)

    def _ensure_idle(self) -> None:
        if self._run is not None:
            raise AgentBusyError("a run is active; use steer() or follow_up()")

    def _check_size(self, parts: Sequence[UserContent]) -> None:
        size = content_size(list(parts))
        if size > self.inbox.limits.max_message_bytes:
            raise MessageTooLargeError(
                f"message is {size} bytes; the limit is {self.inbox.limits.max_message_bytes}"
            )

    def _settings(self) -> RunSettings:
        tools = {tool.spec.name: tool for tool in self.tools}
        return RunSettings(
            model=self.model,
            tools=tools,
            tool_specs=[tool.spec for tool in self.tools],
            system_prompt=self.system_prompt,
            steering_policy=self._steering_policy,
            tool_execution=self._tool_execution,
            max_parallel_tools=self.max_parallel_tools,
            retry=self.retry,
            tool_cancel_grace=self.tool_cancel_grace,
        )

    async def _execute(
        self,
        prompt: list[UserMessage],
        *,
        poll_first: bool,
        taken: list[QueuedMessage] | None = None,
        run_id: str | None = None,
    ) -> RunResult:
        run = Run(
            run_id=run_id or new_id("run"),
            settings=self._settings(),
            inbox=self.inbox,
            context=self.messages,
            emit=self._emit,
            taken=list(taken or ()),
        )
        self._run = run

        async def abort_when_cancelled() -> None:
            try:
                await anyio.sleep_forever()
            finally:
                if not run.done.is_set():
                    run.abort()

        # The run is shielded: a caller's cancellation (a timeout, a server
        # shutting down) becomes abort() through the watcher, so the run still
        # ends as an abort does (closed message, turn and tool calls, agent_end)
        # instead of leaving tool calls without results; then it propagates.
        failure: Exception | None = None
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(abort_when_cancelled)
                try:
                    with anyio.CancelScope(shield=True):
                        result = await run.execute(prompt, poll_first=poll_first)
                except Exception as exc:
                    failure = exc
                finally:
                    self._run = None
                group.cancel_scope.cancel()
        finally:
            if self._run is run:  # a new run may have started meanwhile
                self._run = None
        if failure is not None:
            raise failure
        await anyio.lowlevel.checkpoint_if_cancelled()
        return result

    def _emit(self, event: AgentEvent) -> None:
        self._hub.emit(event)

    def _queue_changed(self, cause: QueueChange) -> None:
        snapshot = self.inbox.snapshot()
        self._hub.emit(
            QueueUpdate(
                run_id=self.run_id or "",
                steering=snapshot.steering,
                follow_up=snapshot.follow_up,
                cause=cause,
            )
        )
