"""The Vercel AI SDK UI message stream v1 as an :class:`~steerline.transports.framing.Encoder`.

Each chunk of :class:`steerline.wire.vercel.VercelTranslator` is one SSE block
``data: <json>\\n\\n``; a stream that ends by its plan ends with
``data: [DONE]\\n\\n``. Pings and the resume hint are SSE comments ending in a
single newline (see :mod:`steerline.transports.framing`: a comment-only block
would reach the client's JSON parser as an empty event). Chunks are numbered
from 0 in stream order; ``skip_through=N`` leaves out chunks 0..N, so a
stream resumed with ``?startIndex=N`` continues exactly after chunk N.
"""

from __future__ import annotations

import msgspec

from steerline.log.base import StoredEvent
from steerline.transports.framing import SSE_MEDIA_TYPE, SSE_PING
from steerline.wire.vercel import Chunk, VercelTranslator

STREAM_HEADER = "x-vercel-ai-ui-message-stream"
STREAM_HEADERS = {STREAM_HEADER: "v1"}
DONE = b"data: [DONE]\n\n"

_encode = msgspec.json.Encoder().encode


def sse_chunk(chunk: Chunk) -> bytes:
    return b"data: %s\n\n" % _encode(chunk)


class VercelEncoder:
    """Translates each batch of the log into UI message stream chunks."""

    media_type = SSE_MEDIA_TYPE

    def __init__(self, skip_through: int = -1) -> None:
        self.translator = VercelTranslator()
        self.skip_through = skip_through
        self.last_index = -1
        """Index of the last chunk produced (sent, or skipped by ``skip_through``)."""

    def prelude(self) -> bytes:
        return b""

    def events(self, batch: list[StoredEvent]) -> bytes:
        parts: list[bytes] = []
        for event in batch:
            for chunk in self.translator.feed(event.envelope):
                self.last_index += 1
                if self.last_index > self.skip_through:
                    parts.append(sse_chunk(chunk))
        return b"".join(parts)

    def ping(self) -> bytes:
        return SSE_PING

    def hint(self, after: int) -> bytes:
        """The stream ends early (shutdown, slow reader): where to resume."""
        last = max(self.last_index, self.skip_through)
        return b": resume startIndex=%d\n" % last if last >= 0 else b": resume\n"

    def ending(self, complete: bool) -> bytes:
        return DONE if complete else b""
