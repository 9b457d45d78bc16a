"""The bare baselines of the benchmark table: raw ASGI apps on uvicorn, nothing behind them.

``table.py`` runs this file as a server subprocess::

    python benchmarks/baselines.py --port PORT

uvicorn runs it with what ``steerline serve`` gets: uvloop, httptools,
websockets-sansio, on a socket of its own process. No access log and no
middleware: this is what any Python ASGI server could do on this machine, the
floor under each figure. Events are pre-encoded bytes of the size of
steerline's ``message_chunk`` (the client passes the size). Endpoints:

``GET /healthz``
    ``ok``.
``GET /sse?n=N&size=S``
    N SSE events (``id:``/``data:`` framing), one ASGI send each (figure 1).
``WS /ws``
    a Starlette ``WebSocket``: reads one text frame ``{"n": N, "size": S}``,
    sends N pre-encoded text frames, the last one a ``done`` envelope, then
    waits for the client to close (figure 2).
``POST /steer``
    reads the body, answers 202 with a small JSON body (figure 3).
``GET /broadcast?ch=C``, ``POST /tick?ch=C&count=M&period=P&size=S&times=FILE``, ``POST /stop?ch=C``
    a fan-out (figure 4): ``/tick`` starts channel C's ticker, which sleeps
    P seconds, then encodes one event (content `` w<k>``) once, appends it to
    the channel and wakes every viewer, M times or until ``/stop``; it writes
    ``<monotonic time>\\tw<k>`` per event to FILE (the clock of the client's
    latencies). Each viewer, woken, writes everything it has not sent yet in
    one send (one event when it keeps up, a batch when it is behind). The
    ticker sleeps P per event like the demo model's ``/delay``, so a loop
    busy with viewers slows it the same way.
``GET /idle``
    SSE headers and a ``retry:`` line, then nothing until the client leaves
    (figure 5).
``GET /idle-starlette``
    the same through Starlette's ``StreamingResponse`` (an async generator
    that yields the ``retry:`` line, then waits forever): what an idle SSE
    stream costs once a framework is in the way (figure 5's second baseline).
``POST /run?n=N&size=S``
    reads the body, streams N SSE events, one send each (figure 6).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any, TextIO
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


# -- pre-encoded events (also used by the clients to size what they expect) ------------
def envelope(seq: int, size: int, content: str = " ab", event: str = "message_chunk") -> bytes:
    """A JSON envelope ``{"event", "data", "seq"}`` of ``size`` bytes (padded)."""
    head = b'{"event":"%s","data":{"conversation_id":"bench","role":"agent","pad":"' % (
        event.encode()
    )
    tail = b'","payload":{"content":"%s"}},"seq":%d}' % (content.encode(), seq)
    return head + b"x" * max(1, size - len(head) - len(tail)) + tail


def sse_event(seq: int, size: int, content: str = " ab", event: str = "message_chunk") -> bytes:
    """``id: SEQ\\ndata: ENVELOPE\\n\\n``, ``size`` bytes in all."""
    head = b"id: %d\ndata: " % seq
    return head + envelope(seq, size - len(head) - 2, content, event) + b"\n\n"


_cache: dict[tuple[int, int], list[bytes]] = {}


def sse_events(n: int, size: int) -> list[bytes]:
    """N events, the last one a ``done`` (as a steerline stream ends)."""
    key = (n, size)
    if key not in _cache:
        events = [sse_event(i + 1, size) for i in range(n - 1)]
        events.append(sse_event(n, size, "", "done"))
        _cache[key] = events
    return _cache[key]


# -- the app ---------------------------------------------------------------------------
def _query(scope: Scope) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}


async def _read_body(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return body
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return body


async def _plain(send: Send, status: int, body: bytes, kind: bytes = b"text/plain") -> None:
    headers = [(b"content-type", kind), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _stream(send: Send, events: list[bytes]) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    for event in events:
        await send({"type": "http.response.body", "body": event, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


class Channel:
    """One broadcast: events encoded once, appended to a list every viewer reads."""

    def __init__(self) -> None:
        self.events: list[bytes] = []
        self.wake = asyncio.Event()
        self.finished = False
        self.stopped = False
        self.ticker: asyncio.Task[None] | None = None

    def publish(self, event: bytes) -> None:
        self.events.append(event)
        wake, self.wake = self.wake, asyncio.Event()
        wake.set()

    async def tick(self, count: int, period: float, size: int, times: TextIO | None) -> None:
        seq = 0
        try:
            for k in range(count):
                await asyncio.sleep(period)
                if self.stopped:
                    break
                seq += 1
                produced = time.monotonic()
                self.publish(sse_event(seq, size, f" w{k}"))
                if times is not None:
                    times.write(f"{produced!r}\tw{k}\n")
        finally:
            if times is not None:
                times.close()
            self.finished = True
            self.publish(sse_event(seq + 1, size, "", "done"))


channels: dict[str, Channel] = {}


def _open_times(path: str) -> TextIO:
    """The ticker's production-time file (a small local file: opened in the loop)."""
    return open(path, "a", buffering=1)  # the ticker closes it


