"""Raw clients of the benchmark table: plain sockets and asyncio protocols, no HTTP library.

They do as little per event as a client can (count a marker with
``bytes.count``, parse a WebSocket frame header, find a word with one regex
per read), so that the client is not what bounds a figure; every figure
reports the client's CPU time beside it to show that.

* :func:`http_stream`: one HTTP/1.1 request on a blocking socket with
  ``Connection: close``, read to EOF, counting SSE events (``\\ndata:``
  lines; an event has exactly one) and ``: resume`` hints.
* :func:`ws_stream`: a WebSocket handshake, one text frame, then server
  frames counted until a ``done`` envelope.
* :class:`Conn`: a keep-alive HTTP/1.1 connection on asyncio streams
  (content-length and chunked bodies), for requests and streams read chunk
  by chunk.
* :class:`Viewer`: an SSE viewer as an ``asyncio.Protocol``, for hundreds of
  concurrent streams; it stamps the arrival time of every word ``w<k>``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import os
import re
import socket
import time
from array import array
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

HOST = "127.0.0.1"
READ_SIZE = 256 * 1024
SMALL_READ = 16 * 1024
NAP = 0.0002
"""After a read under SMALL_READ bytes, the blocking clients sleep NAP seconds so
the next read takes what arrived meanwhile: without it a client as fast as the
server wakes once per TCP segment (one event, for a server that writes one event
per send) and spends most of a core on recv calls; with it a client wakes at
most ~4 000 times a second, and at most NAP late at the end of a stream. The
kernel's receive buffer holds far more than NAP of events, so the server never
waits for it."""

DATA = b"\ndata:"
HINT = b"\n: resume"
WORD = re.compile(rb'"content":" w(\d+)"')
"""A viewer's word: the demo model's token `` w<k>`` (or the broadcast's) in a chunk."""


def _request(
    method: str,
    path: str,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
    *,
    close: bool = False,
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}"]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
        lines.append("Content-Type: application/json")
    if close:
        lines.append("Connection: close")
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# -- one stream on a blocking socket ---------------------------------------------------
@dataclass
class StreamResult:
    status: int
    events: int
    hints: int
    bytes: int
    elapsed: float
    """From sending the request to EOF, seconds."""
    cpu: float
    """CPU time of this process meanwhile, seconds."""
    tail: bytes
    """The last bytes of the stream (the end checks look at them)."""

    @property
    def rate(self) -> float:
        return self.events / self.elapsed

    @property
    def client_busy(self) -> float:
        return self.cpu / self.elapsed


def http_stream(
    port: int,
    method: str,
    path: str,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
    timeout: float = 120.0,
) -> StreamResult:
    """Send one request with ``Connection: close`` and read the response to EOF."""
    request = _request(method, path, body, headers, close=True)
    events = hints = total = 0
    tail = b"\n"
    head = b""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cpu0, t0 = time.process_time(), time.perf_counter()
        sock.sendall(request)
        recv = sock.recv
        while True:
            chunk = recv(READ_SIZE)
            if not chunk:
                break
            if not head:
                head = chunk[:16]
            total += len(chunk)
            # a marker split between two reads: in (len(marker) - 1) bytes either side
            # of the boundary, which hold no whole marker of either read
            events += chunk.count(DATA) + (tail[-5:] + chunk[:5]).count(DATA)
            hints += chunk.count(HINT) + (tail[-8:] + chunk[:8]).count(HINT)
            tail = chunk[-4096:] if len(chunk) >= 4096 else (tail + chunk)[-4096:]
            if len(chunk) < SMALL_READ:
                time.sleep(NAP)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    if not head.startswith(b"HTTP/1.1 "):
        raise RuntimeError(f"{method} {path}: not an HTTP response: {head!r}")
    status = int(head[9:12])
    return StreamResult(status, events, hints, total, elapsed, cpu, tail)


# -- one WebSocket on a blocking socket ------------------------------------------------
@dataclass
class WsResult:
    frames: int
    """Envelopes (text frames starting ``{"event"``), the ``done`` included."""
    others: int
    """Other text frames (acks, errors)."""
    elapsed: float
    cpu: float
    last: bytes
    """The ``done`` envelope."""

    @property
    def rate(self) -> float:
        return self.frames / self.elapsed

    @property
    def client_busy(self) -> float:
        return self.cpu / self.elapsed


def _ws_frame(payload: bytes, opcode: int = 1) -> bytes:
    """A masked client frame (RFC 6455 §5.2)."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        header = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        header = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        header = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


def ws_stream(port: int, path: str, frame: bytes, timeout: float = 120.0) -> WsResult:
    """Upgrade, send ``frame`` (text), count envelopes until ``{"event":"done"``."""
    key = base64.b64encode(os.urandom(16)).decode()
    handshake = _request(
        "GET",
        path,
        headers={
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": key,
            "Sec-WebSocket-Version": "13",
        },
    )
    frames = others = 0
    last = b""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(handshake)
        buf = bytearray()
        while b"\r\n\r\n" not in buf:
            data = sock.recv(READ_SIZE)
            if not data:
                raise RuntimeError(f"WS {path}: closed during the handshake: {bytes(buf)!r}")
            buf += data
        head_end = buf.index(b"\r\n\r\n") + 4
        if not buf.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"WS {path}: handshake refused: {bytes(buf[:300])!r}")
        del buf[:head_end]
        cpu0, t0 = time.process_time(), time.perf_counter()
        sock.sendall(_ws_frame(frame))
        pos = 0
        done = False
        while not done:
            data = sock.recv(READ_SIZE)
            if not data:
                raise RuntimeError(f"WS {path}: closed after {frames} envelopes, no done")
            buf += data
            size = len(buf)
            while size - pos >= 2:
                b1 = buf[pos + 1] & 0x7F
                start = pos + 2
                if b1 == 126:
                    if size - pos < 4:
                        break
                    b1 = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                    start = pos + 4
                elif b1 == 127:
                    if size - pos < 10:
                        break
                    b1 = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                    start = pos + 10
                end = start + b1
                if end > size:
                    break
                opcode = buf[pos] & 0x0F
                if opcode == 1:
                    if buf.startswith(b'{"event"', start):
                        frames += 1
                        if buf.startswith(b'{"event":"done"', start):
                            last = bytes(buf[start:end])
                            done = True
                    else:
                        others += 1
                        if buf.startswith(b'{"type":"error"', start):
                            raise RuntimeError(f"WS {path}: {bytes(buf[start:end])!r}")
                elif opcode == 8:
                    raise RuntimeError(
                        f"WS {path}: closed by the server: {bytes(buf[start:end])!r}"
                    )
                elif opcode == 9:
                    sock.sendall(_ws_frame(bytes(buf[start:end]), 10))
                pos = end
            if pos > READ_SIZE:
                del buf[:pos]
                pos = 0
            if len(data) < SMALL_READ and not done:
                time.sleep(NAP)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        sock.sendall(_ws_frame(b"\x03\xe8", 8))  # close 1000
        sock.settimeout(2.0)
        try:
            while sock.recv(READ_SIZE):
                pass
        except OSError:
            pass
    return WsResult(frames, others, elapsed, cpu, last)


# -- keep-alive connections on asyncio -------------------------------------------------
@dataclass
class Response:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


class Conn:
    """One keep-alive HTTP/1.1 connection (asyncio streams)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        reader, writer = await asyncio.open_connection(HOST, port, limit=1 << 22)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    def send(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.writer.write(_request(method, path, body, headers))

    async def first_byte(self) -> bytes:
        return await self.reader.readexactly(1)

    async def head(self, first: bytes = b"") -> tuple[int, dict[bytes, bytes]]:
        raw = first + await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
        return status, headers

    async def body(
        self, headers: Mapping[bytes, bytes], on_chunk: Callable[[bytes], object] | None = None
    ) -> bytes:
        """Read a response body (chunked or content-length); ``on_chunk`` sees each
        HTTP chunk as it arrives, and then nothing is kept."""
        reader = self.reader
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            parts: list[bytes] = []
            while True:
                line = await reader.readuntil(b"\r\n")
                size = int(line.split(b";", 1)[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")  # no trailers
                    break
                data = (await reader.readexactly(size + 2))[:-2]
                if on_chunk is None:
                    parts.append(data)
                else:
                    on_chunk(data)
            return b"".join(parts)
        length = int(headers.get(b"content-length", b"0"))
        data = await reader.readexactly(length) if length else b""
        if on_chunk is not None and data:
            on_chunk(data)
            return b""
        return data

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        self.send(method, path, body, headers)
        status, head = await self.head()
        return Response(status, head, await self.body(head))

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):  # a reset by the server is no failure here
            await self.writer.wait_closed()


class Exchange(asyncio.Protocol):
    """A keep-alive connection for whole exchanges, cheaper than :class:`Conn`: one
    request at a time, its response handed back raw (head, then the body as sent,
    chunk framing included) once complete: its ``content-length`` arrived, or the
    last chunk (``0\\r\\n\\r\\n``) of a chunked body. A read per TCP segment, no
    per-chunk parsing: hundreds of short streams a second cost the client little."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[bytes] | None = None
        self.body_at = -1
        self.chunked = False
        self.length = 0

    @classmethod
    async def open(cls, port: int) -> Exchange:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(cls, HOST, port)
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if self.body_at < 0:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            self.body_at = end + 4
            head = bytes(buffer[:end]).lower()
            self.chunked = b"transfer-encoding: chunked" in head
            found = re.search(rb"content-length: *(\d+)", head)
            self.length = int(found.group(1)) if found else 0
        if self.chunked:
            complete = buffer.endswith(b"\r\n0\r\n\r\n") or (
                len(buffer) - self.body_at == 5 and buffer.endswith(b"0\r\n\r\n")
            )
        else:
            complete = len(buffer) - self.body_at >= self.length
        if complete and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(bytes(buffer))
            buffer.clear()
            self.body_at = -1

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection lost: {exc}"))

    async def exchange(self, request: bytes) -> bytes:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def request_bytes(
    method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None
) -> bytes:
    """An HTTP/1.1 request (keep-alive), as the clients here send it."""
    return _request(method, path, body, headers)


# -- many SSE viewers ------------------------------------------------------------------
class Viewer(asyncio.Protocol):
    """An SSE viewer: stamps the arrival (``time.monotonic``) of each word ``w<k>``.

    ``arrivals[k]`` is NaN until word k arrives. ``ready`` resolves on the
    response head (200, or an error), ``finished`` on a ``done`` event, a
    ``: resume`` hint (``dropped``) or the connection's end.
    """

    def __init__(self, request: bytes, words: int) -> None:
        loop = asyncio.get_running_loop()
        self.request = request
        self.arrivals = array("d", [math.nan]) * words if words else array("d")
        self.ready: asyncio.Future[int] = loop.create_future()
        self.finished: asyncio.Future[str] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.carry = b""
        self.dropped = False
        self.bytes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        self.bytes += len(data)
        if not self.ready.done():
            data = self.carry + data
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.carry = data
                return
            status = int(data[9:12]) if data.startswith(b"HTTP/1.1 ") else 0
            self.ready.set_result(status)
            if status != 200:
                self._finish(f"status {status}: {data[:300]!r}")
                return
            self.carry = b""
            data = data[end + 4 :]
        data = self.carry + data if self.carry else data
        end = data.rfind(b"\n\n")
        if end < 0:
            self.carry = data
            return
        self.carry = data[end + 2 :]
        block = data[: end + 2]
        arrivals = self.arrivals
        size = len(arrivals)
        for word in WORD.findall(block):
            k = int(word)
            if k < size:
                arrivals[k] = now
        if b'"event":"done"' in block:
            self._finish("done")
        elif HINT in block:
            self.dropped = True
            self._finish("dropped")

    def _finish(self, reason: str) -> None:
        if not self.finished.done():
            self.finished.set_result(reason)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_result(0)
        self._finish(f"connection lost ({exc})")

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()


@dataclass
class Viewers:
    items: list[Viewer] = field(default_factory=list)

    def close(self) -> None:
        for viewer in self.items:
            viewer.close()


async def open_viewers(
    port: int,
    path: str,
    count: int,
    words: int = 0,
    headers: Mapping[str, str] | None = None,
    parallel: int = 100,
    within: float = 60.0,
) -> Viewers:
    """Open ``count`` SSE viewers of ``path``, ``parallel`` connects at a time; return
    once each has its response head (all 200, or RuntimeError)."""
    loop = asyncio.get_running_loop()
    request = _request("GET", path, headers=headers)
    viewers = Viewers()
    gate = asyncio.Semaphore(parallel)

    async def one() -> None:
        async with gate:
            viewer = Viewer(request, words)
            viewers.items.append(viewer)
            await loop.create_connection(lambda: viewer, HOST, port)
            await viewer.ready

    try:
        async with asyncio.timeout(within):
            await asyncio.gather(*(one() for _ in range(count)))
    except TimeoutError:
        viewers.close()
        ready = sum(1 for v in viewers.items if v.ready.done())
        raise RuntimeError(
            f"only {ready} of {count} viewers of {path} got a response within {within:.0f} s"
        ) from None
    except BaseException:
        viewers.close()
        raise
    refused = [v for v in viewers.items if v.ready.result() != 200]
    if refused:
        viewers.close()
        reason = refused[0].finished.result() if refused[0].finished.done() else "?"
        raise RuntimeError(f"{len(refused)} of {count} viewers refused: {reason}")
    return viewers


# -- statistics ------------------------------------------------------------------------
def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``; NaN when empty."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]
