"""Slow or oversized requests: a header timeout (slowloris), a body timeout, the
keep-alive timeout, and a 413 that reaches the client instead of a reset.

Raw sockets, so the test controls every byte; every wait is bounded and ends on
something the server does (an answer, a close), never on a sleep.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from steerline.server.serving import uvicorn_options
from steerline.server.settings import ServerSettings
from tests.server.harness import RunningServer, free_port, steerline_script, wait_healthy

pytestmark = pytest.mark.anyio

MIB = 1024 * 1024
QUICK = 0.5
"""The timeouts of the quick server (seconds)."""


@pytest.fixture
def quick(make_server: Callable[..., RunningServer]) -> RunningServer:
    return make_server(
        ServerSettings(
            store="memory://",
            header_timeout=QUICK,
            body_timeout=QUICK,
            keep_alive_timeout=QUICK,
        )
    )


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


async def _exchange(
    url: str, chunks: list[bytes], within: float = 10.0
) -> tuple[int | None, dict[str, str], bytes, float]:
    """Send ``chunks``, then read until the server closes the connection.

    Returns the status (None if the server sent nothing), the headers, the
    body (per ``Content-Length``) and how long the server took to close.
    """
    host, port = _address(url)
    data = b""
    async with await anyio.connect_tcp(host, port) as stream:
        began = anyio.current_time()
        for chunk in chunks:
            await stream.send(chunk)
        with anyio.fail_after(within):
            while True:
                try:
                    data += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    break
        took = anyio.current_time() - began
    return (*_parse(data), took)


def _parse(data: bytes) -> tuple[int | None, dict[str, str], bytes]:
    if not data:
        return None, {}, b""
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", len(rest)))
    return status, headers, rest[:length]


def _error_code(body: bytes) -> str:
    error = json.loads(body)["error"]
    assert error["message"], error
    code: str = error["code"]
    return code


def test_defaults() -> None:
    settings = ServerSettings()
    assert settings.header_timeout == 20.0
    assert settings.body_timeout == 30.0
    assert settings.keep_alive_timeout == 5.0
    assert settings.max_drain_bytes == 16 * MIB
    options = uvicorn_options(settings)
    assert options["timeout_keep_alive"] == 5.0
    assert options["ws_max_size"] == 4 * MIB


# -- headers (slowloris) -----------------------------------------------------------------
async def test_half_sent_headers_get_408_and_the_connection_closes(quick: RunningServer) -> None:
    status, headers, body, took = await _exchange(
        quick.url, [b"GET /api/v1/agents HTTP/1.1\r\nHost: x\r\nX-Slow: "]
    )
    assert status == 408
    assert headers["connection"] == "close"
    assert _error_code(body) == "request_timeout"
    assert took < QUICK + 5


async def test_a_silent_connection_is_closed(quick: RunningServer) -> None:
    status, _, _, took = await _exchange(quick.url, [])
    assert status is None  # nothing was asked, nothing is answered: just closed
    assert took < QUICK + 5


async def test_an_idle_keep_alive_connection_is_closed(quick: RunningServer) -> None:
    status, _, body, took = await _exchange(
        quick.url, [b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"]
    )
    assert status == 200 and json.loads(body)["status"] == "ok"
    assert took < QUICK + 5


async def test_a_trickling_second_request_is_cut_too(quick: RunningServer) -> None:
    """One byte now and then stops uvicorn's keep-alive timer, not the header timeout."""
    host, port = _address(quick.url)
    async with await anyio.connect_tcp(host, port) as stream:
        await stream.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        with anyio.fail_after(10):
            while b'"ok"' not in data:
                data += await stream.receive()
            data = b""
            for byte in b"GET /healthz HTTP/1.1\r\n":
                try:
                    await stream.send(bytes([byte]))
                except (anyio.BrokenResourceError, OSError):
                    break
                with anyio.move_on_after(QUICK / 5):  # the trickle's pace, not a sync
                    try:
                        data += await stream.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        break
            while True:
                try:
                    data += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    break
    status, _, body = _parse(data)
    assert status == 408 and _error_code(body) == "request_timeout"


async def test_a_long_stream_is_not_cut_by_the_header_timeout(quick: RunningServer) -> None:
    """The header timeout ends when a request begins: a stream lasts as long as it runs."""
    from tests.server.clients import client, new_conversation, open_stream

    async with client() as http:
        cid = await new_conversation(http, quick)
        await http.post(
            f"{quick.api}/conversations/{cid}/messages",
            json={"content": '/call sleep {"seconds": 2}'},
        )
        url = f"{quick.api}/conversations/{cid}/stream"
        async with open_stream(http, "GET", url) as stream:
            events = await stream.rest()
    assert events[-1]["event"] == "done"


