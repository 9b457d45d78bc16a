"""How uvicorn runs the app: its log filter and its options (``steerline serve``, tests).

:func:`uvicorn_options` adds what uvicorn lacks: a header timeout (see
:func:`header_timeout_protocol`); the keep-alive timeout and the WebSocket
message limit come from the settings too.

uvicorn's loggers get one filter (installed by :func:`create_app` and again by
``steerline serve``; idempotent):

- ``?access_token=KEY`` (the API key of a browser's EventSource or WebSocket)
  is redacted from every line uvicorn logs: the access log and the
  ``"WebSocket /path?query" [accepted]`` lines;
- what a client did wrong is logged at INFO without a traceback: a client is
  not an error of the server (uvicorn logs an invalid UTF-8 text frame, which
  it answers with close code 1007 as RFC 6455 requires, as an ERROR).
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
from typing import Any
from urllib.parse import unquote_plus

from uvicorn.config import HTTP_PROTOCOLS, WS_PROTOCOLS
from uvicorn.importer import import_from_string
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState
from websockets.protocol import State

from steerline.server.settings import ServerSettings
from steerline.transports.http_stream import response_abandoned
from steerline.transports.websocket import (
    MAX_FRAME_BYTES,
    SEND_BATCH_EXTENSION,
    SEND_BATCH_KEY,
)

REDACTED = "[redacted]"
SECRET_PARAMETERS = frozenset({"access_token"})
_UVICORN_LOGGERS = ("uvicorn.error", "uvicorn.access")

_CLIENT_FAULTS = frozenset({"Invalid UTF-8 sequence received from client."})
"""uvicorn messages logged at ERROR that report what a client sent, not a fault
of the server."""
_UNFINISHED = "ASGI callable returned without completing response."
"""uvicorn's line for a response left unfinished: INFO when a stream gave up on
a client that stopped reading (``response_abandoned``), an ERROR otherwise."""


def redact_query(text: str) -> str:
    """``text`` with the value of every secret query parameter replaced.

    The parameter name is compared decoded, as the server decodes it
    (``access%5Ftoken=`` is the same parameter as ``access_token=``).
    """
    path, mark, query = text.partition("?")
    if not mark:
        return text
    end = len(query)
    for stop in (" ", '"'):
        position = query.find(stop)
        if position != -1:
            end = min(end, position)
    query, rest = query[:end], query[end:]
    parts = []
    for part in query.split("&"):
        name, equals, _value = part.partition("=")
        if equals and unquote_plus(name).lower() in SECRET_PARAMETERS:
            part = f"{name}={REDACTED}"
        parts.append(part)
    return f"{path}?{'&'.join(parts)}{rest}"


class UvicornLogFilter(logging.Filter):
    """Redacts API keys and turns client faults into INFO records (see the module doc)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_redact(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: _redact(value) for key, value in record.args.items()}
        if isinstance(record.msg, str):
            record.msg = _redact(record.msg)
            client_fault = record.msg in _CLIENT_FAULTS or (
                record.msg == _UNFINISHED and response_abandoned.get()
            )
            if client_fault and record.levelno > logging.INFO:
                if record.exc_info and record.exc_info[1] is not None:
                    record.msg = f"{record.msg} ({record.exc_info[1]})"
                record.levelno, record.levelname = logging.INFO, "INFO"
                record.exc_info, record.exc_text = None, None
        return True


def _redact(value: Any) -> Any:
    return redact_query(value) if isinstance(value, str) and "?" in value else value


def install_log_filter() -> None:
    """Put :class:`UvicornLogFilter` on uvicorn's loggers, once.

    A logger's filters survive uvicorn's own logging set-up (``dictConfig``
    replaces handlers, not filters), so this may run before or after it.
    """
    for name in _UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, UvicornLogFilter) for f in logger.filters):
            logger.addFilter(UvicornLogFilter())


# -- uvicorn options -------------------------------------------------------------
_REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: application/json\r\n"
    b"content-length: %d\r\n"
    b"connection: close\r\n\r\n%s"
)


def header_timeout_protocol(base: type[asyncio.Protocol], timeout: float) -> type[Any]:
    """uvicorn's HTTP protocol ``base`` (httptools or h11) with a header timeout.

    uvicorn has none: a client that opens a connection and sends nothing, or
    half a request line and then a header every few seconds (slowloris), holds
    the connection forever (``timeout_keep_alive`` only runs between requests
    and any byte stops it). Here a timer runs from the connection's start and
    from the end of each response; if no request has begun its handling by
    then (its headers are not complete), a client that sent part of one gets a
    408 JSON error, and the connection is closed.
    """

    class HeaderTimeoutProtocol(base):  # type: ignore[valid-type,misc]
        _header_timer: asyncio.TimerHandle | None = None
        _partial = False

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self._arm_header_timer()

        def data_received(self, data: bytes) -> None:
            self._partial = True
            super().data_received(data)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._partial = False
            self._arm_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_header_timer()
            super().connection_lost(exc)

        def _arm_header_timer(self) -> None:
            self._cancel_header_timer()
            self._header_timer = self.loop.call_later(timeout, self._header_timeout)

        def _cancel_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_timeout(self) -> None:
            self._header_timer = None
            transport = self.transport
            if transport is None or transport.is_closing() or transport.get_protocol() is not self:
                return  # closed, or upgraded to a WebSocket
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                return  # a request is being handled: its headers arrived in time
            if self._partial:
                body = json.dumps(
                    {
                        "error": {
                            "code": "request_timeout",
                            "message": f"request headers not received within {timeout:g} s",
                        }
                    }
                ).encode()
                transport.write(_REQUEST_TIMEOUT % (len(body), body))
            transport.close()

    HeaderTimeoutProtocol.__name__ = f"HeaderTimeout{base.__name__}"
    return HeaderTimeoutProtocol


