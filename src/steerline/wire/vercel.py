"""Wire events → Vercel AI SDK UI message stream v1 chunks (SPEC §3.5).

A pure function of the log: :class:`VercelTranslator` is fed the stored
envelopes (``{"event", "data", "seq"}``) of a slice of a conversation's log in
order and returns, for each, the chunks it becomes (zero or more dicts). The
same slice always gives the same chunks, so a chunk's index in the stream is
stable and a stream resumes exactly by index (``?startIndex=N``).

Only chunk types (and fields) that both ``ai`` 5 and ``ai`` 6 validate are
written: ``start``, ``start-step``/``finish-step``, ``text-*``,
``reasoning-*``, ``tool-input-start``/``-available``,
``tool-output-available``/``-error``, ``error``, ``abort``, ``finish`` and
``data-steerline-*`` parts. Every text, reasoning and tool part is opened
before its deltas and closed before ``finish`` (the client refuses a delta of
a part it was not told about).

The mapping (docs/protocols.md has the table):

* ``task_started`` → ``start`` (``messageId`` = the run id). An event of a run
  opens the stream with ``start`` too when the slice begins mid-run (a message
  queued into a busy conversation); events of no run before it (the
  conversation's ``conversation_started``) give nothing, so a new
  conversation's answer and the run's resume stream index alike.
* ``message_chunk`` (by ``item_id``) → ``text-start`` once, ``text-delta``;
  the part ends (``text-end``) when another block starts or the step ends.
* ``reasoning_started`` / ``reasoning`` / ``reasoning_completed`` →
  ``reasoning-start`` / ``-delta`` / ``-end`` (by ``item_id``).
* ``tool_call_started`` → ``tool-input-start`` + ``tool-input-available``;
  ``tool_call_completed`` → ``tool-output-available`` (``output``: the
  result text) or ``tool-output-error`` (an error or a skipped call).
* A step is one model turn: ``start-step`` before its first part,
  ``finish-step`` when text or reasoning follows tool results, when a
  steering or follow-up message is delivered, and at the end.
* ``thread_started`` of a message delivered mid-run →
  ``data-steerline-steer`` / ``data-steerline-follow-up``
  (``{message_id, delivery, content}``; the run's own prompt gives nothing).
* ``message_queued`` → ``data-steerline-queued`` (its payload);
  ``queue_updated`` → ``data-steerline-queue`` with ``id: "queue"`` (the
  client keeps one part, replaced at each change).
* ``task_failed`` / ``system_failed`` → open parts closed, ``finish-step``,
  ``error`` (one per run).
* ``done`` → open parts closed, ``finish-step``, ``abort`` when the run was
  aborted, then ``finish``. Events after it are ignored.
"""

from __future__ import annotations

from typing import Any

import msgspec

from steerline.wire.envelope import EventName
from steerline.wire.translate import tool_result_text

Chunk = dict[str, Any]

QUEUE_PART_ID = "queue"
"""The ``id`` of the ``data-steerline-queue`` part (one part, updated in place)."""

UNFINISHED_TOOL = "The run ended before the tool finished."

