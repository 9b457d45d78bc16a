"""Request bodies: at most ``max_body_bytes`` (413), within ``body_timeout`` (408).

uvicorn has neither limit. A refusal must also reach the client: a server that
answers and closes while the client is still sending resets the connection
(unread data in the kernel's buffer makes the close a RST), and the client
never reads the answer. So the 413 goes out at once, complete per its
``Content-Length``, and the rest of the body is then read and discarded (up to
``max_drain_bytes``, within the body timeout) before the response ends;
uvicorn closes the connection only after that. A body that cannot be drained
(longer than that, of unknown length beyond it, slow, or sent after ``Expect:
100-continue`` was refused) gets ``Connection: close``.

The limits apply until the response starts: a stream that is already
answering reads nothing more than the client's disconnect. A request without
a body (no ``Content-Length`` or ``Content-Length: 0``, and no
``Transfer-Encoding``: RFC 9112 §6.3) can break neither limit, so it reaches
the app with the server's own ``receive`` and ``send``: nothing wraps the
writes of a long stream (``GET …/stream``, one write per wake-up per viewer).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from steerline.server.errors import error_response


@dataclass(frozen=True, slots=True)
class _Refusal:
    status: int
    code: str
    message: str
    drain: bool
    """Read the rest of the body before ending the response (413)."""


class _Refused(Exception):
    pass


class BodyLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        body_timeout: float = 30.0,
        max_drain_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout
        self.max_drain_bytes = max_drain_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = _Request(self, scope, receive, send)
        if not request.chunked and not request.length:
            await self.app(scope, receive, send)  # no body: nothing to limit
            return
        await request.run()

    def too_large(self) -> _Refusal:
        return _Refusal(
            413, "body_too_large", f"request body over {self.max_body_bytes} bytes", drain=True
        )

    def too_slow(self) -> _Refusal:
        return _Refusal(
            408,
            "request_timeout",
            f"request body not received within {self.body_timeout:g} s",
            drain=False,
        )


class _Request:
    """One request's body accounting."""

    def __init__(self, limits: BodyLimitMiddleware, scope: Scope, receive: Receive, send: Send):
        self.limits = limits
        self.scope = scope
        self.receive = receive
        self.send = send
        self.deadline = anyio.current_time() + limits.body_timeout
        self.length: int | None = None
        self.expect_continue = False
        self.chunked = False
        """A ``Transfer-Encoding`` header: a body of unknown length follows."""
        invalid_length = False
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                if value.isdigit() and len(value) < 20:
                    self.length = int(value)
                else:
                    self.length, invalid_length = None, True
            elif name == b"transfer-encoding":
                self.chunked = True
            elif name == b"expect" and value.lower() == b"100-continue":
                self.expect_continue = True
        if invalid_length:
            self.chunked = True  # not a length we can trust: limit the body as read
        self.received = 0
        self.complete = False
        self.started = False
        self.refusal: _Refusal | None = None

    async def run(self) -> None:
        if self.length is not None and self.length > self.limits.max_body_bytes:
            await self.refuse(self.limits.too_large())
            return
        with contextlib.suppress(_Refused):
            await self.limits.app(self.scope, self.limited_receive, self.tracking_send)
        if self.refusal is not None and not self.started:
            await self.refuse(self.refusal)

    async def limited_receive(self) -> Message:
        if self.complete or self.started:
            return await self.receive()
        message: Message | None = None
        with anyio.move_on_after(self.deadline - anyio.current_time()):
            message = await self.receive()
        if message is None:
            self.refusal = self.limits.too_slow()
            raise _Refused
        if message["type"] != "http.request":
            self.complete = True  # http.disconnect
            return message
        self.received += len(message.get("body", b""))
        self.complete = not message.get("more_body", False)
        if self.received > self.limits.max_body_bytes:
            self.refusal = self.limits.too_large()
            raise _Refused
        return message

    async def tracking_send(self, message: Message) -> None:
        if self.refusal is not None:
            # The app caught _Refused and answered with its own error (FastAPI
            # turns any failed body read into 400 "error parsing the body"):
            # answer with the refusal instead and drop the app's response.
            if not self.started:
                await self.refuse(self.refusal)
            return
        if message["type"] == "http.response.start":
            self.started = True
        await self.send(message)

    async def refuse(self, refusal: _Refusal) -> None:
        self.started = True
        drain = refusal.drain and not self.complete and not self.expect_continue
        if drain and self.length is not None:
            drain = self.length - self.received <= self.limits.max_drain_bytes
        response = error_response(refusal.status, refusal.code, refusal.message)
        headers = list(response.raw_headers)
        # a body left unread cannot be skipped to the next request: close after it
        if not self.complete and not (drain and self.length is not None):
            headers.append((b"connection", b"close"))
        await self.send(
            {"type": "http.response.start", "status": refusal.status, "headers": headers}
        )
        await self.send({"type": "http.response.body", "body": response.body, "more_body": True})
        if drain:
            await self._drain()
        await self.send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _drain(self) -> None:
        """Read and drop the rest of the body, within the byte and time bounds."""
        drained = 0
        with anyio.move_on_after(self.deadline - anyio.current_time()):
            while drained <= self.limits.max_drain_bytes:
                message = await self.receive()
                if message["type"] != "http.request":
                    return
                drained += len(message.get("body", b""))
                if not message.get("more_body", False):
                    self.complete = True
                    return
