"""Encoding of the runtime state a conversation persists besides its log."""

from __future__ import annotations

import msgspec

from steerline.core.messages import Message
from steerline.runtime.inbox import QueuedMessage


class InboxState(msgspec.Struct):
    messages: list[QueuedMessage]
    seen_ids: list[str]


_encoder = msgspec.json.Encoder()
_context_decoder = msgspec.json.Decoder(list[Message])
_inbox_decoder = msgspec.json.Decoder(InboxState)

CONTEXT_KEY = "context"
INBOX_KEY = "inbox"
"""The whole inbox as one blob: written by steerline before 0.2, read to migrate."""
QUEUE_ITEMS = "queue"
"""Item collection: one queued message per item, keyed by message id."""
SEEN_ITEMS = "seen"
"""Item collection: the dedup window, one accepted message id per item."""


class StoredQueued(msgspec.Struct):
    """A queued message as stored, with where to look for its delivery.

    ``since`` is the conversation's last seq when it was first stored: if the
    process dies after the message was taken, recovery looks for its
    ``thread_started`` after that seq to tell "delivered" from "still queued".
    """

    message: QueuedMessage
    since: int
    start_if_idle: bool = False
    """Queued by another process while this one ran the conversation (Redis
    intake): whether it starts a run should the run have ended meanwhile."""


_queued_decoder = msgspec.json.Decoder(StoredQueued)


def encode_context(messages: list[Message]) -> bytes:
    return _encoder.encode(messages)


def decode_context(data: bytes) -> list[Message]:
    return _context_decoder.decode(data)


def encode_inbox(messages: list[QueuedMessage], seen_ids: list[str]) -> bytes:
    return _encoder.encode(InboxState(messages=messages, seen_ids=seen_ids))


def decode_inbox(data: bytes) -> InboxState:
    return _inbox_decoder.decode(data)


def encode_queued(message: QueuedMessage, since: int, start_if_idle: bool = False) -> bytes:
    return _encoder.encode(StoredQueued(message=message, since=since, start_if_idle=start_if_idle))


def decode_queued(data: bytes) -> StoredQueued:
    return _queued_decoder.decode(data)
