"""Native events → wire events, in one place (SPEC §3.2 mapping).

thread = one delivered user message and the agent work it causes; task = the
run; item = a paragraph, a reasoning block or a tool call. The translator is
stateful per conversation: it remembers the current thread and the item ids
of open blocks.

Decisions where the spec is silent (see docs/protocol.md):
* streamed text is sent as ``message_chunk`` only; ``message`` is reserved
  for whole, non-streamed messages, so history merging never counts text twice;
* ``tool_execution_update`` (partial tool output) is not put on the wire;
* a retried model attempt's discarded message produces no wire event.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import msgspec

from steerline.core.events import (
    AgentEnd,
    AgentEvent,
    AgentStart,
    MessageStart,
    MessageUpdate,
    QueuedMessageView,
    QueueUpdate,
    ToolExecutionEnd,
    ToolExecutionStart,
)
from steerline.core.ids import new_id
from steerline.core.messages import TextContent, UserMessage, content_size
from steerline.wire.envelope import EventName, UnifiedResponseData, WireRole, encode_unsealed
from steerline.wire.payloads import (
    Content,
    Delivery,
    Done,
    MessageQueued,
    Payload,
    QueuedSummary,
    QueueUpdated,
    SystemFailed,
    TaskEnded,
    ThreadMetadata,
    ToolCallCompleted,
    ToolCallStarted,
)

PREVIEW_CHARS = 200
"""``queue_updated`` shows each queued message as its id and the start of its
text, not its whole body: the event is written at every queue change, and
copying up to 100 x 64 KiB into the log each time is what let one tenant fill
gigabytes. The bodies are served by ``GET …/queue``."""


def queued_summary(message: QueuedMessageView) -> QueuedSummary:
    """A queued message as ``queue_updated`` shows it (bounded size)."""
    text = "".join(part.text for part in message.content if isinstance(part, TextContent))
    images = sum(1 for part in message.content if not isinstance(part, TextContent))
    return QueuedSummary(
        id=message.id,
        preview=text[:PREVIEW_CHARS],
        truncated=len(text) > PREVIEW_CHARS,
        size=content_size(message.content),
        priority=message.priority,
        created_at=message.created_at,
        images=images or None,
    )


Sink = Callable[[EventName, bytes, str | None], None]
"""Receives (event name, envelope without ``seq``, run id) for every wire event, in order."""

_encode_text = msgspec.json.Encoder().encode
_CONTENT_TAIL = b'""}}}'
"""How an envelope whose payload is ``{"content": ""}`` ends (``payload`` is its last field)."""

_END_EVENT = {
    "completed": EventName.TASK_COMPLETED,
    "aborted": EventName.TASK_CANCELLED,
    "error": EventName.TASK_FAILED,
}


def conversation_started(conversation_id: str, agent_name: str) -> UnifiedResponseData:
    """A conversation's first event (the store writes it with the record)."""
    return UnifiedResponseData(
        conversation_id=conversation_id,
        role="system",
        item_id=new_id("item"),
        agent_name=agent_name,
    )


def tool_result_json(result: str) -> str:
    """A tool result as ValueCell's server sends it: the JSON text of
    ``[{"content": result}]`` (ValueCell's tool card parses exactly that)."""
    return json.dumps([{"content": result}], ensure_ascii=False)


def tool_result_text(value: str) -> str:
    """The inverse of :func:`tool_result_json` (other text passes through)."""
    try:
        parts = json.loads(value)
    except ValueError:
        return value
    if isinstance(parts, list) and all(isinstance(p, dict) for p in parts):
        return "".join(str(p.get("content", "")) for p in parts)
    return value


def _failed_payload(message: str) -> TaskEnded:
    """``task_failed``'s payload (SPEC §3.2): ``content`` is what ValueCell's UI shows."""
    return TaskEnded(stop_reason="error", error=message, content=message)


