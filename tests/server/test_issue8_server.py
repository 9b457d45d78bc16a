"""Attacks on a real ``steerline serve`` (issue 8): a second server on the same
store, a full disk, and one bad frame aimed at the whole service."""

from __future__ import annotations

import resource
import sqlite3
from pathlib import Path

import anyio
import pytest

from tests.server.clients import (
    assert_contiguous,
    client,
    names,
    open_socket,
    open_stream,
    read_log,
)
from tests.server.harness import RunningServer, Served, wait_healthy

pytestmark = pytest.mark.anyio
WORDS = " ".join(f"w{i}" for i in range(40))


def as_server(process: Served) -> RunningServer:
    return process  # type: ignore[return-value]


def row_counts(db: Path) -> tuple[int, int]:
    with sqlite3.connect(db) as conn:
        events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        failed = conn.execute(
            "SELECT count(*) FROM events WHERE event = 'system_failed'"
        ).fetchone()[0]
    return int(events), int(failed)


async def test_a_second_server_on_the_same_store_changes_nothing(
    served: list[Served],
    tmp_path: Path,
) -> None:
    db = tmp_path / "db.sqlite"
    owner = Served(db, tmp_path)
    served.append(owner)
    await owner.wait_ready()
    async with client() as http:
        async with open_stream(
            http, "POST", f"{owner.api}/agents/stream", json={"query": f"/delay 30\n{WORDS}"}
        ) as stream:
            await stream.until("message_chunk")
            # the same port and file (running `bash scripts/serve` twice), then another port
            for port in (owner.port, None):
                second = Served(db, tmp_path, port=port)
                served.append(second)
                code = await anyio.to_thread.run_sync(lambda p=second: p.process.wait(30))
                output = (tmp_path / f"serve-{second.port}.log").read_text()
                assert code == 2, output
                expected = "Address already in use" if port else "in use by another steerline"
                assert expected in output and "Traceback" not in output
            events = await stream.rest()
        assert names(events)[-1] == "done" and "system_failed" not in names(events)
        # the owner still commits: a new run works and nothing was marked lost
        cid = stream.events[0]["data"]["conversation_id"]
        async with open_stream(
            http,
            "POST",
            f"{owner.api}/agents/stream",
            json={"query": "still mine", "conversation_id": cid},
        ) as again:
            assert names(await again.rest())[-1] == "done"
        log = await read_log(http, as_server(owner), cid)
    assert_contiguous(log, 1)
    assert "system_failed" not in names(log)
    assert row_counts(db)[1] == 0


def limit_file_size(pid: int, size: int) -> None:
    """What a full disk looks like to the process: writes past ``size`` fail (EFBIG)."""
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))


async def test_a_full_disk_is_503_then_writes_resume_by_themselves(
    served: list[Served],
    tmp_path: Path,
) -> None:
    db = tmp_path / "db.sqlite"
    process = Served(db, tmp_path, quiet=True)
    served.append(process)
    await process.wait_ready()
    async with client() as http:
        async with open_stream(
            http, "POST", f"{process.api}/agents/stream", json={"query": "before"}
        ) as stream:
            before = await stream.rest()
        cid = before[0]["data"]["conversation_id"]

        limit_file_size(process.process.pid, 1024)
        try:
            async with open_stream(
                http,
                "POST",
                f"{process.api}/agents/stream",
                json={"query": f"/delay 5\n{WORDS}", "conversation_id": cid},
            ) as stream:
                await stream.rest(within=15)
            # the stream ended with a resume hint, not a hang and not `done`
            assert stream.comments and stream.comments[-1].startswith("resume after=")
            assert "done" not in names(stream.events)
            health = await http.get(f"{process.url}/healthz")
            assert health.status_code == 503 and health.json()["status"] == "unavailable"
            refused = await http.post(
                f"{process.api}/conversations/{cid}/messages",
                json={"content": "during the outage", "mode": "follow_up"},
            )
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "storage_unavailable"
            assert refused.headers["retry-after"]
            gone = await http.get(f"{process.api}/conversations/{cid}/stream")
            assert gone.status_code == 503
        finally:
            limit_file_size(process.process.pid, resource.RLIM_INFINITY)

        # no restart: the held writes commit by themselves
        await wait_healthy(process.url, lambda: process.process.poll() is None, within=15)
        async with open_stream(
            http,
            "GET",
            f"{process.api}/conversations/{cid}/stream",
            headers={"Last-Event-ID": str(stream.last_seq)},
        ) as rest:
            tail = await rest.rest(within=15)
        log = await read_log(http, as_server(process), cid)
        assert_contiguous(log, 1)
        assert log[: len(before)] == before
        assert [e["seq"] for e in tail] == list(range(stream.last_seq + 1, log[-1]["seq"] + 1))
        assert names(log).count("done") == 2 and "system_failed" not in names(log)
        ok = await http.post(
            f"{process.api}/conversations/{cid}/messages",
            json={"content": "after the outage", "mode": "follow_up"},
        )
        assert ok.status_code == 202


