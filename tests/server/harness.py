"""Test harness: a real uvicorn server on a free loopback port, in its own thread and loop.

The server runs in another thread so a test's client and the server never
share an event loop: a blocked client cannot hide a blocked server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import anyio
import httpx2
import uvicorn

from steerline.server.app import ServerState, create_app
from steerline.server.serving import uvicorn_options
from steerline.server.settings import ServerSettings
from steerline.service.agents import AgentRegistry


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class RunningServer:
    url: str
    state: ServerState
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def api(self) -> str:
        return f"{self.url}/api/v1"

    @property
    def ws(self) -> str:
        return self.url.replace("http://", "ws://") + "/api/v1"

    loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"RunningServer({self.url})"

    def stop(self) -> None:
        if self.loop is not None and not self.loop.is_closed():
            # end open streams with a hint, as `steerline serve` does on SIGTERM,
            # so uvicorn does not wait for `?follow=true` streams forever
            self.loop.call_soon_threadsafe(self.state.begin_shutdown)
        self.server.should_exit = True
        self.thread.join(timeout=15)
        assert not self.thread.is_alive(), "server did not stop"


def start_server(
    settings: ServerSettings | None = None,
    registry: AgentRegistry | None = None,
    log_level: str = "warning",
) -> RunningServer:
    port = free_port()
    settings = replace(settings or ServerSettings(store="memory://"), port=port)
    loops: list[asyncio.AbstractEventLoop] = []

    async def remember_loop() -> None:
        loops.append(asyncio.get_running_loop())

    app = create_app(settings, registry=registry, on_startup=[remember_loop])
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level=log_level,
        lifespan="on",
        **uvicorn_options(settings),  # the options `steerline serve` runs with
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)  # polling a thread's flag, not synchronising the test
    running = RunningServer(f"http://127.0.0.1:{port}", app.state.steerline, server, thread)
    running.loop = loops[0] if loops else None
    return running


async def wait_healthy(url: str, alive: Callable[[], bool], within: float = 30) -> None:
    """Poll ``url``/healthz until a server started as a subprocess answers "ok".

    A process start has no event to await; ``alive`` fails the wait at once if
    the process exited instead.
    """
    async with httpx2.AsyncClient(timeout=2) as http:
        with anyio.fail_after(within):
            while True:
                assert alive(), "steerline serve exited during start-up"
                try:
                    response = await http.get(f"{url}/healthz")
                    if response.status_code == 200 and response.json()["status"] == "ok":
                        return
                except httpx2.TransportError:
                    pass
                await anyio.sleep(0.05)  # polling a starting process, not synchronising


class _Records(logging.Handler):
    def __init__(self, records: list[logging.LogRecord], prefixes: tuple[str, ...]) -> None:
        super().__init__(logging.DEBUG)
        self.records = records
        self.prefixes = prefixes

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(self.prefixes):
            self.records.append(record)


@contextmanager
def server_log(
    prefixes: tuple[str, ...] = ("uvicorn", "steerline", "asyncio"),
) -> Iterator[list[logging.LogRecord]]:
    """The log records of the server (uvicorn, steerline, asyncio) while the block runs.

    uvicorn's loggers do not propagate to the root logger, so the handler goes
    on each of them. Enter it after the server started: uvicorn's logging set-up
    replaces the handlers of its loggers.
    """
    records: list[logging.LogRecord] = []
    handler = _Records(records, prefixes)
    loggers = [logging.getLogger(name) for name in ("uvicorn", "uvicorn.access", "")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield records
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


def problems(records: list[logging.LogRecord], level: int = logging.WARNING) -> list[str]:
    """The records at ``level`` or above, formatted for an assertion message."""
    return [
        f"{r.name} {r.levelname} {r.getMessage()[:200]}"
        + (
            f" [{type(r.exc_info[1]).__name__}: {r.exc_info[1]}]"
            if r.exc_info and r.exc_info[1]
            else ""
        )
        for r in records
        if r.levelno >= level
    ]


def steerline_script() -> str:
    found = shutil.which("steerline") or str(Path(sys.executable).parent / "steerline")
    assert Path(found).exists(), f"console script not found: {found}"
    return found


class Served:
    """One ``steerline serve`` process (quacks like RunningServer for the helpers)."""

    def __init__(
        self,
        db: Path | None,
        workdir: Path,
        port: int | None = None,
        quiet: bool = False,
        store: str | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api = f"{self.url}/api/v1"
        self.ws = self.url.replace("http://", "ws://") + "/api/v1"
        env = {k: v for k, v in os.environ.items() if not k.startswith("STEERLINE_")}
        # quiet: output to /dev/null, for tests that limit the process's file sizes
        output = Path(os.devnull) if quiet else workdir / f"serve-{self.port}.log"
        self.log = output.open("wb")
        self.process = subprocess.Popen(
            [
                steerline_script(),
                "serve",
                "--port",
                str(self.port),
                "--store",
                store or f"sqlite:///{db}",  # db is absolute: sqlite:////abs/path
            ],
            cwd=workdir,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    async def wait_ready(self) -> None:
        await wait_healthy(self.url, lambda: self.process.poll() is None)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.log.close()
