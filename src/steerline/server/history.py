"""``GET …/history``: the log folded into items, chunks merged per ``item_id``."""

from __future__ import annotations

from typing import Any

import msgspec

from steerline.log.base import EventLog, RetentionError
from steerline.wire.envelope import EventName, UnifiedResponseData
from steerline.wire.payloads import (
    Content,
    Payload,
    ThreadMetadata,
    ToolCallCompleted,
    ToolCallStarted,
    decode_payload,
)
from steerline.wire.translate import tool_result_text


class _Envelope(msgspec.Struct):
    event: str
    data: UnifiedResponseData


_decoder = msgspec.json.Decoder(_Envelope)

_ITEM_KIND = {
    "thread_started": "user_message",
    "message_chunk": "message",
    "message": "message",
    "reasoning_started": "reasoning",
    "reasoning": "reasoning",
    "reasoning_completed": "reasoning",
    "tool_call_started": "tool_call",
    "tool_call_completed": "tool_call",
    "system_failed": "system_failed",
    "task_failed": "task_failed",
}


async def build_history(log: EventLog, conversation_id: str) -> dict[str, Any]:
    items: dict[str, dict[str, Any]] = {}
    after = max(0, await log.oldest_seq(conversation_id) - 1)
    last = after
    while True:
        try:
            batch = await log.read(conversation_id, after, 2000)
        except RetentionError:
            # Retention trimmed the log while it was being read (a run is
            # appending): history is what is retained, so go on from the
            # oldest event kept instead of failing the request.
            after = max(after, await log.oldest_seq(conversation_id) - 1)
            continue
        if not batch:
            break
        for stored in batch:
            last = stored.seq
            kind = _ITEM_KIND.get(stored.event)
            if kind is None:
                continue
            envelope = _decoder.decode(stored.envelope)
            data = envelope.data
            key = f"{kind}:{data.item_id}"
            item = items.get(key)
            if item is None:
                item = items[key] = {
                    "type": kind,
                    "item_id": data.item_id,
                    "thread_id": data.thread_id,
                    "task_id": data.task_id,
                    "role": data.role,
                    "first_seq": stored.seq,
                }
            item["last_seq"] = stored.seq
            payload = decode_payload(stored.event, data.payload)
            metadata = (
                msgspec.convert(data.metadata, type=ThreadMetadata)
                if stored.event == EventName.THREAD_STARTED and data.metadata
                else None
            )
            _merge(item, payload, metadata)
        after = batch[-1].seq
    return {"conversation_id": conversation_id, "items": list(items.values()), "last_seq": last}


def _merge(item: dict[str, Any], payload: Payload | None, metadata: ThreadMetadata | None) -> None:
    """Fold one event's typed payload into its item."""
    if isinstance(payload, Content):
        if metadata is not None:  # thread_started: the user's message
            item["content"] = payload.content
            item["delivery"] = metadata.delivery
        else:  # a chunk of a paragraph or a reasoning block
            item["content"] = item.get("content", "") + payload.content
    elif payload is None:  # reasoning_started / reasoning_completed
        item.setdefault("content", "")
    elif isinstance(payload, ToolCallStarted):
        item.update(tool_name=payload.tool_name, tool_args=payload.tool_args)
    elif isinstance(payload, ToolCallCompleted):
        item.update(
            tool_name=payload.tool_name,
            result=tool_result_text(payload.tool_result),
            is_error=payload.is_error,
            skipped=payload.skipped,
        )
    else:
        item.update(msgspec.to_builtins(payload))
