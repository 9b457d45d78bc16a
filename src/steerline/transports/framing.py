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

from typing import Literal

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
