"""AG-UI 1.0 over SSE (SPEC §3.5): the :class:`~steerline.transports.framing.Encoder`
of the ``/api/v1/ag-ui`` routes.

Each AG-UI event is one ``data: <json>\\n\\n`` block (``\\n`` only, as
``@ag-ui/client``'s parser splits on it). The last AG-UI event a log event
produced carries that event's seq as ``id:``, so a client that reconnects
with ``Last-Event-ID`` resumes exactly after it; a log event that produces
nothing (``message_queued``, ``conversation_started``) writes nothing. Pings
and resume hints are SSE comments, as on the native stream.
"""

from __future__ import annotations

import msgspec

from steerline.log.base import StoredEvent
from steerline.transports.framing import SSE_MEDIA_TYPE, SSE_PING, sse_hint, sse_retry
from steerline.wire.agui import AguiEvent, AguiTranslator

_encode = msgspec.json.Encoder().encode


def frames(events: list[AguiEvent], seq: int | None = None) -> bytes:
    """SSE blocks of ``events``; ``seq`` as the ``id:`` of the last one."""
    if not events:
        return b""
    blocks = [b"data: %s\n\n" % _encode(event) for event in events[:-1]]
    last = _encode(events[-1])
    blocks.append(b"data: %s\n\n" % last if seq is None else b"id: %d\ndata: %s\n\n" % (seq, last))
    return b"".join(blocks)


class AguiEncoder:
    """Writes a log slice as AG-UI events: ``opening`` first (``RUN_STARTED``
    and, for a join, the snapshots), then each event's translation."""

    media_type = SSE_MEDIA_TYPE

    def __init__(self, translator: AguiTranslator, opening: list[AguiEvent], retry_ms: int) -> None:
        self.translator = translator
        self._opening = opening
        self._retry_ms = retry_ms

    def prelude(self) -> bytes:
        return sse_retry(self._retry_ms) + frames(self._opening)

    def events(self, batch: list[StoredEvent]) -> bytes:
        feed = self.translator.feed
        return b"".join(frames(feed(event.envelope), event.seq) for event in batch)

    def ping(self) -> bytes:
        return SSE_PING

    def hint(self, after: int) -> bytes:
        return sse_hint(after)

    def ending(self, complete: bool) -> bytes:
        # a stream cut short (shutdown, slow consumer) leaves the run open: the
        # client resumes it from the last id it got
        return frames(self.translator.finish()) if complete else b""
