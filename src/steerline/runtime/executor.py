"""Tool execution for one assistant message (SPEC §2.3 and §2.4).

Calls start in call order; every start re-checks whether the call must be
skipped (a steer under ``after_tool`` / ``immediate``, or an abort), so a
steer also skips calls waiting behind the parallelism cap. Every call gets
exactly one result: real, error, cancelled or skipped, with its
``tool_execution_start`` and ``tool_execution_end`` always emitted.

Result messages go to ``on_result`` (the run adds them to the context): in
``sequential`` mode each right after its own ``tool_execution_end``, before
the next call starts; in ``parallel`` mode all of them once the batch is
done, in call order (SPEC §2.3).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import anyio

from steerline.core.events import (
    AgentEvent,
    ToolExecutionEnd,
    ToolExecutionStart,
    ToolExecutionUpdate,
)
from steerline.core.messages import TextContent, ToolCall, ToolResultMessage
from steerline.tools.base import Tool, ToolContext, ToolError

ToolExecution = Literal["parallel", "sequential"]

SKIPPED_FOR_STEER = "Skipped due to queued user message."
CANCELLED_FOR_STEER = "Cancelled due to queued user message."
SKIPPED_FOR_ABORT = "Skipped due to abort."
CANCELLED_FOR_ABORT = "Cancelled due to abort."
SKIPPED_FOR_ERROR = "Skipped because the model reply failed."


@dataclass(slots=True)
class _Running:
    scope: anyio.CancelScope
    context: ToolContext
    cancel_reason: str | None = None


@dataclass(slots=True)
class ToolBatch:
    """Executes the calls of one assistant message.

    ``skip_reason`` is asked before each start; ``cancel`` (called by the run
    on abort or an ``immediate`` steer) stops the calls that are running.
    """

    tools: Mapping[str, Tool]
    emit: Callable[[AgentEvent], None]
    skip_reason: Callable[[], str | None]
    run_id: str
    mode: ToolExecution = "parallel"
    max_parallel: int = 8
    cancel_grace: float = 0.0
    on_result: Callable[[ToolResultMessage], None] = lambda result: None
    """Receives every result message once (see the module docstring for when)."""
    _running: dict[str, _Running] = field(default_factory=dict)
    _cancel_reason: str | None = None

    async def execute(self, calls: Sequence[ToolCall]) -> list[ToolResultMessage]:
        results: dict[str, ToolResultMessage] = {}
        cap = 1 if self.mode == "sequential" else max(1, self.max_parallel)
        slots = anyio.Semaphore(cap)
        async with anyio.create_task_group() as group:
            for call in calls:
                tool = self.tools.get(call.name)
                exclusive = cap > 1 and tool is not None and tool.sequential
                for _ in range(cap if exclusive else 1):
                    await slots.acquire()
                reason = self.skip_reason()
                if reason is not None:
                    for _ in range(cap if exclusive else 1):
                        slots.release()
                    self._record(call, self._skip(call, reason), results)
                    continue
                self._emit_start(call)
                group.start_soon(self._run_and_release, call, tool, results, slots, exclusive, cap)
        return self._collect(calls, results)

    def skip_all(self, calls: Sequence[ToolCall], reason: str) -> list[ToolResultMessage]:
        """Account for calls that will never run (the reply was cut or failed)."""
        results: dict[str, ToolResultMessage] = {}
        for call in calls:
            self._record(call, self._skip(call, reason), results)
        return self._collect(calls, results)

    def cancel(self, reason: str) -> None:
        """Signal every running call, and cancel it after the grace period.

        A call whose start was already emitted but whose task has not run yet
        counts as running: it is cancelled as soon as it registers.
        """
        self._cancel_reason = self._cancel_reason or reason
        for running in self._running.values():
            self._cancel_one(running, reason)

    def _cancel_one(self, running: _Running, reason: str) -> None:
        if running.cancel_reason is not None:
            return
        running.cancel_reason = reason
        running.context.cancelled.set()
        if self.cancel_grace > 0:
            deadline = anyio.current_time() + self.cancel_grace
            running.scope.deadline = min(running.scope.deadline, deadline)
        else:
            running.scope.cancel()

    # -- internals -----------------------------------------------------------
    async def _run_and_release(
        self,
        call: ToolCall,
        tool: Tool | None,
        results: dict[str, ToolResultMessage],
        slots: anyio.Semaphore,
        exclusive: bool,
        cap: int,
    ) -> None:
        try:
            self._record(call, await self._run(call, tool), results)
        finally:
            for _ in range(cap if exclusive else 1):
                slots.release()

    def _record(
        self, call: ToolCall, result: ToolResultMessage, results: dict[str, ToolResultMessage]
    ) -> None:
        results[call.id] = result
        if self.mode == "sequential":
            self.on_result(result)

    def _collect(
        self, calls: Sequence[ToolCall], results: dict[str, ToolResultMessage]
    ) -> list[ToolResultMessage]:
        ordered = [results[call.id] for call in calls]
        if self.mode != "sequential":
            for result in ordered:
                self.on_result(result)
        return ordered

    def _emit_start(self, call: ToolCall) -> None:
        self.emit(
            ToolExecutionStart(
                run_id=self.run_id, tool_call_id=call.id, tool_name=call.name, args=call.arguments
            )
        )

    async def _run(self, call: ToolCall, tool: Tool | None) -> ToolResultMessage:
        if tool is None:
            return self._end(call, f"Tool {call.name!r} not found.", is_error=True)
        if call.invalid_arguments is not None:
            return self._end(
                call, f"Invalid arguments for {call.name}: {call.invalid_arguments}", is_error=True
            )
        try:
            arguments = tool.validate(call.arguments)
        except ToolError as exc:
            return self._end(call, str(exc), is_error=True)

        def on_update(partial: str) -> None:
            self.emit(
                ToolExecutionUpdate(
                    run_id=self.run_id,
                    tool_call_id=call.id,
                    tool_name=call.name,
                    partial_result=partial,
                )
            )

        context = ToolContext(tool_call_id=call.id, tool_name=call.name, on_update=on_update)
        running = _Running(scope=anyio.CancelScope(), context=context)
        self._running[call.id] = running
        if self._cancel_reason is not None:
            self._cancel_one(running, self._cancel_reason)
        text, is_error = "", False
        try:
            with running.scope:
                try:
                    text = await tool.execute(arguments, context)
                except ToolError as exc:
                    text, is_error = str(exc), True
                except Exception as exc:
                    text, is_error = f"{type(exc).__name__}: {exc}", True
        finally:
            del self._running[call.id]
        if running.scope.cancelled_caught:
            text, is_error = running.cancel_reason or CANCELLED_FOR_ABORT, True
        elif running.cancel_reason is not None:
            # It stopped by itself within the grace period: still say it was cancelled.
            text = f"{running.cancel_reason} {text}".rstrip()
            is_error = True
        return self._end(call, text, is_error=is_error)

    def _skip(self, call: ToolCall, reason: str) -> ToolResultMessage:
        self._emit_start(call)
        return self._end(call, reason, is_error=True, skipped=True)

    def _end(
        self, call: ToolCall, text: str, *, is_error: bool, skipped: bool = False
    ) -> ToolResultMessage:
        self.emit(
            ToolExecutionEnd(
                run_id=self.run_id,
                tool_call_id=call.id,
                tool_name=call.name,
                result=text,
                is_error=is_error,
                skipped=skipped,
            )
        )
        return ToolResultMessage(
            tool_call_id=call.id,
            tool_name=call.name,
            content=[TextContent(text=text)],
            is_error=is_error,
            skipped=skipped,
        )
