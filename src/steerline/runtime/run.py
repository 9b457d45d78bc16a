"""One run of the agent loop (SPEC §2.2): turns until the agent would stop.

A run owns the two things a steer or an abort may have to interrupt: the
cancel scope around the model stream and the tool batch in flight. Every poll
of the inbox and the final decision to stop happen without an ``await`` in
between, so a message can never slip between "nothing queued" and
``agent_end``.

A message taken from the inbox is held in ``Run.taken`` until it is added to
the context at the next turn. ``abort()`` puts what is still held back into
the inbox at once (a subscriber may abort from any event, ``turn_start``
included), so the aborted run never consumes a queued message (SPEC §2.5).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import anyio

from steerline.core.errors import ModelError
from steerline.core.events import (
    AgentEnd,
    AgentEvent,
    AgentStart,
    MessageDelta,
    MessageEnd,
    MessageStart,
    MessageUpdate,
    TurnEnd,
    TurnStart,
)
from steerline.core.messages import (
    AssistantMessage,
    Message,
    RunStopReason,
    ToolResultMessage,
    UserMessage,
)
from steerline.models.base import Model, ModelRequest, ToolSpec
from steerline.runtime.assembler import MessageAssembler
from steerline.runtime.executor import (
    CANCELLED_FOR_ABORT,
    CANCELLED_FOR_STEER,
    SKIPPED_FOR_ABORT,
    SKIPPED_FOR_ERROR,
    SKIPPED_FOR_STEER,
    ToolBatch,
    ToolExecution,
)
from steerline.runtime.inbox import Inbox, Lane, QueuedMessage
from steerline.runtime.retry import RetryPolicy
from steerline.tools.base import Tool

if TYPE_CHECKING:
    from collections.abc import Callable

SteeringPolicy = Literal["immediate", "after_tool", "after_turn"]
_DELIVERY: dict[Lane, Literal["steer", "follow_up"]] = {
    "steering": "steer",
    "follow_up": "follow_up",
}
ABORTED_MESSAGE = "Request was aborted"
"""The ``error_message`` of an aborted reply and of an aborted run."""


@dataclass(frozen=True, slots=True)
class RunResult:
    """How a run ended, and the messages it added to the context."""

    run_id: str
    stop_reason: RunStopReason
    messages: list[Message]
    error_message: str | None = None


@dataclass(slots=True)
class RunSettings:
    """The agent settings a run reads at each decision point (live values)."""

    model: Model
    tools: Mapping[str, Tool]
    tool_specs: Sequence[ToolSpec]
    system_prompt: str
    steering_policy: SteeringPolicy
    tool_execution: ToolExecution
    max_parallel_tools: int
    retry: RetryPolicy
    tool_cancel_grace: float


@dataclass(slots=True)
class Run:
    run_id: str
    settings: RunSettings
    inbox: Inbox
    context: list[Message]
    emit: Callable[[AgentEvent], None]
    aborted: bool = False
    stopping: bool = False
    """Past its last poll of the inbox (ending for any reason): it takes
    nothing more, so a message queued now waits for a future run."""
    done: anyio.Event = field(default_factory=anyio.Event)
    result: RunResult | None = None
    _stream_scope: anyio.CancelScope | None = None
    _stream_cut: bool = False
    _batch: ToolBatch | None = None
    _added: list[Message] = field(default_factory=list)
    taken: list[QueuedMessage] = field(default_factory=list)
    """Taken from the inbox, not yet in the context (``continue_`` hands the
    first ones over): delivered at the next turn, or put back by ``abort``."""

    # -- control from other tasks -------------------------------------------
    def on_steer(self, interrupt: bool) -> None:
        """A steer was queued: interrupt now if the policy (or message) says so."""
        if interrupt or self.settings.steering_policy == "immediate":
            self._interrupt(CANCELLED_FOR_STEER)

    def abort(self) -> None:
        self.aborted = True
        self._put_back()
        self._interrupt(CANCELLED_FOR_ABORT)

    def _interrupt(self, tool_reason: str) -> None:
        if self._stream_scope is not None:
            self._stream_cut = True
            self._stream_scope.cancel()
        if self._batch is not None:
            self._batch.cancel(tool_reason)

    # -- the loop ------------------------------------------------------------
    async def execute(self, prompt: list[UserMessage], *, poll_first: bool) -> RunResult:
        """Run to the end. ``prompt``: the caller's own input, added in the
        first turn even if the run is aborted before it (it gets the aborted
        reply); queued messages go first through ``taken``."""
        stop: RunStopReason = "completed"
        error_message: str | None = None
        self.emit(AgentStart(run_id=self.run_id))
        if poll_first:
            self._take("steering")
        try:
            while True:
                self.emit(TurnStart(run_id=self.run_id))
                self._deliver(prompt)
                prompt = []
                reply = await self._stream_reply()
                results = await self._tool_results(reply)
                self.emit(TurnEnd(run_id=self.run_id, message=reply, tool_results=results))
                if reply.stop_reason == "error":
                    stop, error_message = "error", reply.error_message
                    break
                if self.aborted:
                    stop, error_message = "aborted", ABORTED_MESSAGE
                    break
                if self._take("steering") or results:
                    continue
                if not self._take("follow_up"):
                    break
        finally:
            self.stopping = True
            self._put_back()
            self.result = RunResult(
                run_id=self.run_id,
                stop_reason=stop,
                messages=list(self._added),
                error_message=error_message,
            )
            self.emit(
                AgentEnd(
                    run_id=self.run_id,
                    messages=list(self._added),
                    stop_reason=stop,
                    error_message=error_message,
                )
            )
            self.done.set()
        return self.result

    def _take(self, lane: Lane) -> bool:
        """Poll ``lane`` (nothing once aborted); True if something was taken."""
        if self.aborted:
            return False
        taken = self.inbox.take(lane)
        self.taken += taken
        return bool(taken)

    def _deliver(self, prompt: list[UserMessage]) -> None:
        """Add the turn's new user messages: the prompt, then the taken ones.

        A taken message is added only while the run is not aborted; checked
        per message, since a subscriber may abort on any ``message_start``.
        """
        for message in prompt:
            self._add(message)
        while self.taken and not self.aborted:
            queued = self.taken.pop(0)
            delivery = _DELIVERY[queued.lane]
            self._add(UserMessage(id=queued.id, content=queued.content, delivery=delivery))

    def _put_back(self) -> None:
        """Return taken, undelivered messages to the inbox, at their positions."""
        if self.taken:
            taken, self.taken = self.taken, []
            self.inbox.put_back(taken)

    def _add(self, message: Message) -> None:
        self.context.append(message)
        self._added.append(message)
        self.emit(MessageStart(run_id=self.run_id, message=message))
        self.emit(MessageEnd(run_id=self.run_id, message=message))

    # -- model ---------------------------------------------------------------
    async def _stream_reply(self) -> AssistantMessage:
        """Stream one reply, retrying transient errors; never raises ModelError."""
        settings = self.settings
        attempt, delay = 0, 0.0
        while True:
            message = AssistantMessage(model=settings.model.name)
            self.emit(MessageStart(run_id=self.run_id, message=message))

            def on_delta(delta: MessageDelta, message: AssistantMessage = message) -> None:
                self.emit(MessageUpdate(run_id=self.run_id, message=message, delta=delta))

            assembler = MessageAssembler(message, on_delta)
            error = await self._attempt(assembler, delay)
            if self._stream_cut or self.aborted:
                self._stream_cut = False
                if self.aborted:
                    assembler.cut("aborted", ABORTED_MESSAGE)
                else:
                    assembler.cut("steered")
            elif error is None:
                assembler.finish()
            elif error.transient and attempt < settings.retry.max_retries:
                attempt += 1
                delay = settings.retry.delay(attempt, error.retry_after)
                assembler.cut("error", f"{error.message} (retrying, attempt {attempt + 1})")
                self.emit(MessageEnd(run_id=self.run_id, message=message))
                continue
            else:
                assembler.cut("error", error.message)
            self.context.append(message)
            self._added.append(message)
            self.emit(MessageEnd(run_id=self.run_id, message=message))
            return message

    async def _attempt(self, assembler: MessageAssembler, delay: float) -> ModelError | None:
        if self.aborted:
            return None  # aborted before the call (e.g. from turn_start): do not make it
        settings = self.settings
        request = ModelRequest(
            system_prompt=settings.system_prompt,
            messages=list(self.context),
            tools=settings.tool_specs,
        )
        stream = None
        error: ModelError | None = None
        with anyio.CancelScope() as scope:
            self._stream_scope = scope
            try:
                if delay > 0:
                    await anyio.sleep(delay)
                stream = settings.model.stream(request)
                async for part in stream:
                    assembler.feed(part)
            except ModelError as exc:
                error = exc
            except (OSError, TimeoutError) as exc:
                error = ModelError(f"{type(exc).__name__}: {exc}", transient=True)
            except Exception as exc:
                error = ModelError(f"{type(exc).__name__}: {exc}")
            finally:
                self._stream_scope = None
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    with anyio.CancelScope(shield=True):
                        await aclose()
        return error

    # -- tools ---------------------------------------------------------------
    async def _tool_results(self, reply: AssistantMessage) -> list[ToolResultMessage]:
        calls = reply.tool_calls
        if not calls:
            return []
        settings = self.settings
        batch = ToolBatch(
            tools=settings.tools,
            emit=self.emit,
            skip_reason=self._skip_reason,
            run_id=self.run_id,
            mode=settings.tool_execution,
            max_parallel=settings.max_parallel_tools,
            cancel_grace=settings.tool_cancel_grace,
            on_result=self._add,
        )
        if reply.stop_reason in ("aborted", "steered", "error"):
            reason = {
                "aborted": SKIPPED_FOR_ABORT,
                "steered": SKIPPED_FOR_STEER,
                "error": SKIPPED_FOR_ERROR,
            }[reply.stop_reason]
            return batch.skip_all(calls, reason)
        self._batch = batch
        try:
            return await batch.execute(calls)
        finally:
            self._batch = None

    def _skip_reason(self) -> str | None:
        if self.aborted:
            return SKIPPED_FOR_ABORT
        if self.settings.steering_policy == "after_turn":
            return SKIPPED_FOR_STEER if self.inbox.has_interrupt() else None
        return SKIPPED_FOR_STEER if self.inbox.has("steering") else None
