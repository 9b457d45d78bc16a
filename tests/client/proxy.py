"""A fault-injecting TCP proxy on loopback, for the SDK's resume tests.

It sits between a client and a real server and breaks connections at seeded
random points: ``cuts`` faults are planned, each armed on
every new connection until it happens (a connection that ends before its
byte count passes), then connections pass through untouched. Faults:

- ``reset``: after N bytes of the answer, both sides are reset (RST);
- ``close``: after N bytes of the answer, both sides are closed (FIN), so the
  client sees a body that stops mid-chunk;
- ``stall``: after N bytes of the answer nothing more is forwarded, the
  connection stays open (the client must notice by its read timeout);
- ``upload``: the request is cut after N bytes (it may or may not have
  reached the server whole: the case that makes a re-POST need to be
  idempotent).

Every kind occurs at least once when ``cuts >= 4`` (the order is shuffled by
the seed). :meth:`sever` takes the proxy down for good (connections reset,
new ones refused). It runs its own event loop in a thread, so the blocking
``Client`` and the ``AsyncClient`` are tested through the same proxy.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

KINDS = ("reset", "close", "stall", "upload")


@dataclass
class Fault:
    kind: str
    after_bytes: int
    done: bool = False
    """The fault happened (the connection carried that many bytes first)."""


@dataclass
class FaultProxy:
    upstream_port: int
    seed: int
    cuts: int = 6
    answer_bytes: tuple[int, int] = (100, 9000)
    """Range of answer bytes forwarded before a reset/close/stall."""
    request_bytes: tuple[int, int] = (20, 150)
    """Range of request bytes forwarded before an upload cut (every request is longer)."""
    faults: list[Fault] = field(default_factory=list)
    connections: int = 0
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _server: asyncio.Server | None = None
    _thread: threading.Thread | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        kinds = list(KINDS) * (self.cuts // len(KINDS))
        kinds += rng.sample(KINDS, self.cuts - len(kinds))
        rng.shuffle(kinds)
        for kind in kinds:
            limits = self.request_bytes if kind == "upload" else self.answer_bytes
            self.faults.append(Fault(kind, rng.randint(*limits)))
        self._plan = list(self.faults)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def happened(self) -> list[Fault]:
        return [fault for fault in self.faults if fault.done]

    def describe(self) -> str:
        done = ", ".join(f"{f.kind}@{f.after_bytes}" for f in self.happened)
        return f"seed {self.seed}: {len(self.happened)} faults ({done}), {self.connections} conns"

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(started.set)
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="fault-proxy", daemon=True)
        self._thread.start()
        assert started.wait(5), "proxy loop did not start"
        future = asyncio.run_coroutine_threadsafe(self._listen(), loop)
        future.result(timeout=5)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def sever(self) -> None:
        """Down for good: reset every connection, refuse new ones (nothing listens)."""
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self._sever(), self._loop).result(timeout=5)

    async def _sever(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            _reset(writer)

    def stop(self) -> None:
        if self._loop is None or self._loop.is_closed():
            return
        with suppress(RuntimeError):
            asyncio.run_coroutine_threadsafe(self._sever(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(timeout=5)

    # -- one connection ----------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        # the next planned fault, armed on each connection until it happens
        fault = self._plan[0] if self._plan else None
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            self._writers.discard(writer)
            return
        self._writers.add(up_writer)
        ends = (writer, up_writer)
        up_limit = fault.after_bytes if fault and fault.kind == "upload" else None
        down_limit = fault.after_bytes if fault and fault.kind != "upload" else None
        upload = asyncio.ensure_future(self._pump(reader, up_writer, up_limit))
        download = asyncio.ensure_future(self._pump(up_reader, writer, down_limit))
        try:
            done, _ = await asyncio.wait({upload, download}, return_when=asyncio.FIRST_COMPLETED)
            if fault is not None and any(task.result() for task in done):
                fault.done = True
                self._plan.remove(fault)
                upload.cancel()
                download.cancel()
                await asyncio.wait({upload, download})
                if fault.kind == "stall":
                    # forward nothing more, keep the connection open: the client
                    # has to notice by its read timeout and close it
                    await reader.read()
                elif fault.kind == "close":
                    for end in ends:
                        end.close()
                else:
                    for end in ends:
                        _reset(end)
            else:
                # a direction ended normally: the other ends with its socket
                await asyncio.wait({upload, download})
        except (ConnectionError, OSError):
            pass
        finally:
            upload.cancel()
            download.cancel()
            for end in ends:
                end.transport.abort()
                self._writers.discard(end)

    @staticmethod
    async def _pump(
        source: asyncio.StreamReader, target: asyncio.StreamWriter, limit: int | None
    ) -> bool:
        """Copy ``source`` to ``target``; True when it stopped at ``limit`` bytes."""
        sent = 0
        try:
            while True:
                data = await source.read(65536)
                if not data:
                    if target.can_write_eof():
                        target.write_eof()
                    return False
                if limit is not None and sent + len(data) >= limit:
                    target.write(data[: limit - sent])
                    await target.drain()
                    return True
                target.write(data)
                sent += len(data)
                await target.drain()
        except (ConnectionError, OSError):
            return False


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0), not a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@contextmanager
def fault_proxy(upstream_port: int, seed: int, cuts: int = 6) -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream_port, seed, cuts)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