# -- bodies --------------------------------------------------------------------------------
async def test_a_slow_body_gets_408(quick: RunningServer) -> None:
    status, headers, body, took = await _exchange(
        quick.url,
        [
            b"POST /api/v1/agents/stream HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n",
            b'{"query": "hel',
        ],
    )
    assert status == 408
    assert headers["connection"] == "close"
    assert _error_code(body) == "request_timeout"
    assert took < QUICK + 5


def _post(path: str, body: bytes, *, chunked: bool = False, close: bool = False) -> list[bytes]:
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    if close:
        head += "Connection: close\r\n"
    if not chunked:
        return [f"{head}Content-Length: {len(body)}\r\n\r\n".encode(), body]
    chunks = [f"{head}Transfer-Encoding: chunked\r\n\r\n".encode()]
    for start in range(0, len(body), 65536):
        piece = body[start : start + 65536]
        chunks.append(b"%x\r\n%s\r\n" % (len(piece), piece))
    return [*chunks, b"0\r\n\r\n"]


def _blocking_exchange(url: str, chunks: list[bytes]) -> tuple[int | None, bytes]:
    """Send everything, then read: a client that reads its answer only after its
    upload, as most do. A reset anywhere fails the test."""
    with socket.create_connection(_address(url), timeout=10) as sock:
        for chunk in chunks:
            sock.sendall(chunk)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while piece := sock.recv(65536):
            data += piece
    status, _, body = _parse(data)
    return status, body


@pytest.mark.parametrize("close", [False, True], ids=["keep-alive", "connection-close"])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("path", ["/api/v1/agents/stream", "/api/v1/conversations/x/messages"])
async def test_a_body_over_the_limit_gets_413_not_a_reset(
    server: RunningServer, path: str, chunked: bool, close: bool
) -> None:
    body = b'{"query": "' + b"x" * (2 * MIB) + b'"}'
    status, answer = await anyio.to_thread.run_sync(
        _blocking_exchange, server.url, _post(path, body, chunked=chunked, close=close)
    )
    assert status == 413
    assert _error_code(answer) == "body_too_large"


async def test_the_connection_is_reused_after_a_drained_413(server: RunningServer) -> None:
    body = b'{"query": "' + b"x" * (2 * MIB) + b'"}'
    chunks = [*_post("/api/v1/agents/stream", body), b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"]

    def exchange() -> bytes:
        with socket.create_connection(_address(server.url), timeout=10) as sock:
            for chunk in chunks:
                sock.sendall(chunk)
            data = b""
            while b'"status":"ok"' not in data:
                piece = sock.recv(65536)
                assert piece, data[-300:]
                data += piece
            return data

    data = await anyio.to_thread.run_sync(exchange)
    assert data.startswith(b"HTTP/1.1 413")
    assert b"HTTP/1.1 200" in data


async def test_a_body_beyond_the_drain_limit_is_refused_and_closed(
    make_server: Callable[..., RunningServer],
) -> None:
    """Past ``max_drain_bytes`` the server stops reading: 413 with Connection: close
    (a client still sending may then see a reset: that is the bound)."""
    server = make_server(ServerSettings(store="memory://", max_drain_bytes=MIB))
    head = (
        b"POST /api/v1/agents/stream HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (64 * MIB)
    )
    status, headers, body, _ = await _exchange(server.url, [head])
    assert status == 413 and headers["connection"] == "close"
    assert _error_code(body) == "body_too_large"


# -- steerline serve runs with the same options ---------------------------------------------
@pytest.fixture
def served_quick(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    config = tmp_path / "steerline.toml"
    config.write_text(
        "[server.limits]\nheader_timeout = 0.5\nbody_timeout = 0.5\nkeep_alive_timeout = 1\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEERLINE_")}
    with (tmp_path / "serve.log").open("wb") as log:
        process = subprocess.Popen(
            [
                steerline_script(),
                "serve",
                "--config",
                str(config),
                "--port",
                str(port),
                "--store",
                "memory://",
            ],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=15)


async def test_serve_has_the_header_timeout(served_quick: str) -> None:
    await wait_healthy(served_quick, lambda: True)
    status, _, body, took = await _exchange(served_quick, [b"GET /healthz HTTP/1.1\r\nHost"])
    assert status == 408 and _error_code(body) == "request_timeout"
    assert took < 5