async def _viewer(send: Send, channel: Channel) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    await send({"type": "http.response.body", "body": b"retry: 1000\n", "more_body": True})
    sent = 0
    while True:
        events = channel.events
        end = len(events)
        if sent < end:
            body = events[sent] if end - sent == 1 else b"".join(events[sent:end])
            sent = end
            await send({"type": "http.response.body", "body": body, "more_body": True})
            continue
        if channel.finished:
            break
        await channel.wake.wait()
    await send({"type": "http.response.body", "body": b""})


async def _websocket(scope: Scope, receive: Receive, send: Send) -> None:
    from starlette.websockets import WebSocket, WebSocketDisconnect

    websocket = WebSocket(scope, receive, send)  # type: ignore[arg-type]
    await websocket.accept()
    try:
        while True:
            request = json.loads(await websocket.receive_text())
            n, size = int(request["n"]), int(request["size"])
            frames = [envelope(i + 1, size).decode() for i in range(n - 1)]
            frames.append(envelope(n, size, "", "done").decode())
            for frame in frames:
                await websocket.send_text(frame)
    except WebSocketDisconnect:
        return


async def _starlette_idle(scope: Scope, receive: Receive, send: Send) -> None:
    from starlette.responses import StreamingResponse

    async def body() -> AsyncIterator[bytes]:
        yield b"retry: 1000\n"
        await asyncio.Event().wait()

    headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
    response = StreamingResponse(body(), media_type="text/event-stream", headers=headers)
    await response(scope, receive, send)  # type: ignore[arg-type]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket":
        await _websocket(scope, receive, send)
        return
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/sse":
        query = _query(scope)
        await _stream(send, sse_events(int(query["n"]), int(query["size"])))
    elif path == "/steer":
        await _read_body(receive)
        await _plain(send, 202, b'{"queued":true,"run_id":"run-0"}', b"application/json")
    elif path == "/run":
        query = _query(scope)
        await _read_body(receive)
        await _stream(send, sse_events(int(query["n"]), int(query["size"])))
    elif path == "/broadcast":
        channel = channels.setdefault(_query(scope)["ch"], Channel())
        await _viewer(send, channel)
    elif path == "/tick":
        query = _query(scope)
        await _read_body(receive)
        channel = channels.setdefault(query["ch"], Channel())
        times = _open_times(query["times"]) if "times" in query else None
        channel.ticker = asyncio.create_task(
            channel.tick(int(query["count"]), float(query["period"]), int(query["size"]), times)
        )
        await _plain(send, 202, b"started")
    elif path == "/stop":
        await _read_body(receive)
        channel = channels[_query(scope)["ch"]]
        channel.stopped = True
        await _plain(send, 200, b"stopping")
    elif path == "/idle":
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        await send({"type": "http.response.body", "body": b"retry: 1000\n", "more_body": True})
        while (await receive())["type"] != "http.disconnect":
            pass
    elif path == "/idle-starlette":
        await _starlette_idle(scope, receive, send)
    elif path == "/healthz":
        await _plain(send, 200, b"ok")
    else:
        await _plain(send, 404, b"not found")


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        lifespan="off",
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
