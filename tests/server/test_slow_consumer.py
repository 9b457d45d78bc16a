"""A viewer that stops reading is dropped with a resume hint; nobody else waits (SPEC §4).

The stalled viewer is a raw socket that sends its request and then reads
nothing. Loopback TCP buffers are large (the kernel autotunes a send buffer
up to megabytes), so the test shrinks the buffers of that one connection:
the client's receive buffer before it connects, the server's send buffer
through the server's own loop. Everything else is the production path.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable
from typing import Any

import anyio
import h11
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from steerline.server.settings import ServerSettings
from steerline.transports.tail import StreamSettings
from tests.server.clients import (
    NDJSON,
    Kind,
    Stream,
    assert_contiguous,
    client,
    eventually,
    in_server,
    names,
    new_conversation,
    open_socket,
    open_stream,
    payload,
    read_log,
    text_of,
)
from tests.server.harness import RunningServer, problems, server_log

pytestmark = pytest.mark.anyio

TOKENS = 3000
FLOOD = " ".join("w" for _ in range(TOKENS))


@pytest.fixture
def slow_server(make_server: Callable[..., RunningServer]) -> RunningServer:
    return make_server(
        ServerSettings(
            store="memory://", stream=StreamSettings(send_timeout=0.5, max_lag_events=200)
        )
    )


async def shrink_server_buffer(server: RunningServer, client_port: int) -> None:
    """Shrink the send buffer of the server's end of the client's connection."""
    uvicorn_server = server.server

    async def shrink() -> bool:
        for connection in uvicorn_server.server_state.connections:
            transport: Any = getattr(connection, "transport", None)
            if transport is None:
                continue
            peer = transport.get_extra_info("peername")
            if peer and peer[1] == client_port:
                sock = transport.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
                return True
        return False

    async def found() -> bool:
        return await in_server(server, shrink)

    await eventually(found, what="the stalled viewer's connection")


class StalledViewer:
    """A raw HTTP/1.1 client: sends the request, then reads only when told."""

    def __init__(self, server: RunningServer, path: str, kind: Kind) -> None:
        self.server = server
        self.path = path
        self.kind = kind
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.setblocking(False)
        self.http = h11.Connection(our_role=h11.CLIENT)
        self.stream = Stream(None, kind)
        self.status = 0
        self.cut = False

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        host, port = self.server.url.removeprefix("http://").split(":")
        await loop.sock_connect(self.sock, (host, int(port)))
        headers = [("Host", "test")]
        if self.kind == "ndjson":
            headers.append(("Accept", NDJSON["Accept"]))
        request = h11.Request(method="GET", target=self.path, headers=headers)
        data = self.http.send(request) or b""
        data += self.http.send(h11.EndOfMessage()) or b""
        await loop.sock_sendall(self.sock, data)
        await self._shrink_server_buffer(self.sock.getsockname()[1])

    async def _shrink_server_buffer(self, client_port: int) -> None:
        await shrink_server_buffer(self.server, client_port)

    async def read_to_end(self, trickle: bool = False, cut: bool = False) -> Stream:
        """Read everything the server writes until it closes the connection;
        ``trickle`` reads like a client on a slow link (16 KiB per 10 ms);
        ``cut`` accepts a connection closed before the body's end (a client
        that stopped reading for too long cannot be sent the end)."""
        loop = asyncio.get_running_loop()
        with anyio.fail_after(15):
            while True:
                try:
                    event = self.http.next_event()
                except h11.RemoteProtocolError:
                    if not cut:
                        raise
                    self.cut = True
                    break
                if event is h11.NEED_DATA:
                    if trickle:
                        await anyio.sleep(0.01)  # the slow link, not a synchronisation
                    size = 16384 if trickle else 65536
                    self.http.receive_data(await loop.sock_recv(self.sock, size))
                elif isinstance(event, h11.Response):
                    self.status = event.status_code
                elif isinstance(event, h11.Data):
                    self.stream.feed(bytes(event.data).decode())
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
        self.stream.end()
        return self.stream

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("kind", ["sse", "ndjson"])
async def test_stalled_viewer_is_dropped_with_a_hint_and_resumes(
    slow_server: RunningServer, kind: Kind
) -> None:
    server = slow_server
    async with client() as http:
        cid = await new_conversation(http, server)
        # baseline: the same flood with only a normal viewer
        began = time.monotonic()
        async with open_stream(
            http,
            "POST",
            f"{server.api}/agents/stream",
            json={"query": FLOOD, "conversation_id": cid},
        ) as stream:
            baseline_events = await stream.rest()
        baseline = time.monotonic() - began
        assert len(baseline_events) > TOKENS
        base = baseline_events[-1]["seq"]

        stalled = StalledViewer(
            server, f"/api/v1/conversations/{cid}/stream?follow=true&after={base}", kind
        )
        try:
            await stalled.connect()
            await eventually(lambda: _streams_are(server, 1), what="the stalled viewer is open")
            began = time.monotonic()
            async with open_stream(
                http, "GET", f"{server.api}/conversations/{cid}/stream?follow=true&after={base}"
            ) as viewer:
                response = await http.post(
                    f"{server.api}/conversations/{cid}/messages", json={"content": FLOOD}
                )
                assert response.status_code == 202 and response.json()["run_id"]
                normal = await viewer.until("done")
            elapsed = time.monotonic() - began
            # the normal viewer got the whole run; it was never dropped
            assert normal[0]["seq"] == base + 1
            assert_contiguous(normal)
            assert viewer.comments == [] and viewer.controls == []
            assert text_of(normal) == f"Echo: {FLOOD}"
            # the run was not held up by the viewer that does not read
            assert elapsed < baseline * 3 + 2.0, (elapsed, baseline)

            # the stalled viewer is dropped (its socket stays blocked past send_timeout)
            await eventually(lambda: _streams_are(server, 0), what="the stalled viewer dropped")
            dropped = await stalled.read_to_end()
        finally:
            stalled.close()
        assert stalled.status == 200
        got = dropped.events
        assert got, "the stalled viewer got the start of the run"
        assert got[0]["seq"] == base + 1
        assert_contiguous(got)
        assert got[-1]["seq"] < normal[-1]["seq"], "it was dropped before the end"
        last = got[-1]["seq"]
        if kind == "sse":
            assert dropped.comments[-1] == f"resume after={last}", dropped.comments
        else:
            assert dropped.controls[-1] == {"event": "resume", "after": last}, dropped.controls

        # it resumes from its last id and loses nothing
        async with open_stream(
            http,
            "GET",
            f"{server.api}/conversations/{cid}/stream",
            headers={"Last-Event-ID": str(last)},
            kind=kind,
        ) as resumed:
            rest = await resumed.rest()
        assert got + rest == normal
        log = await read_log(http, server, cid)
        assert log[-len(normal) :] == normal
        metrics = (await http.get(f"{server.url}/metrics")).text
        assert "steerline_slow_consumers_dropped_total 1.0" in metrics


async def test_lagging_reader_is_dropped_with_a_hint(slow_server: RunningServer) -> None:
    """A reader that keeps reading, but far slower than the agent writes, is dropped too,
    sees its hint, and resumes without a gap."""
    server = slow_server
    async with client() as http:
        cid = await new_conversation(http, server)
        base = (await http.get(f"{server.api}/conversations/{cid}")).json()["last_seq"]
        lagging = StalledViewer(
            server, f"/api/v1/conversations/{cid}/stream?follow=true&after={base}", "sse"
        )
        try:
            await lagging.connect()
            await eventually(lambda: _streams_are(server, 1), what="the lagging viewer is open")
            async with anyio.create_task_group() as group:
                result: list[Stream] = []

                async def read() -> None:
                    result.append(await lagging.read_to_end(trickle=True))

                group.start_soon(read)
                response = await http.post(
                    f"{server.api}/conversations/{cid}/messages", json={"content": FLOOD}
                )
                assert response.json()["run_id"]
        finally:
            lagging.close()
        full = (await read_log(http, server, cid))[base:]
    assert names(full)[-1] == "done"
    assert payload(full[-1])["stop_reason"] == "completed"
    got = result[0].events
    assert got and got[0]["seq"] == base + 1
    assert_contiguous(got)
    assert got[-1]["seq"] < full[-1]["seq"], "the lagging reader was dropped"
    assert result[0].comments[-1] == f"resume after={got[-1]['seq']}"
    assert got == full[: len(got)]


async def _streams_are(server: RunningServer, count: int) -> bool:
    return len(server.state.streams) == count


# -- a client that stops reading for longer than the server waits ---------------------------
# The server gives a dropped viewer's hint a send timeout of its own; a client
# paused longer (60 s, say) cannot be sent it: its socket is full. It still
# sees the end of the stream when it reads again, and resumes from the last id
# it received (docs/server.md, "Slow consumers").


async def _slot_released(server: RunningServer) -> bool:
    """The stream ended on the server's side: its handler returned."""
    return server.state.gate.streams("default") == 0


