"""Byte framing of log events for SSE and NDJSON (SPEC §3.3).

A whole batch becomes one write: coalescing, not the library, decides
throughput (see STACK.md). SSE has no ``event:`` field so that
``EventSource.onmessage`` and ValueCell's parser both see every event.

The ``retry:`` hint and comments (``: ping``, ``: resume after=N``) end with
a single newline, never a blank line of their own: a block without ``data:``
makes httpx-sse and ``@microsoft/fetch-event-source`` hand an empty event to
the application (fetch-event-source then re-POSTs). Written this way they
become leading lines of the next event's block, which every parser accepts
(SPEC §3.3).
"""

from __future__ import annotations

from typing import Literal, Protocol

from steerline.log.base import StoredEvent

Framing = Literal["sse", "ndjson"]

SSE_MEDIA_TYPE = "text/event-stream"
NDJSON_MEDIA_TYPE = "application/x-ndjson"


def sse_events(batch: list[StoredEvent]) -> bytes:
    return b"".join(b"id: %d\ndata: %s\n\n" % (event.seq, event.envelope) for event in batch)


def ndjson_events(batch: list[StoredEvent]) -> bytes:
    return b"".join(event.envelope + b"\n" for event in batch)


def sse_retry(retry_ms: int) -> bytes:
    return b"retry: %d\n" % retry_ms


SSE_PING = b": ping\n"
NDJSON_PING = b'{"event":"ping"}\n'


def sse_hint(after: int) -> bytes:
    return b": resume after=%d\n" % after


def ndjson_hint(after: int) -> bytes:
    return b'{"event":"resume","after":%d}\n' % after


def choose_framing(accept: str | None) -> Framing:
    """NDJSON when the client asks for it by ``Accept``; SSE otherwise."""
    if accept and NDJSON_MEDIA_TYPE in accept and SSE_MEDIA_TYPE not in accept:
        return "ndjson"
    return "sse"


class Encoder(Protocol):
    """How a stream writes the log: the native SSE or NDJSON framing, or a
    protocol view (Vercel AI SDK, AG-UI) that translates each batch."""

    media_type: str

    def prelude(self) -> bytes:
        """Written once before the first event (SSE: the ``retry:`` hint)."""
        ...

    def events(self, batch: list[StoredEvent]) -> bytes: ...

    def ping(self) -> bytes: ...

    def hint(self, after: int) -> bytes: ...

    def ending(self, complete: bool) -> bytes:
        """Written last when the stream ends by its plan (``complete``) or
        for another reason (shutdown, slow consumer, deleted, outage)."""
        ...


class NativeEncoder:
    """The wire format of SPEC §3.3 as SSE or NDJSON."""

    def __init__(self, kind: Framing, retry_ms: int) -> None:
        self.kind = kind
        self.media_type = SSE_MEDIA_TYPE if kind == "sse" else NDJSON_MEDIA_TYPE
        self._retry_ms = retry_ms

    def prelude(self) -> bytes:
        return sse_retry(self._retry_ms) if self.kind == "sse" else b""

    def events(self, batch: list[StoredEvent]) -> bytes:
        return sse_events(batch) if self.kind == "sse" else ndjson_events(batch)

    def ping(self) -> bytes:
        return SSE_PING if self.kind == "sse" else NDJSON_PING

    def hint(self, after: int) -> bytes:
        return sse_hint(after) if self.kind == "sse" else ndjson_hint(after)

    def ending(self, complete: bool) -> bytes:
        return b""
