"""A raw ASGI streaming response that carries a :class:`LogTail`.

Raw ASGI rather than ``StreamingResponse`` or sse-starlette: we need the
``id:``/``retry:``/ping framing, coalesced writes, and a disconnect watcher
that can cancel the run when ``on_disconnect=cancel``; sse-starlette measured
at less than half the throughput and patches uvicorn's shutdown on import.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextvars import ContextVar

import anyio
from starlette.types import Message, Receive, Scope, Send

from steerline.log.base import StoredEvent
from steerline.transports import framing
from steerline.transports.tail import EndReason, LogTail

logger = logging.getLogger("steerline.stream")

response_abandoned: ContextVar[bool] = ContextVar("steerline_response_abandoned", default=False)
"""Set in the request's task when a stream gave up on a client that stopped
reading, so the server's "returned without completing response" line about it
is logged at INFO (see :mod:`steerline.server.serving`)."""


class _HttpSink:
    def __init__(self, send: Send, encoder: framing.Encoder) -> None:
        self._send = send
        self._encoder = encoder
        self.events_sent = 0

    async def write(self, body: bytes) -> None:
        if body:
            await self._send({"type": "http.response.body", "body": body, "more_body": True})

    async def events(self, batch: list[StoredEvent]) -> None:
        await self.write(self._encoder.events(batch))
        self.events_sent += len(batch)

    async def ping(self) -> None:
        await self.write(self._encoder.ping())

    async def hint(self, after: int) -> None:
        await self.write(self._encoder.hint(after))


class LogStreamResponse:
    """Streams ``tail`` to the client; calls ``on_disconnect`` if the client left first."""

    def __init__(
        self,
        tail: LogTail,
        kind: framing.Framing,
        *,
        on_disconnect: Callable[[], None] | None = None,
        on_close: Callable[[EndReason, int], None] | None = None,
        headers: dict[str, str] | None = None,
        encoder: framing.Encoder | None = None,
    ) -> None:
        self.tail = tail
        self.kind = kind
        self.encoder = encoder or framing.NativeEncoder(kind, tail.settings.retry_ms)
        """Native SSE/NDJSON, or a protocol view's translation of the log."""
        self.on_disconnect = on_disconnect
        self.on_close = on_close
        self.headers = headers or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {
            "content-type": f"{self.encoder.media_type}; charset=utf-8",
            "cache-control": "no-cache",
            "x-accel-buffering": "no",
            **self.headers,
        }
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
            }
        )
        sink = _HttpSink(send, self.encoder)
        reason = EndReason.DISCONNECTED
        disconnected = False
        # The client's disconnect is watched by one plain task (not a task
        # group: a stream's memory is mostly per-connection objects).
        streaming = anyio.CancelScope()

        async def watch_disconnect() -> None:
            nonlocal disconnected
            try:
                while True:
                    message: Message = await receive()
                    if message["type"] == "http.disconnect":
                        break
            except Exception:  # the server cannot tell us more: the client is gone
                logger.debug("receive failed while streaming", exc_info=True)
            disconnected = True
            streaming.cancel()

        watcher = asyncio.get_running_loop().create_task(watch_disconnect())
        try:
            with streaming:
                await sink.write(self.encoder.prelude())
                reason = await self.tail.run(sink)
                await sink.write(self.encoder.ending(reason is EndReason.COMPLETE))
        except OSError:
            disconnected = True
        finally:
            watcher.cancel()
        if disconnected:
            reason = EndReason.DISCONNECTED
            if self.on_disconnect is not None:
                self.on_disconnect()
        else:
            with anyio.CancelScope(shield=True), anyio.move_on_after(1.0) as ending:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            if ending.cancelled_caught:
                # The client stopped reading: its socket is full, so neither the
                # hint nor the end of the body can be written. Returning lets the
                # server close the connection once what it buffered is read; the
                # client sees a cut stream and resumes from the last id it got.
                response_abandoned.set(True)
                logger.info(
                    "stream of %s ended unfinished: the client stopped reading "
                    "(it resumes from the last id it received)",
                    self.tail.conversation_id,
                )
        if self.on_close is not None:
            self.on_close(reason, sink.events_sent)