async def test_one_bad_frame_does_not_take_the_service_down(
    server: RunningServer,
) -> None:
    async with client() as http:
        async with open_stream(
            http, "POST", f"{server.api}/agents/stream", json={"query": "other tenant's chat"}
        ) as first:
            await first.rest()
        other = first.events[0]["data"]["conversation_id"]
        async with open_stream(
            http, "POST", f"{server.api}/agents/stream", json={"query": "mine"}
        ) as mine:
            await mine.rest()
        cid = mine.events[0]["data"]["conversation_id"]
        async with (
            open_stream(
                http, "GET", f"{server.api}/conversations/{other}/stream?follow=true&after=0"
            ) as watching,
            open_socket(server, cid) as socket,
        ):
            await watching.until("done")
            raw = '{"type":"prompt","content":"hi","id":"\\ud800","request_id":"r1"}'
            await socket.send(raw)
            reply = await socket.reply("r1")
            assert reply["type"] == "error" and reply["error"]["code"] == "invalid_value"
            ack = await socket.request({"type": "prompt", "content": "fine", "request_id": "r2"})
            assert ack["type"] == "ack"
            # the other conversation's stream is still open and new runs still start
            response = await http.post(
                f"{server.api}/conversations/{other}/messages",
                json={"content": "are you there", "mode": "follow_up"},
            )
            assert response.status_code == 202
            events = await watching.until("done")
            assert "thread_started" in names(events)
        health = await http.get(f"{server.url}/healthz")
        assert health.json() == {"status": "ok"}


async def test_every_acknowledged_websocket_follow_up_is_delivered(
    server: RunningServer,
) -> None:
    """Follow-ups racing with the ends of short runs: none may be stranded."""
    count = 300
    async with client() as http:
        async with open_stream(
            http, "POST", f"{server.api}/agents/stream", json={"query": "start"}
        ) as stream:
            await stream.rest()
        cid = stream.events[0]["data"]["conversation_id"]
        async with open_socket(server, cid) as socket:
            for i in range(count):
                await socket.send(
                    {"type": "follow_up", "content": f"f{i}", "id": f"f{i}", "request_id": i}
                )
            acked = []
            for i in range(count):
                reply = await socket.reply(i)
                if reply["type"] == "error":
                    # sent faster than the runs take them: the inbox limit (100)
                    # refuses the excess, clearly, and nothing is half-accepted
                    assert reply["error"]["code"] == "queue_full", reply
                    continue
                assert reply["type"] == "ack", reply
                acked.append(reply["message_id"])
            assert len(acked) >= 100, "at least a full inbox of follow-ups is accepted"
        with anyio.fail_after(30):
            while True:
                status = (await http.get(f"{server.api}/conversations/{cid}")).json()
                if status["status"] == "idle":
                    break
                async with open_stream(
                    http,
                    "GET",
                    f"{server.api}/conversations/{cid}/stream?after={status['last_seq']}",
                ) as waiting:
                    await waiting.rest(within=30)
        log = await read_log(http, server, cid)
    delivered = [e["data"]["metadata"]["message_id"] for e in log if e["event"] == "thread_started"]
    assert sorted(delivered[1:]) == sorted(acked), "every acknowledged follow-up delivered once"
    assert status["queue"] == {"steering": [], "follow_up": []}
