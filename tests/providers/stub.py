"""A loopback HTTP stub replaying the wire formats of the OpenAI and Anthropic APIs.

It is a real uvicorn server (h11) on a free port of 127.0.0.1, running a raw
ASGI app in the test's own event loop. Tests queue replies with ``push``; each
request takes the next one and is recorded. Replies are exact byte streams:

* OpenAI Chat Completions: ``data: {chunk}`` frames ending with ``data: [DONE]``;
* Anthropic Messages: named events (``event: message_start`` ...; ``ping``).

A reply can stream slowly and forever (``forever=...``), then the stub records
when the client went away (``disconnected`` / ``disconnected_at``); or be cut
mid-way (``cut=True``: the connection drops without the chunked terminator).

Two answers need no queued reply: with ``models`` set, ``GET …/models`` lists
those models (in the OpenAI or the Anthropic format, by the request's
headers) and Anthropic's ``GET …/models/{id}`` finds one (or answers 404);
with ``keys`` set, a request whose API key (``Authorization: Bearer`` or
``x-api-key``) is not one of them gets ``auth_status`` (401 or 403) with the
provider's error body.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import uvicorn

# -- wire formats -----------------------------------------------------------


def sse(data: Any, event: str | None = None) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


class OpenAIWire:
    """Chat Completions stream chunks (``chat.completion.chunk``)."""

    done = sse("[DONE]")

    @staticmethod
    def chunk(delta: dict[str, Any] | None = None, finish: str | None = None) -> bytes:
        return sse(
            {
                "id": "chatcmpl-stub",
                "object": "chat.completion.chunk",
                "created": 1_700_000_000,
                "model": "stub-model",
                "system_fingerprint": "fp_stub",
                "choices": [
                    {"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}
                ],
            }
        )

    @classmethod
    def role(cls) -> bytes:
        return cls.chunk({"role": "assistant", "content": ""})

    @classmethod
    def text(cls, text: str) -> bytes:
        return cls.chunk({"content": text})

    @classmethod
    def reasoning(cls, text: str, field: str = "reasoning_content") -> bytes:
        return cls.chunk({field: text})

    @classmethod
    def call_start(cls, index: int, call_id: str, name: str) -> bytes:
        return cls.chunk(
            {
                "tool_calls": [
                    {
                        "index": index,
                        "id": call_id,
                        "type": "function",
                        "function": {"name": name, "arguments": ""},
                    }
                ]
            }
        )

    @classmethod
    def call_args(cls, index: int, fragment: str) -> bytes:
        return cls.chunk({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})

    @classmethod
    def finish(cls, reason: str) -> bytes:
        return cls.chunk({}, finish=reason)

    @staticmethod
    def usage(prompt: int, completion: int) -> bytes:
        return sse(
            {
                "id": "chatcmpl-stub",
                "object": "chat.completion.chunk",
                "created": 1_700_000_000,
                "model": "stub-model",
                "choices": [],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                },
            }
        )

    @classmethod
    def text_reply(cls, *tokens: str, usage: tuple[int, int] = (10, 5)) -> list[bytes]:
        return [
            cls.role(),
            *(cls.text(t) for t in tokens),
            cls.finish("stop"),
            cls.usage(*usage),
            cls.done,
        ]

    @staticmethod
    def error(message: str, kind: str = "invalid_request_error") -> dict[str, Any]:
        return {"error": {"message": message, "type": kind, "param": None, "code": None}}

    @staticmethod
    def model(name: str) -> dict[str, Any]:
        """One entry of ``GET /v1/models``."""
        return {"id": name, "object": "model", "created": 1_700_000_000, "owned_by": "stub"}


class AnthropicWire:
    """Messages API stream events."""

    @staticmethod
    def message_start(input_tokens: int = 12) -> bytes:
        return sse(
            {
                "type": "message_start",
                "message": {
                    "id": "msg_stub",
                    "type": "message",
                    "role": "assistant",
                    "model": "claude-stub",
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": input_tokens, "output_tokens": 1},
                },
            },
            "message_start",
        )

    @staticmethod
    def ping() -> bytes:
        return sse({"type": "ping"}, "ping")

    @staticmethod
    def block_start(index: int, block: dict[str, Any]) -> bytes:
        return sse(
            {"type": "content_block_start", "index": index, "content_block": block},
            "content_block_start",
        )

    @staticmethod
    def block_delta(index: int, delta: dict[str, Any]) -> bytes:
        return sse(
            {"type": "content_block_delta", "index": index, "delta": delta},
            "content_block_delta",
        )

    @staticmethod
    def block_stop(index: int) -> bytes:
        return sse({"type": "content_block_stop", "index": index}, "content_block_stop")

    @classmethod
    def text_start(cls, index: int) -> bytes:
        return cls.block_start(index, {"type": "text", "text": ""})

    @classmethod
    def text(cls, index: int, text: str) -> bytes:
        return cls.block_delta(index, {"type": "text_delta", "text": text})

    @classmethod
    def thinking_start(cls, index: int) -> bytes:
        return cls.block_start(index, {"type": "thinking", "thinking": "", "signature": ""})

    @classmethod
    def thinking(cls, index: int, text: str) -> bytes:
        return cls.block_delta(index, {"type": "thinking_delta", "thinking": text})

    @classmethod
    def signature(cls, index: int, signature: str) -> bytes:
        return cls.block_delta(index, {"type": "signature_delta", "signature": signature})

    @classmethod
    def tool_start(cls, index: int, call_id: str, name: str) -> bytes:
        return cls.block_start(
            index, {"type": "tool_use", "id": call_id, "name": name, "input": {}}
        )

    @classmethod
    def tool_args(cls, index: int, fragment: str) -> bytes:
        return cls.block_delta(index, {"type": "input_json_delta", "partial_json": fragment})

    @staticmethod
    def message_delta(stop_reason: str, output_tokens: int = 7) -> bytes:
        return sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": output_tokens},
            },
            "message_delta",
        )

    @staticmethod
    def message_stop() -> bytes:
        return sse({"type": "message_stop"}, "message_stop")

    @classmethod
    def text_reply(cls, *tokens: str) -> list[bytes]:
        return [
            cls.message_start(),
            cls.text_start(0),
            cls.ping(),
            *(cls.text(0, t) for t in tokens),
            cls.block_stop(0),
            cls.message_delta("end_turn"),
            cls.message_stop(),
        ]

    @staticmethod
    def error(message: str, kind: str = "invalid_request_error") -> dict[str, Any]:
        return {"type": "error", "error": {"type": kind, "message": message}}

    @staticmethod
    def model(name: str) -> dict[str, Any]:
        """One entry of ``GET /v1/models`` (also what ``GET /v1/models/{id}`` answers)."""
        return {
            "type": "model",
            "id": name,
            "display_name": name,
            "created_at": "2025-01-01T00:00:00Z",
        }


# -- the server -------------------------------------------------------------


@dataclass
class StreamReply:
    frames: list[bytes]
    forever: Callable[[int], bytes] | None = None
    """After ``frames``, send ``forever(n)`` every ``interval`` until the client leaves."""
    interval: float = 0.02
    cut: bool = False
    """Drop the connection after ``frames`` (no terminating chunk)."""


@dataclass
class JSONReply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


Reply = StreamReply | JSONReply


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float


class StubCut(Exception):
    """Raised inside the app to make uvicorn drop the connection mid-body."""


class Stub:
    """The ASGI app: serves queued replies in order and records every request."""

    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.requests: list[Recorded] = []
        self.disconnected = anyio.Event()
        self.disconnected_at: float | None = None
        self.frames_at_disconnect: int | None = None
        """``frames_sent`` when the client went away (the stub's own pace, not the clock)."""
        self.frames_sent = 0
        self.streaming = anyio.Event()
        """Set once a ``forever`` reply has started its endless part."""
        self.base_url = ""
        self.models: list[str] | None = None
        """Answer ``GET …/models`` with these (None: from the queue, as any request)."""
        self.keys: set[str] | None = None
        """Accept only these API keys (None: any)."""
        self.auth_status = 401
        """What a refused key gets: 401 (authentication) or 403 (permission)."""

    def push(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def bodies(self) -> list[Any]:
        return [r.body for r in self.requests]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        raw = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.requests.append(
            Recorded(
                method=scope["method"],
                path=scope["path"],
                headers=headers,
                body=json.loads(raw) if raw else None,
                at=time.monotonic(),
            )
        )
        answer = self._answer(scope["method"], scope["path"], headers)
        if answer is not None:
            await self._json(send, answer)
            return
        if not self.replies:
            await self._json(send, JSONReply(500, {"error": {"message": "stub: no reply"}}))
            return
        reply = self.replies.popleft()
        if isinstance(reply, JSONReply):
            await self._json(send, reply)
        else:
            await self._stream(receive, send, reply)

    def _answer(self, method: str, path: str, headers: dict[str, str]) -> JSONReply | None:
        """The key check and the model list, when configured; else None (use the queue)."""
        anthropic = "anthropic-version" in headers
        if self.keys is not None:
            key = headers.get("x-api-key") or headers.get("authorization", "").removeprefix(
                "Bearer "
            )
            if key not in self.keys:
                if anthropic:
                    kind = "authentication_error" if self.auth_status == 401 else "permission_error"
                    return JSONReply(
                        self.auth_status, AnthropicWire.error("invalid x-api-key", kind)
                    )
                return JSONReply(
                    self.auth_status,
                    {
                        "error": {
                            "message": "Incorrect API key provided",
                            "type": "invalid_request_error",
                            "param": None,
                            "code": "invalid_api_key",
                        }
                    },
                )
        if self.models is None or method != "GET":
            return None
        head, _, last = path.rstrip("/").rpartition("/")
        if last == "models":
            if anthropic:
                data = [AnthropicWire.model(name) for name in self.models]
                return JSONReply(
                    200,
                    {
                        "data": data,
                        "has_more": False,
                        "first_id": data[0]["id"] if data else None,
                        "last_id": data[-1]["id"] if data else None,
                    },
                )
            return JSONReply(
                200, {"object": "list", "data": [OpenAIWire.model(m) for m in self.models]}
            )
        if head.endswith("/models") and anthropic:
            # the Messages API resolves an alias ("claude-x") to a dated id ("claude-x-2025…")
            found = [m for m in self.models if m == last or m.startswith(f"{last}-")]
            if found:
                return JSONReply(200, AnthropicWire.model(found[0]))
            return JSONReply(404, AnthropicWire.error(f"model: {last}", "not_found_error"))
        return None

    async def _json(self, send: Any, reply: JSONReply) -> None:
        body = json.dumps(reply.body).encode()
        headers = [(b"content-type", b"application/json")]
        headers += [(k.encode(), v.encode()) for k, v in reply.headers.items()]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _stream(self, receive: Any, send: Any, reply: StreamReply) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                ],
            }
        )
        gone = anyio.Event()

        async def watch() -> None:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.disconnected_at = time.monotonic()
                self.frames_at_disconnect = self.frames_sent
                self.disconnected.set()
                gone.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            for frame in reply.frames:
                await send({"type": "http.response.body", "body": frame, "more_body": True})
                self.frames_sent += 1
            if reply.forever is not None:
                self.streaming.set()
                n = 0
                while not gone.is_set():
                    await send(
                        {"type": "http.response.body", "body": reply.forever(n), "more_body": True}
                    )
                    self.frames_sent += 1
                    n += 1
                    with anyio.move_on_after(reply.interval):
                        await gone.wait()
                return
            tg.cancel_scope.cancel()
        if reply.cut:
            raise StubCut("stub: connection cut mid-stream")
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class _StubServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = anyio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # leave the test process's signal handlers alone

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        finally:
            self.ready.set()


@contextlib.asynccontextmanager
async def running_stub() -> AsyncIterator[Stub]:
    """Start the stub on a free loopback port; stop it (gracefully) afterwards."""
    stub = Stub()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.setblocking(False)
    host, port = sock.getsockname()[:2]
    stub.base_url = f"http://{host}:{port}"
    config = uvicorn.Config(
        stub,
        lifespan="off",
        http="h11",
        ws="none",
        log_level="critical",
        access_log=False,
        timeout_graceful_shutdown=2,
    )
    server = _StubServer(config)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            with anyio.fail_after(5):
                await server.ready.wait()
            assert server.started, "the stub server did not start"
            try:
                yield stub
            finally:
                server.should_exit = True
    finally:
        sock.close()