class RunTranslator:
    """Translates one conversation's native events and hands them to ``sink``."""

    def __init__(self, conversation_id: str, agent_name: str, sink: Sink) -> None:
        self.conversation_id = conversation_id
        self.agent_name = agent_name
        self._sink = sink
        self.thread_id: str | None = None
        self.task_id: str | None = None
        self._block_items: dict[int, str] = {}
        self._delta_key: tuple[EventName, str, str | None, str | None] | None = None
        self._delta_prefix = b""
        """The encoded envelope of the open block's deltas up to ``{"content":``."""

    # -- events the service emits itself ---------------------------------------
    def emit(
        self,
        event: EventName,
        role: WireRole,
        *,
        payload: Payload | None = None,
        metadata: ThreadMetadata | None = None,
        item_id: str | None = None,
        task_id: str | None = None,
        thread_id: str | None = None,
    ) -> None:
        data = UnifiedResponseData(
            conversation_id=self.conversation_id,
            role=role,
            item_id=item_id or new_id("item"),
            thread_id=(thread_id if thread_id is not None else self.thread_id) or None,
            task_id=(task_id if task_id is not None else self.task_id) or None,
            agent_name=self.agent_name,
            payload=payload,
            metadata=metadata,
        )
        self._sink(event, encode_unsealed(event, data), data.task_id)

    def delta(self, event: EventName, item_id: str | None, text: str) -> None:
        """A ``message_chunk`` / ``reasoning`` of one block: the per-token path.

        Every delta of a block has the same envelope but for its text, so the
        part before the text is encoded once per block and each token costs
        one string encode and a concatenation (byte-identical to :meth:`emit`,
        which a test checks).
        """
        if item_id is None:
            self.emit(event, "agent", payload=Content(content=text))
            return
        key = (event, item_id, self.thread_id, self.task_id)
        if key != self._delta_key:
            template = encode_unsealed(
                event,
                UnifiedResponseData(
                    conversation_id=self.conversation_id,
                    role="agent",
                    item_id=item_id,
                    thread_id=self.thread_id or None,
                    task_id=self.task_id or None,
                    agent_name=self.agent_name,
                    payload=Content(content=""),
                ),
            )
            assert template.endswith(_CONTENT_TAIL)
            self._delta_key, self._delta_prefix = key, template[: -len(_CONTENT_TAIL)]
        self._sink(
            event, b"%s%s}}}" % (self._delta_prefix, _encode_text(text)), self.task_id or None
        )

    def conversation_started(self) -> None:
        data = conversation_started(self.conversation_id, self.agent_name)
        self._sink(
            EventName.CONVERSATION_STARTED,
            encode_unsealed(EventName.CONVERSATION_STARTED, data),
            None,
        )

    def message_queued(self, message_id: str, delivery: Delivery, position: int) -> None:
        self.emit(
            EventName.MESSAGE_QUEUED,
            "system",
            payload=MessageQueued(message_id=message_id, delivery=delivery, position=position),
        )

    def run_failed(
        self, run_id: str, code: str, message: str, thread_id: str | None = None
    ) -> None:
        """End a run that cannot end by itself (its process died): SPEC §4 recovery.

        ``thread_id``: the run's last thread (recovery reads it from the log),
        so ValueCell's UI attaches the failure to that thread, not a new one.
        """
        self.task_id = run_id
        if thread_id is not None:
            self.thread_id = thread_id
        self.emit(
            EventName.SYSTEM_FAILED,
            "system",
            payload=SystemFailed(code=code, message=message, content=message),
        )
        self.emit(EventName.TASK_FAILED, "agent", payload=_failed_payload(message))
        self.emit(EventName.DONE, "system", payload=Done(stop_reason="error"))
        self.task_id = None

    # -- native events ---------------------------------------------------------
    def __call__(self, event: AgentEvent) -> None:
        if isinstance(event, MessageUpdate):
            self.message_update(event)
        elif isinstance(event, ToolExecutionStart):
            self.emit(
                EventName.TOOL_CALL_STARTED,
                "agent",
                item_id=event.tool_call_id,
                payload=ToolCallStarted(
                    tool_call_id=event.tool_call_id, tool_name=event.tool_name, tool_args=event.args
                ),
            )
        elif isinstance(event, ToolExecutionEnd):
            self.emit(
                EventName.TOOL_CALL_COMPLETED,
                "agent",
                item_id=event.tool_call_id,
                payload=ToolCallCompleted(
                    tool_call_id=event.tool_call_id,
                    tool_name=event.tool_name,
                    tool_result=tool_result_json(event.result),
                    is_error=event.is_error,
                    skipped=event.skipped,
                ),
            )
        elif isinstance(event, MessageStart) and isinstance(event.message, UserMessage):
            message = event.message
            self.thread_id = new_id("thread")
            self.emit(
                EventName.THREAD_STARTED,
                "user",
                item_id=message.id,
                payload=Content(content=message.text),
                metadata=ThreadMetadata(delivery=message.delivery, message_id=message.id),
            )
        elif isinstance(event, QueueUpdate):
            self.emit(
                EventName.QUEUE_UPDATED,
                "system",
                payload=QueueUpdated(
                    steering=[queued_summary(m) for m in event.steering],
                    follow_up=[queued_summary(m) for m in event.follow_up],
                ),
            )
        elif isinstance(event, AgentStart):
            self.task_id = event.run_id
            self.thread_id = None  # the run's threads start with its first message
            self.emit(EventName.TASK_STARTED, "agent")
        elif isinstance(event, AgentEnd):
            # an aborted run carries "Request was aborted" natively; on the wire
            # only a failure has an error (a client shows task_cancelled as such)
            ended = (
                _failed_payload(event.error_message or "the run failed")
                if event.stop_reason == "error"
                else TaskEnded(stop_reason=event.stop_reason)
            )
            self.emit(_END_EVENT[event.stop_reason], "agent", payload=ended)
            self.emit(EventName.DONE, "system", payload=Done(stop_reason=event.stop_reason))
            self.task_id = None

    def message_update(self, event: MessageUpdate) -> None:
        """A streamed delta (the caller may route these here directly: most events are)."""
        delta = event.delta
        kind = delta.kind
        if kind == "text_start" or kind == "thinking_start":
            item = self._block_items[delta.content_index] = new_id("item")
            if kind == "thinking_start":
                self.emit(EventName.REASONING_STARTED, "agent", item_id=item)
        elif kind == "text_delta":
            self.delta(
                EventName.MESSAGE_CHUNK, self._block_items.get(delta.content_index), delta.delta
            )
        elif kind == "thinking_delta":
            self.delta(EventName.REASONING, self._block_items.get(delta.content_index), delta.delta)
        elif kind == "thinking_end":
            self.emit(
                EventName.REASONING_COMPLETED,
                "agent",
                item_id=self._block_items.pop(delta.content_index, None),
            )
        elif kind == "text_end":
            self._block_items.pop(delta.content_index, None)
