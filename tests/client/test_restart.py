"""A stream survives a server SIGKILL and a restart on the same port and
sqlite file: it reconnects by itself (connection refused while the new
process starts), and the consumer gets every event exactly once, ending with
the ``done`` (``stop_reason`` ``error``) that recovery writes for the lost run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from steerline.client import AsyncClient, Client, Reconnect, WireEvent
from tests.client.conftest import serve_config
from tests.server.harness import Served

WORDS = " ".join(f"w{i}" for i in range(150))
LONG = f"/delay 8\n{WORDS}"
KILL_AFTER_CHUNKS = 10
POLICY = Reconnect(initial_delay=0.05, max_delay=0.5, max_attempts=60, stall_timeout=5)
"""Up to ~25 s of outage: a process start takes one or two seconds."""
WITHIN = 40.0


def check_recovered(received: list[WireEvent], log: list[WireEvent], first_seq: int) -> None:
    seqs = [e.seq for e in received]
    assert seqs == list(range(first_seq, first_seq + len(seqs))), seqs
    assert received == [e for e in log if e.seq >= first_seq]
    assert [e.event for e in received[-3:]] == ["system_failed", "task_failed", "done"]
    assert received[-1].data["payload"]["stop_reason"] == "error"
    assert received[-3].data["payload"]["code"] == "run_lost"


class Server:
    """The current ``steerline serve`` of the module: each test kills it once and
    starts its successor on the same port and file (one process start per test)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.process = Served(workdir / "db.sqlite", workdir)
        self.processes = [self.process]

    @property
    def url(self) -> str:
        return self.process.url

    def restart(self) -> None:
        """SIGKILL, then a new process at once (not waiting for it to be ready)."""
        self.process.kill()
        self.process = Served(self.workdir / "db.sqlite", self.workdir, port=self.process.port)
        self.processes.append(self.process)


@pytest.fixture(scope="module")
def restartable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("restart")
    serve_config(workdir)
    current = Server(workdir)
    try:
        yield current
    finally:
        for process in current.processes:
            process.kill()


class Killer:
    """Restarts the server once, after ``KILL_AFTER_CHUNKS`` chunks."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.chunks = 0
        self.done = False

    def saw(self, event: WireEvent) -> None:
        self.chunks += event.event == "message_chunk"
        if self.chunks == KILL_AFTER_CHUNKS and not self.done:
            self.done = True
            self.server.restart()


def test_client_stream_resumes_across_a_kill(restartable: Server) -> None:
    anyio.run(restartable.process.wait_ready)
    killer = Killer(restartable)
    received: list[WireEvent] = []
    with Client(restartable.url, reconnect=POLICY) as client:
        with client.stream(LONG) as events:
            for event in events:
                received.append(event)
                killer.saw(event)
        assert killer.done and events.reconnects >= 1
        print(f"{len(received)} events, {events.reconnects} reconnection attempts")
        assert events.conversation_id is not None
        with client.events(events.conversation_id) as whole:
            log = list(whole)
    check_recovered(received, log, 1)


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["stream", "follow"])
async def test_async_stream_resumes_across_a_kill(restartable: Server, kind: str) -> None:
    await restartable.process.wait_ready()
    killer = Killer(restartable)
    received: list[WireEvent] = []
    async with AsyncClient(restartable.url, reconnect=POLICY) as client:
        with anyio.fail_after(WITHIN):
            if kind == "stream":
                first_seq = 1
                stream = client.stream(LONG)
            else:
                async with client.stream("hi") as setup:
                    [e async for e in setup]
                assert setup.conversation_id is not None and setup.last_seq is not None
                await client.follow_up(setup.conversation_id, LONG)
                first_seq = setup.last_seq + 1
                stream = client.events(setup.conversation_id, after=setup.last_seq, follow=True)
            async with stream as events:
                async for event in events:
                    received.append(event)
                    killer.saw(event)
                    if event.event == "done":
                        break  # the end of a follow stream is the reader's to choose
        assert killer.done and events.reconnects >= 1
        print(f"{len(received)} events, {events.reconnects} reconnection attempts")
        assert events.conversation_id is not None
        async with client.events(events.conversation_id) as whole:
            log = [e async for e in whole]
    check_recovered(received, log, first_seq)