_decode = msgspec.json.Decoder().decode


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class VercelTranslator:
    """Translates one stream's slice of the log, in order (state per stream)."""

    def __init__(self) -> None:
        self.started = False
        self.finished = False
        self._in_step = False
        self._after_tools = False
        """Tool results came since the last model output: new output is a new step."""
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._tools: dict[str, str] = {}
        """Tool calls whose input was sent and whose output is still to come."""
        self._seen_tools: set[str] = set()
        self._failed = False

    def feed(self, envelope: bytes) -> list[Chunk]:
        """The chunks one stored envelope becomes."""
        decoded = _decode(envelope)
        return self.translate(_text(decoded.get("event")), _dict(decoded.get("data")))

    def translate(self, event: str, data: dict[str, Any]) -> list[Chunk]:
        out: list[Chunk] = []
        if self.finished:
            return out
        run_id = data.get("task_id")
        if not self.started:
            if not isinstance(run_id, str):
                return out  # before the run: conversation_started, idle queue changes
            self.started = True
            out.append({"type": "start", "messageId": run_id})
        payload = _dict(data.get("payload"))
        item = _text(data.get("item_id"))
        if event == EventName.MESSAGE_CHUNK or event == EventName.MESSAGE:
            self._output(out)
            if item not in self._text:
                self._close_blocks(out)
                self._text.append(item)
                out.append({"type": "text-start", "id": item})
            out.append({"type": "text-delta", "id": item, "delta": _text(payload.get("content"))})
            if event == EventName.MESSAGE:
                self._close_blocks(out)
        elif event == EventName.REASONING_STARTED:
            self._output(out)
            self._open_reasoning(out, item)
        elif event == EventName.REASONING:
            self._output(out)
            self._open_reasoning(out, item)
            delta = _text(payload.get("content"))
            out.append({"type": "reasoning-delta", "id": item, "delta": delta})
        elif event == EventName.REASONING_COMPLETED:
            if item in self._reasoning:
                self._reasoning.remove(item)
                out.append({"type": "reasoning-end", "id": item})
        elif event == EventName.TOOL_CALL_STARTED:
            self._tool_input(out, payload, item, payload.get("tool_args"))
        elif event == EventName.TOOL_CALL_COMPLETED:
            call_id = _text(payload.get("tool_call_id")) or item
            if call_id not in self._seen_tools:  # its start came before the slice
                self._tool_input(out, payload, item, {})
            self._tools.pop(call_id, None)
            result = tool_result_text(_text(payload.get("tool_result")))
            if payload.get("is_error") or payload.get("skipped"):
                out.append(
                    {"type": "tool-output-error", "toolCallId": call_id, "errorText": result}
                )
            else:
                out.append(
                    {"type": "tool-output-available", "toolCallId": call_id, "output": result}
                )
            self._after_tools = True
        elif event == EventName.THREAD_STARTED:
            meta = _dict(data.get("metadata"))
            delivery = _text(meta.get("delivery"))
            if delivery in ("steer", "follow_up"):
                self._end_step(out)
                message_id = _text(meta.get("message_id")) or item
                out.append(
                    {
                        "type": "data-steerline-" + delivery.replace("_", "-"),
                        "id": message_id,
                        "data": {
                            "message_id": message_id,
                            "delivery": delivery,
                            "content": _text(payload.get("content")),
                        },
                    }
                )
        elif event == EventName.MESSAGE_QUEUED:
            message_id = _text(payload.get("message_id")) or item
            out.append({"type": "data-steerline-queued", "id": message_id, "data": payload})
        elif event == EventName.QUEUE_UPDATED:
            out.append({"type": "data-steerline-queue", "id": QUEUE_PART_ID, "data": payload})
        elif event == EventName.TASK_FAILED or event == EventName.SYSTEM_FAILED:
            if not self._failed:
                self._failed = True
                self._end_step(out)
                text = payload.get("message") or payload.get("error") or payload.get("content")
                out.append({"type": "error", "errorText": _text(text) or "the run failed"})
        elif event == EventName.DONE:
            self._end_step(out)
            if payload.get("stop_reason") == "aborted":
                out.append({"type": "abort"})
            out.append({"type": "finish"})
            self.finished = True
        return out

    # -- parts and steps -------------------------------------------------------------
    def _output(self, out: list[Chunk]) -> None:
        """Model output follows: open a step (a new one after tool results)."""
        if self._after_tools:
            self._end_step(out)
        if not self._in_step:
            self._in_step = True
            out.append({"type": "start-step"})

    def _open_reasoning(self, out: list[Chunk], item: str) -> None:
        if item not in self._reasoning:
            self._close_blocks(out)
            self._reasoning.append(item)
            out.append({"type": "reasoning-start", "id": item})

    def _tool_input(
        self, out: list[Chunk], payload: dict[str, Any], item: str, args: object
    ) -> None:
        call_id = _text(payload.get("tool_call_id")) or item
        name = _text(payload.get("tool_name")) or "tool"
        if not self._in_step:
            self._in_step = True
            out.append({"type": "start-step"})
        self._close_blocks(out)
        self._tools[call_id] = name
        self._seen_tools.add(call_id)
        out.append({"type": "tool-input-start", "toolCallId": call_id, "toolName": name})
        out.append(
            {
                "type": "tool-input-available",
                "toolCallId": call_id,
                "toolName": name,
                "input": args if args is not None else {},
            }
        )

    def _close_blocks(self, out: list[Chunk]) -> None:
        out.extend({"type": "text-end", "id": item} for item in self._text)
        out.extend({"type": "reasoning-end", "id": item} for item in self._reasoning)
        self._text.clear()
        self._reasoning.clear()

    def _end_step(self, out: list[Chunk]) -> None:
        """Close every open part, then the step."""
        self._close_blocks(out)
        out.extend(
            {"type": "tool-output-error", "toolCallId": call_id, "errorText": UNFINISHED_TOOL}
            for call_id in self._tools
        )
        self._tools.clear()
        self._after_tools = False
        if self._in_step:
            self._in_step = False
            out.append({"type": "finish-step"})


def translate_log(envelopes: list[bytes]) -> list[Chunk]:
    """Every chunk a slice of the log becomes (what a stream of it carries)."""
    translator = VercelTranslator()
    return [chunk for envelope in envelopes for chunk in translator.feed(envelope)]