_SMALL_TEXT_HEADS = [bytes((0x81, length)) for length in range(126)]
_TEXT_HEAD_16 = struct.Struct("!BBH")
_TEXT_HEAD_64 = struct.Struct("!BBQ")


def close_frame_protocol(base: type[asyncio.Protocol]) -> type[Any]:
    """uvicorn's WebSocket protocol ``base`` whose close frame never waits,
    and which sends a batch of text frames in one write.

    uvicorn holds every send while the connection's write buffer is over its
    high-water mark. A viewer dropped for not reading (SPEC §4, slow
    consumers) would so never get its close frame, and would see an abnormal
    close (1006) when it reads again. A close frame is a few bytes: it is
    queued behind the unread data at once, so the client reads its events and
    then 1013. (The connection is then closed once it is flushed, as uvicorn
    does for any connection whose application ended.)

    A stream's batch of events is one ``websocket.send`` with
    :data:`SEND_BATCH_KEY` (advertised as :data:`SEND_BATCH_EXTENSION`) when
    ``base`` is the websockets-sansio protocol: the same frames, one envelope
    each (SPEC §3.3), in one socket write (uvicorn writes each frame on its
    own: one system call per event).
    """

    batching = issubclass(base, WebSocketsSansIOProtocol)

    class CloseFrameProtocol(base):  # type: ignore[valid-type,misc]
        _write_paused = False

        def pause_writing(self) -> None:
            self._write_paused = True
            super().pause_writing()

        def resume_writing(self) -> None:
            self._write_paused = False
            super().resume_writing()

        async def run_asgi(self) -> None:
            if batching:
                self.scope["extensions"][SEND_BATCH_EXTENSION] = {}
            await super().run_asgi()

        async def send(self, message: Any) -> None:
            texts = message.get(SEND_BATCH_KEY)
            if texts is not None and message["type"] == "websocket.send":
                await self._send_texts(texts)
                return
            if message["type"] != "websocket.close" or self.writable.is_set():
                await super().send(message)
                return
            self.writable.set()  # the send below then waits for nothing
            try:
                await super().send(message)
            finally:
                if self._write_paused and not self.disconnected:
                    self.writable.clear()

        async def _send_texts(self, texts: list[bytes]) -> None:
            await self.writable.wait()
            if self.disconnected:
                raise ClientDisconnected()
            if not self.handshake_complete or self.close_sent or self.initial_response:
                for text in texts:  # let uvicorn say what is wrong
                    await super().send({"type": "websocket.send", "text": text.decode()})
                return
            conn = self.conn
            if conn.state is not State.OPEN:
                raise ClientDisconnected()
            if conn.extensions or conn.expect_continuation_frame or conn.debug:
                try:
                    for text in texts:
                        conn.send_text(text)
                except InvalidState:
                    raise ClientDisconnected() from None
                self.transport.write(b"".join(conn.data_to_send()))
                return
            # What conn.send_text serializes for an unmasked, unfragmented text
            # frame without extensions (RFC 6455 §5.2), without a Frame object
            # and a BytesIO per frame.
            out = conn.data_to_send()
            for text in texts:
                length = len(text)
                if length < 126:
                    out.append(_SMALL_TEXT_HEADS[length])
                elif length < 65536:
                    out.append(_TEXT_HEAD_16.pack(0x81, 126, length))
                else:
                    out.append(_TEXT_HEAD_64.pack(0x81, 127, length))
                out.append(text)
            self.transport.write(b"".join(out))

    CloseFrameProtocol.__name__ = f"CloseFrame{base.__name__}"
    return CloseFrameProtocol


def uvicorn_options(settings: ServerSettings, http: str = "auto") -> dict[str, Any]:
    """``uvicorn.Config`` keyword arguments for ``settings`` (``steerline serve`` and
    the test harness run the app with the same ones)."""
    base = import_from_string(HTTP_PROTOCOLS[http])
    return {
        "http": header_timeout_protocol(base, settings.header_timeout),
        "timeout_keep_alive": settings.keep_alive_timeout,
        "ws": close_frame_protocol(import_from_string(WS_PROTOCOLS["websockets-sansio"])),
        # frames over MAX_FRAME_BYTES get an error frame and the socket stays open;
        # only beyond this does the protocol itself close the socket (1009)
        "ws_max_size": WS_PROTOCOL_MAX_BYTES,
    }


WS_PROTOCOL_MAX_BYTES = 4 * MAX_FRAME_BYTES