@pytest.mark.parametrize("kind", ["sse", "ndjson"])
async def test_a_paused_viewer_still_sees_its_stream_end(
    slow_server: RunningServer, kind: Kind
) -> None:
    server = slow_server
    async with client() as http:
        cid = await new_conversation(http, server)
        base = (await http.get(f"{server.api}/conversations/{cid}")).json()["last_seq"]
        paused = StalledViewer(
            server, f"/api/v1/conversations/{cid}/stream?follow=true&after={base}", kind
        )
        try:
            with server_log() as records:
                await paused.connect()
                await eventually(lambda: _streams_are(server, 1), what="the viewer is open")
                response = await http.post(
                    f"{server.api}/conversations/{cid}/messages", json={"content": FLOOD}
                )
                assert response.json()["run_id"]
                # the server gave up on it entirely before it reads again
                await eventually(lambda: _slot_released(server), what="the viewer dropped")
                dropped = await paused.read_to_end(cut=True)
        finally:
            paused.close()
        assert problems(records) == []
        full = (await read_log(http, server, cid))[base:]
    got = dropped.events
    assert got and got[0]["seq"] == base + 1
    assert_contiguous(got)
    assert got[-1]["seq"] < full[-1]["seq"], "it was dropped before the end"
    # it resumes from the last id it received and loses nothing
    async with (
        client() as http,
        open_stream(
            http,
            "GET",
            f"{server.api}/conversations/{cid}/stream",
            headers={"Last-Event-ID": str(got[-1]["seq"])},
            kind=kind,
        ) as resumed,
    ):
        rest = await resumed.rest()
    assert got + rest == full


