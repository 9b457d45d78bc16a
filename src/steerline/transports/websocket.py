"""The WebSocket transport: log events out, control frames in (SPEC §3.3).

Frames in: ``{"type": "prompt"|"steer"|"follow_up"|"abort"|"clear_queue"|
"set_modes"|"edit_queued"|"remove_queued"|"move_queued"|"send_now"|"resume",
"request_id": …}``, each answered by ``ack`` or ``error`` with the same
``request_id`` (every frame with an example: docs/protocol.md). A frame that is not JSON or not a
known type gets an ``error`` frame and the socket stays open. The socket
starts at the live end of the log until the client sends ``resume{after}``.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

import anyio
import msgspec
from starlette.websockets import WebSocket, WebSocketDisconnect

from steerline.core.errors import InvalidValueError, SteerlineError
from steerline.core.text import MAX_ID_LENGTH, check_text
from steerline.log.base import EventLog, RetentionError, StoredEvent
from steerline.service.commands import COMMAND_TYPES, decode_command
from steerline.service.service import ConversationHandle
from steerline.transports.tail import EndReason, LogTail, StreamPlan, StreamRegistry, StreamSettings

logger = logging.getLogger("steerline.ws")

SEND_BATCH_EXTENSION = "steerline.websocket.send_batch"
"""ASGI extension (scope ``extensions``) of a server that takes a batch of text
frames in one ``websocket.send``: ``{SEND_BATCH_KEY: [utf-8 bytes, ...]}``, one
frame per item (``steerline.server.serving.close_frame_protocol``)."""
SEND_BATCH_KEY = "steerline.texts"

MAX_FRAME_BYTES = 1024 * 1024
MAX_PRIORITY = 2**31 - 1
"""Message priorities are within ±MAX_PRIORITY (as on the HTTP API)."""


def _no_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; json.loads accepts them by default
    raise ValueError(f"{name} is not JSON")


_GONE = (WebSocketDisconnect, RuntimeError, OSError)
"""What a send to a socket the client already left raises: starlette's
``WebSocketDisconnect`` (uvicorn's ``ClientDisconnected`` is an ``OSError``)
or a ``RuntimeError`` (starlette's ``WebSocketDisconnected`` once the socket is
closed, uvicorn's "after sending 'websocket.close'" when the protocol closed it)."""


class _WebSocketSink:
    """Every write to the socket, one at a time; a client that left is one
    ``WebSocketDisconnect`` for the session, never an error of the server."""

    def __init__(self, websocket: WebSocket, on_events: Callable[[int], None]) -> None:
        self.websocket = websocket
        # fast_acquire: an uncontended acquire does not yield to the loop (a
        # full loop turn per batch of events, 3.6 % of the WebSocket figure)
        self._lock = anyio.Lock(fast_acquire=True)
        self._on_events = on_events
        self.closed = False
        self._batch = SEND_BATCH_EXTENSION in websocket.scope.get("extensions", {})
        """The server writes a batch of frames at once (see ``serving.py``)."""

    async def _send(self, texts: list[str]) -> None:
        async with self._lock:
            for text in texts:
                if self.closed:
                    raise WebSocketDisconnect(1006)
                try:
                    await self.websocket.send_text(text)
                except _GONE:
                    self.closed = True
                    raise WebSocketDisconnect(1006) from None

    async def close(self, code: int) -> None:
        """Send a close frame unless the socket is already closed."""
        async with self._lock:
            if self.closed:
                return
            self.closed = True
            with contextlib.suppress(*_GONE):
                await self.websocket.close(code=code)

    async def send_json(self, value: dict[str, Any]) -> None:
        await self._send([json.dumps(value)])

    async def events(self, batch: list[StoredEvent]) -> None:
        if self._batch:
            await self._send_batch([event.envelope for event in batch])
        else:
            await self._send([event.envelope.decode() for event in batch])
        self._on_events(len(batch))

    async def _send_batch(self, texts: list[bytes]) -> None:
        """One text frame per envelope, one ASGI message and one socket write for all."""
        async with self._lock:
            if self.closed:
                raise WebSocketDisconnect(1006)
            try:
                await self.websocket.send({"type": "websocket.send", SEND_BATCH_KEY: texts})
            except _GONE:
                self.closed = True
                raise WebSocketDisconnect(1006) from None

    async def ping(self) -> None:
        await self.send_json({"type": "ping"})

    async def hint(self, after: int) -> None:
        await self.send_json({"type": "resume", "after": after})


async def refuse_websocket(websocket: WebSocket, code: str, message: str, close_code: int) -> None:
    """Accept, send one ``error`` frame, close with ``close_code``; a client that
    already left is no error."""
    with contextlib.suppress(*_GONE):
        await websocket.accept()
        await websocket.send_json(
            {"type": "error", "request_id": None, "error": {"code": code, "message": message}}
        )
        await websocket.close(code=close_code)


class WebSocketSession:
    def __init__(
        self,
        websocket: WebSocket,
        conversation: ConversationHandle,
        log: EventLog,
        *,
        settings: StreamSettings,
        registry: StreamRegistry,
        auto_continue: bool,
        on_events: Callable[[int], None] = lambda _n: None,
        on_frame: Callable[[], None] = lambda: None,
    ) -> None:
        self.websocket = websocket
        self.conversation = conversation
        self.log = log
        self.settings = settings
        self.registry = registry
        self.auto_continue = auto_continue
        self.sink = _WebSocketSink(websocket, on_events)
        self._on_frame = on_frame
        """Called for every client frame; raises to refuse it (rate limit)."""
        self._tail_scope: anyio.CancelScope | None = None
        self._group: anyio.abc.TaskGroup | None = None
        self.end_reason: EndReason | None = None

    async def run(self) -> None:
        try:
            async with anyio.create_task_group() as group:
                self._group = group
                self._start_tail(self.log.committed_seq(self.conversation.id))
                await self._receive_loop()
                group.cancel_scope.cancel()
        except* WebSocketDisconnect:
            # the client left (the receive loop or the pump saw it first): an
            # ordinary end, not an error of the server
            pass
        finally:
            self.sink.closed = True

    # -- output ------------------------------------------------------------------
    def _start_tail(self, after: int) -> None:
        if self._tail_scope is not None:
            self._tail_scope.cancel()
        scope = anyio.CancelScope()
        self._tail_scope = scope
        tail = LogTail(
            self.log,
            self.conversation.id,
            StreamPlan(after=after, stop="never"),
            self.settings,
            self.registry,
        )

        async def pump() -> None:
            with scope:
                try:
                    reason = await tail.run(self.sink)
                except WebSocketDisconnect:
                    return
                self.end_reason = reason
                if reason in (
                    EndReason.SLOW,
                    EndReason.SHUTDOWN,
                    EndReason.DELETED,
                    EndReason.UNAVAILABLE,
                ):
                    # 1013 "try again later": resume from the hint's id
                    code = 1001 if reason is EndReason.SHUTDOWN else 1013
                    with anyio.move_on_after(1.0):
                        await self.sink.close(code)
                    if self._group is not None:
                        self._group.cancel_scope.cancel()

        assert self._group is not None
        self._group.start_soon(pump)

    # -- input -------------------------------------------------------------------
    async def _receive_loop(self) -> None:
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text: str | bytes | None = message.get("text")
            if text is None:
                text = message.get("bytes") or b""
            await self._handle(text)

    async def _handle(self, text: str | bytes) -> None:
        request_id: Any = None
        try:
            if len(text) > MAX_FRAME_BYTES:
                raise InvalidValueError(f"frame over {MAX_FRAME_BYTES} bytes")
            if isinstance(text, bytes):
                try:
                    text = text.decode("utf-8")
                except UnicodeDecodeError:
                    raise _FrameError("invalid_json", "frame is not UTF-8 text") from None
                if len(text.encode()) > MAX_FRAME_BYTES:
                    raise InvalidValueError(f"frame over {MAX_FRAME_BYTES} bytes")
            try:
                frame = json.loads(text, parse_constant=_no_constant)
            except (ValueError, RecursionError):
                # RecursionError: nested deeper than the parser's stack allows
                raise _FrameError("invalid_json", "frame is not valid JSON") from None
            if not isinstance(frame, dict):
                raise _FrameError("invalid_frame", "frame must be a JSON object")
            request_id = _request_id(frame.get("request_id"))
            _check_unicode(frame)
            self._on_frame()
            result = await self._dispatch(frame)
            await self.sink.send_json({"type": "ack", "request_id": request_id, **result})
        except (_FrameError, SteerlineError) as exc:
            await self._error(request_id, exc.code, exc.message)
        except WebSocketDisconnect:
            raise
        except Exception:
            # a bug must not end a socket the client is still using
            logger.exception("WebSocket frame failed")
            await self._error(request_id, "internal_error", "internal server error")

    async def _error(self, request_id: Any, code: str, message: str) -> None:
        await self.sink.send_json(
            {"type": "error", "request_id": request_id, "error": {"code": code, "message": message}}
        )

    async def _dispatch(self, frame: dict[str, Any]) -> dict[str, Any]:
        """Decode a frame into the conversation's command set and run it; the
        HTTP routes decode their requests into the same commands."""
        kind = frame.get("type")
        if kind == "resume":
            return await self._resume(frame)
        if not isinstance(kind, str) or kind not in COMMAND_TYPES:
            raise _FrameError("unknown_type", f"unknown frame type {kind!r}")
        fields = {key: value for key, value in frame.items() if key != "request_id"}
        try:
            command = decode_command(fields)
        except msgspec.ValidationError as exc:
            raise _FrameError("invalid_frame", str(exc)) from None
        result = await self.conversation.execute(command, auto_continue=self.auto_continue)
        encoded: dict[str, Any] = msgspec.to_builtins(result)
        return encoded

    async def _resume(self, frame: dict[str, Any]) -> dict[str, Any]:
        after = frame.get("after")
        if not isinstance(after, int) or isinstance(after, bool) or after < 0:
            raise _FrameError("invalid_frame", "'after' must be a non-negative integer")
        oldest = await self.log.oldest_seq(self.conversation.id)
        if oldest and after + 1 < oldest:
            raise RetentionError(
                f"events after {after} are no longer retained; the oldest kept is {oldest}"
            )
        if after > self.log.committed_seq(self.conversation.id):
            raise _FrameError("invalid_event_id", f"no event {after} in this conversation")
        self._start_tail(after)
        return {"after": after}


def _check_unicode(frame: dict[str, Any]) -> None:
    """Refuse a frame with a lone surrogate (``"\\ud800"``) in any key or string,
    as the HTTP API's JSON parser does: such text cannot be stored or sent on."""
    try:
        json.dumps(frame, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidValueError("frame is not valid Unicode text (lone surrogate)") from None


def _request_id(value: Any) -> str | int | None:
    """A frame's ``request_id``, echoed in the reply: a string, an integer or null."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, str) and len(value) <= MAX_ID_LENGTH:
        try:
            return check_text(value, "request_id")
        except InvalidValueError as exc:
            raise _FrameError("invalid_frame", exc.message) from None
    raise _FrameError(
        "invalid_frame",
        f"'request_id' must be a string of at most {MAX_ID_LENGTH} characters, an integer or null",
    )


class _FrameError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
