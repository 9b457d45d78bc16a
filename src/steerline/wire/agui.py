"""The AG-UI 1.0 view of a conversation's log (SPEC §3.5): wire envelopes → AG-UI events.

A pure function of the log: :class:`AguiTranslator` is fed the stored
envelopes (``{"event", "data", "seq"}``) in log order and answers each with
zero or more AG-UI events (plain dicts, camelCase, never a ``null`` field).
The same slice, fed to a translator in the same state, gives the same events,
which is what makes a resume from ``Last-Event-ID`` exact. It also keeps the
messages an AG-UI client builds from those events (its reducer's view), so a
client that joins late gets them as one ``MESSAGES_SNAPSHOT``.

Mapping (docs/protocols.md has the table):

* a paragraph (``message_chunk`` by ``item_id``) is a ``TEXT_MESSAGE_START`` /
  ``_CONTENT`` / ``_END`` assistant message; the log has no end of paragraph,
  so it ends when anything else the agent does begins (queue events do not
  end it);
* a reasoning block is ``REASONING_START``, ``REASONING_MESSAGE_START`` /
  ``_CONTENT`` / ``_END``, ``REASONING_END`` under the block's ``item_id``;
* a tool call is ``TOOL_CALL_START`` / ``_ARGS`` / ``_END`` when it starts (the
  log has its whole arguments then) and ``TOOL_CALL_RESULT`` when it ends; its
  ``parentMessageId`` is the turn's last paragraph, or ``<call id>:assistant``
  when the turn had no text; the result's message is ``<call id>:result``;
* a delivered message (``thread_started``) the client does not have already
  (a steer, a follow-up) is an inline user ``TEXT_MESSAGE_*``;
* ``queue_updated`` is ``STATE_SNAPSHOT {queue}`` (the event's payload, kept
  until the next run when no run is open);
* ``done`` closes what is open and ends the run: ``RUN_FINISHED`` (outcome
  ``cancelled`` after an abort) or ``RUN_ERROR``; ``task_started`` opens one
  when none is open.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from typing import Any

import msgspec

from steerline.wire.envelope import EventName, UnifiedResponseData
from steerline.wire.payloads import (
    Content,
    Done,
    QueueUpdated,
    SystemFailed,
    TaskEnded,
    ThreadMetadata,
    ToolCallCompleted,
    ToolCallStarted,
    decode_payload,
)
from steerline.wire.translate import tool_result_text

AguiEvent = dict[str, Any]
PROTOCOL_VERSION = "1.0"

ASSISTANT_SUFFIX = ":assistant"
"""The assistant message that holds a turn's tool calls when the turn had no text."""
RESULT_SUFFIX = ":result"
"""The tool message a tool call's result becomes."""


class _Envelope(msgspec.Struct):
    event: str
    data: UnifiedResponseData


_decode = msgspec.json.Decoder(_Envelope).decode