async def test_a_paused_websocket_is_closed_with_1013(slow_server: RunningServer) -> None:
    server = slow_server
    async with client() as http:
        cid = await new_conversation(http, server)
        base = (await http.get(f"{server.api}/conversations/{cid}")).json()["last_seq"]
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        host, port = server.url.removeprefix("http://").split(":")
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        # max_queue=1: the client library stops reading the socket once one
        # message waits unread, so the server's writes block (without
        # compression: the flood's frames would shrink to a few bytes each)
        async with connect(
            f"{server.ws}/conversations/{cid}/ws",
            sock=sock,
            max_queue=1,
            compression=None,
            open_timeout=15,
        ) as ws:
            await shrink_server_buffer(server, sock.getsockname()[1])
            with server_log() as records:
                response = await http.post(
                    f"{server.api}/conversations/{cid}/messages", json={"content": FLOOD}
                )
                assert response.json()["run_id"]
                await eventually(lambda: _slot_released(server), what="the socket dropped")
                # it reads again: the events it was sent, then the close frame
                events: list[dict[str, Any]] = []
                with anyio.fail_after(15):
                    try:
                        while True:
                            frame = json.loads(await ws.recv())
                            if "seq" in frame:
                                events.append(frame)
                    except ConnectionClosed:
                        pass
            assert ws.close_code == 1013, (ws.close_code, ws.close_reason)
        assert problems(records) == []
        full = (await read_log(http, server, cid))[base:]
    assert events and events[0]["seq"] == base + 1
    assert_contiguous(events)
    assert events[-1]["seq"] < full[-1]["seq"], "it was dropped before the end"
    async with open_socket(server, cid) as resumed:
        ack = await resumed.request(
            {"type": "resume", "request_id": "r", "after": events[-1]["seq"]}
        )
        assert ack["type"] == "ack"
        rest = await resumed.until("done")
    assert events + rest == full[: len(events) + len(rest)]
    assert rest[-1] == full[-1]