class AguiTranslator:
    """Translates one conversation's log, in order, into AG-UI events.

    ``known_message_ids``: user messages the client has already (the
    ``messages`` it posted): their delivery is not echoed back to it.
    """

    def __init__(self, thread_id: str, known_message_ids: Iterable[str] = ()) -> None:
        self.thread_id = thread_id
        self._known = set(known_message_ids)
        self.messages: list[dict[str, Any]] = []
        """The conversation's messages as an AG-UI client's reducer builds them."""
        self._by_id: dict[str, dict[str, Any]] = {}
        self.run_id: str | None = None
        """The AG-UI run open in the stream (None: between runs)."""
        self.last_run_id: str | None = None
        """The last steerline run the log started."""
        self.queue: dict[str, Any] | None = None
        """The last ``queue_updated`` payload."""
        self._queue_pending = False
        self._text: str | None = None
        self._reasoning: str | None = None
        self._parent: str | None = None
        """The message this turn's tool calls go to."""
        self._after_tools = False
        """A tool call ended since the turn began: new text is a new turn."""
        self._calls: set[str] = set()
        self._failure: tuple[str, str] | None = None

    # -- the stream's first events -----------------------------------------------------
    def start(self, run_id: str) -> list[AguiEvent]:
        """Open the stream's run (``POST``: the client's ``runId``)."""
        self.run_id = run_id
        return [self._run_started(run_id)]

    def resume(self, active_run_id: str | None = None) -> list[AguiEvent]:
        """A join or resume at the point the translator has been fed to.

        ``RUN_STARTED`` (the run open in the log there, else ``active_run_id``),
        ``MESSAGES_SNAPSHOT``, ``STATE_SNAPSHOT`` when the queue is known, and
        the text message or reasoning still open re-opened (their content so
        far is in the snapshot). With no run to join, the snapshot is a run of
        its own, finished at once.
        """
        run_id = self.run_id or active_run_id
        events = [self._run_started(run_id or self.last_run_id or self.thread_id)]
        events.append({"type": "MESSAGES_SNAPSHOT", "messages": copy.deepcopy(self.messages)})
        if self.queue is not None:
            events.append(self._state())
        self._queue_pending = False
        if run_id is None:
            self._close_all()
            events.append(self._run_finished(self.last_run_id or self.thread_id, "completed"))
            self.run_id = None
            return events
        self.run_id = run_id
        if self._text is not None:
            events.append(_text_start(self._text, "assistant"))
        if self._reasoning is not None:
            events += self._reasoning_open(self._reasoning)
        self._known.update(m["id"] for m in self.messages if m["role"] == "user")
        return events

    def finish(self) -> list[AguiEvent]:
        """The stream ended by its plan: close what is open and the run."""
        events = self._close_all()
        if self.run_id is not None:
            events.append(self._run_finished(self.run_id, "completed"))
            self.run_id = None
        return events

    # -- the log -----------------------------------------------------------------------
    def feed(self, envelope: bytes) -> list[AguiEvent]:
        """The AG-UI events of one stored envelope."""
        decoded = _decode(envelope)
        name, data = decoded.event, decoded.data
        payload = decode_payload(name, data.payload)
        if name == EventName.MESSAGE_CHUNK and isinstance(payload, Content):
            return self._chunk(data, payload.content)
        if name == EventName.REASONING and isinstance(payload, Content):
            return self._reasoning_chunk(data, payload.content)
        if name == EventName.REASONING_STARTED:
            return self._reasoning_chunk(data, None)
        if name == EventName.REASONING_COMPLETED:
            if self._reasoning != data.item_id:
                return []
            return self._close_reasoning()
        if name == EventName.TOOL_CALL_STARTED and isinstance(payload, ToolCallStarted):
            return self._tool_started(data, payload)
        if name == EventName.TOOL_CALL_COMPLETED and isinstance(payload, ToolCallCompleted):
            return self._tool_completed(data, payload)
        if name == EventName.THREAD_STARTED and isinstance(payload, Content):
            return self._delivered(data, payload.content)
        if name == EventName.MESSAGE and isinstance(payload, Content):
            events = self._chunk(data, payload.content)
            return events + self._close_text()
        if name == EventName.QUEUE_UPDATED and isinstance(payload, QueueUpdated):
            self.queue = msgspec.to_builtins(payload)
            if self.run_id is None:
                self._queue_pending = True
                return []
            return [self._state()]
        if name == EventName.TASK_STARTED:
            self._new_turn()
            self.last_run_id = data.task_id or self.last_run_id
            return self._ensure_run(data)
        if name == EventName.SYSTEM_FAILED and isinstance(payload, SystemFailed):
            self._failure = (payload.code, payload.message)
            return []
        if name == EventName.TASK_FAILED and isinstance(payload, TaskEnded):
            if self._failure is None:
                self._failure = ("run_failed", payload.error or "the run failed")
            return []
        if name == EventName.DONE and isinstance(payload, Done):
            return self._done(data, payload.stop_reason)
        return []  # conversation_started, message_queued, task_completed, ...

    # -- text, reasoning, tools --------------------------------------------------------
    def _chunk(self, data: UnifiedResponseData, delta: str) -> list[AguiEvent]:
        item = data.item_id
        events = self._ensure_run(data)
        if self._text != item:
            events += self._close_all()
            if self._after_tools:
                self._new_turn()
            self._text = self._parent = item
            self._add({"id": item, "role": "assistant", "content": ""})
            events.append(_text_start(item, "assistant"))
        message = self._by_id[item]
        message["content"] = message.get("content", "") + delta
        events.append({"type": "TEXT_MESSAGE_CONTENT", "messageId": item, "delta": delta})
        return events

    def _reasoning_chunk(self, data: UnifiedResponseData, delta: str | None) -> list[AguiEvent]:
        item = data.item_id
        events = self._ensure_run(data)
        if self._reasoning != item:
            events += self._close_all()
            if self._after_tools:
                self._new_turn()
            self._reasoning = item
            self._add({"id": item, "role": "reasoning", "content": ""})
            events += self._reasoning_open(item)
        if delta is not None:
            message = self._by_id[item]
            message["content"] = message.get("content", "") + delta
            events.append({"type": "REASONING_MESSAGE_CONTENT", "messageId": item, "delta": delta})
        return events

    def _tool_started(self, data: UnifiedResponseData, payload: ToolCallStarted) -> list[AguiEvent]:
        events = self._ensure_run(data) + self._close_all()
        arguments = json.dumps(payload.tool_args, ensure_ascii=False)
        events += self._open_call(payload.tool_call_id, payload.tool_name, arguments)
        return events

    def _open_call(self, call_id: str, name: str, arguments: str | None) -> list[AguiEvent]:
        if self._parent is None:
            self._parent = call_id + ASSISTANT_SUFFIX
        parent = self._parent
        holder = self._by_id.get(parent)
        if holder is None:
            holder = self._add({"id": parent, "role": "assistant", "toolCalls": []})
        holder.setdefault("toolCalls", []).append(
            {
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": arguments or ""},
            }
        )
        self._calls.add(call_id)
        events: list[AguiEvent] = [
            {
                "type": "TOOL_CALL_START",
                "toolCallId": call_id,
                "toolCallName": name,
                "parentMessageId": parent,
            }
        ]
        if arguments is not None:
            events.append({"type": "TOOL_CALL_ARGS", "toolCallId": call_id, "delta": arguments})
        events.append({"type": "TOOL_CALL_END", "toolCallId": call_id})
        return events

    def _tool_completed(
        self, data: UnifiedResponseData, payload: ToolCallCompleted
    ) -> list[AguiEvent]:
        call_id = payload.tool_call_id
        events = self._ensure_run(data) + self._close_all()
        if call_id not in self._calls:  # started before this stream's slice
            events += self._open_call(call_id, payload.tool_name, None)
        self._after_tools = True
        content = tool_result_text(payload.tool_result)
        result_id = call_id + RESULT_SUFFIX
        self._insert_result(
            {"id": result_id, "role": "tool", "content": content, "toolCallId": call_id}
        )
        events.append(
            {
                "type": "TOOL_CALL_RESULT",
                "messageId": result_id,
                "toolCallId": call_id,
                "content": content,
                "role": "tool",
            }
        )
        return events

    def _delivered(self, data: UnifiedResponseData, text: str) -> list[AguiEvent]:
        metadata = msgspec.convert(data.metadata, type=ThreadMetadata) if data.metadata else None
        message_id = metadata.message_id if metadata is not None else data.item_id
        events = self._ensure_run(data) + self._close_all()
        self._new_turn()
        self._add({"id": message_id, "role": "user", "content": text})
        if message_id in self._known:
            return events
        self._known.add(message_id)
        return [
            *events,
            _text_start(message_id, "user"),
            {"type": "TEXT_MESSAGE_CONTENT", "messageId": message_id, "delta": text},
            {"type": "TEXT_MESSAGE_END", "messageId": message_id},
        ]

    # -- runs ----------------------------------------------------------------------------
    def _ensure_run(self, data: UnifiedResponseData) -> list[AguiEvent]:
        """``RUN_STARTED`` when the agent acts while no run is open in the stream."""
        if self.run_id is not None:
            return []
        self.run_id = data.task_id or self.last_run_id or self.thread_id
        events = [self._run_started(self.run_id)]
        if self._queue_pending and self.queue is not None:
            events.append(self._state())
        self._queue_pending = False
        return events

    def _done(self, data: UnifiedResponseData, stop_reason: str) -> list[AguiEvent]:
        events = self._close_all()
        failure, self._failure = self._failure, None
        self._new_turn()
        if self.run_id is None:
            return events
        run_id, self.run_id = self.run_id, None
        if stop_reason == "error":
            code, message = failure or ("run_failed", "the run failed")
            events.append({"type": "RUN_ERROR", "message": message, "code": code})
        else:
            events.append(self._run_finished(run_id, stop_reason))
        return events

    def _run_started(self, run_id: str) -> AguiEvent:
        return {
            "type": "RUN_STARTED",
            "threadId": self.thread_id,
            "runId": run_id,
            "protocolVersion": PROTOCOL_VERSION,
        }

    def _run_finished(self, run_id: str, stop_reason: str) -> AguiEvent:
        event: AguiEvent = {"type": "RUN_FINISHED", "threadId": self.thread_id, "runId": run_id}
        if stop_reason == "aborted":
            event["outcome"] = {"type": "cancelled"}
        return event

    def _state(self) -> AguiEvent:
        return {"type": "STATE_SNAPSHOT", "snapshot": {"queue": copy.deepcopy(self.queue)}}

    # -- open constructs -------------------------------------------------------------------
    @staticmethod
    def _reasoning_open(item: str) -> list[AguiEvent]:
        return [
            {"type": "REASONING_START", "messageId": item},
            {"type": "REASONING_MESSAGE_START", "messageId": item, "role": "reasoning"},
        ]

    def _close_text(self) -> list[AguiEvent]:
        if self._text is None:
            return []
        item, self._text = self._text, None
        return [{"type": "TEXT_MESSAGE_END", "messageId": item}]

    def _close_reasoning(self) -> list[AguiEvent]:
        if self._reasoning is None:
            return []
        item, self._reasoning = self._reasoning, None
        return [
            {"type": "REASONING_MESSAGE_END", "messageId": item},
            {"type": "REASONING_END", "messageId": item},
        ]

    def _close_all(self) -> list[AguiEvent]:
        return self._close_text() + self._close_reasoning()

    def _new_turn(self) -> None:
        self._parent = None
        self._after_tools = False

    # -- the reducer's messages ------------------------------------------------------------
    def _add(self, message: dict[str, Any]) -> dict[str, Any]:
        existing = self._by_id.get(message["id"])
        if existing is not None:
            return existing
        self.messages.append(message)
        self._by_id[message["id"]] = message
        return message

    def _insert_result(self, message: dict[str, Any]) -> None:
        """Where ``@ag-ui/client`` puts a tool result: after the assistant
        message holding the call and the tool results already after it."""
        call_id = message["toolCallId"]
        index = next(
            (
                i
                for i, m in enumerate(self.messages)
                if m["role"] == "assistant"
                and any(c["id"] == call_id for c in m.get("toolCalls", ()))
            ),
            None,
        )
        if index is None:
            self.messages.append(message)
        else:
            index += 1
            while index < len(self.messages) and self.messages[index]["role"] == "tool":
                index += 1
            self.messages.insert(index, message)
        self._by_id[message["id"]] = message


def _text_start(message_id: str, role: str) -> AguiEvent:
    return {"type": "TEXT_MESSAGE_START", "messageId": message_id, "role": role}


def translate(
    thread_id: str, envelopes: Iterable[bytes], run_id: str | None = None
) -> list[AguiEvent]:
    """A whole log slice as AG-UI events (``run_id``: open the stream's run first)."""
    translator = AguiTranslator(thread_id)
    events = translator.start(run_id) if run_id is not None else []
    for envelope in envelopes:
        events += translator.feed(envelope)
    return events + translator.finish()
