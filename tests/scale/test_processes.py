"""Several ``steerline serve`` processes on one real ``redis-server`` (issue 13).

Each test starts its own Redis on a free port and real server processes on
it; clients talk to them over loopback like any client would.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import httpx2
import pytest
import redis.asyncio as aioredis

from steerline.log.redis.keys import Keys
from tests.redis_server import RedisServer
from tests.server.clients import (
    Envelope,
    assert_contiguous,
    client,
    eventually,
    names,
    open_socket,
    open_stream,
    seqs,
    text_of,
)
from tests.server.harness import Served, free_port, steerline_script

pytestmark = pytest.mark.anyio

TTL = 2.0
"""Lease TTL of these tests' servers (seconds): a dead owner's run ends within it."""
WORDS = " ".join(f"w{i}" for i in range(400))
SLOW = f"/delay 15\n{WORDS}"
"""A run that streams for about six seconds (a token every 15 ms)."""


@pytest.fixture
def processes(redis_server: RedisServer, tmp_path: Path) -> Iterator[list[Served]]:
    started: list[Served] = []
    yield started
    for process in started:
        process.kill()


async def start(
    processes: list[Served],
    redis_server: RedisServer,
    tmp_path: Path,
    count: int,
    ttl: float = TTL,
) -> list[Served]:
    store = f"{redis_server.url}?lease_ttl={ttl}"
    new = [Served(None, tmp_path, store=store) for _ in range(count)]
    processes.extend(new)
    with anyio.fail_after(60):
        for process in new:
            await process.wait_ready()
    return new


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with client() as http:
        yield http


def assert_once(events: list[Envelope]) -> None:
    """Every seq once, in order, without a gap."""
    assert_contiguous(events)
    assert len(set(seqs(events))) == len(events)


async def status(http: httpx2.AsyncClient, server: Served, cid: str) -> dict[str, object]:
    response = await http.get(f"{server.api}/conversations/{cid}")
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def test_run_on_a_streams_on_b_steered_through_c(
    processes: list[Served], redis_server: RedisServer, tmp_path: Path, http: httpx2.AsyncClient
) -> None:
    """Must-show 1: start through A, stream from B, steer through C."""
    a, b, c = await start(processes, redis_server, tmp_path, 3)
    async with open_stream(http, "POST", f"{a.api}/agents/stream", json={"query": SLOW}) as run:
        started = await run.until("message_chunk")
        cid = started[0]["data"]["conversation_id"]
        async with open_stream(http, "GET", f"{b.api}/conversations/{cid}/stream") as view:
            await view.until("message_chunk")
            response = await http.post(
                f"{c.api}/conversations/{cid}/messages",
                json={"content": "turn left", "mode": "steer", "id": "steer-1"},
            )
            assert response.status_code == 202, response.text
            assert response.json()["queued"] is True
            seen_by_b = await view.rest()
        seen_by_a = started + await run.rest()
    for events in (seen_by_a, seen_by_b):
        assert events[-1]["event"] == "done"
        assert_once(events)
    # the steer landed in the run: delivered as its own thread, answered after
    threads = [e for e in seen_by_b if e["event"] == "thread_started"]
    assert [t["data"]["metadata"].get("message_id") for t in threads][-1] == "steer-1"
    assert "turn left" in text_of(seen_by_b) or names(seen_by_b).count("task_started") == 1
    # B saw the same events A did, from where it joined
    by_seq = {e["seq"]: e for e in seen_by_a}
    assert all(by_seq[e["seq"]] == e for e in seen_by_b)
    # and nothing is delivered twice: the steer once
    log = await read_all(http, c, cid)
    assert_once(log)
    delivered = [
        e["data"]["metadata"].get("message_id") for e in log if e["event"] == "thread_started"
    ]
    assert delivered.count("steer-1") == 1


async def read_all(http: httpx2.AsyncClient, server: Served, cid: str) -> list[Envelope]:
    async with open_stream(
        http, "GET", f"{server.api}/conversations/{cid}/stream", headers={"Last-Event-ID": "0"}
    ) as stream:
        return await stream.rest()


async def test_a_stream_from_a_continues_exactly_on_b(
    processes: list[Served], redis_server: RedisServer, tmp_path: Path, http: httpx2.AsyncClient
) -> None:
    """Must-show 2: reconnect to another process with ``Last-Event-ID``."""
    a, b = await start(processes, redis_server, tmp_path, 2)
    async with open_stream(http, "POST", f"{a.api}/agents/stream", json={"query": SLOW}) as run:
        first = await run.take(40)
    cid = first[0]["data"]["conversation_id"]
    last = first[-1]["seq"]
    async with open_stream(
        http,
        "GET",
        f"{b.api}/conversations/{cid}/stream",
        headers={"Last-Event-ID": str(last)},
    ) as resumed:
        rest = await resumed.rest()
    assert rest[0]["seq"] == last + 1
    assert rest[-1]["event"] == "done"
    assert_once(first + rest)
    assert first + rest == await read_all(http, a, cid)


async def test_the_owners_death_ends_its_run_once_and_keeps_the_queue(
    processes: list[Served], redis_server: RedisServer, tmp_path: Path, http: httpx2.AsyncClient
) -> None:
    """Must-show 3: SIGKILL the owner mid-run with a follow-up queued."""
    a, b, c = await start(processes, redis_server, tmp_path, 3)
    async with open_stream(http, "POST", f"{a.api}/agents/stream", json={"query": SLOW}) as run:
        started = await run.until("message_chunk")
        cid = started[0]["data"]["conversation_id"]
        run_id = started[0]["data"].get("task_id") or next(
            e["data"]["task_id"] for e in started if e["event"] == "task_started"
        )
        queued = await http.post(
            f"{b.api}/conversations/{cid}/messages",
            json={"content": "and then?", "mode": "follow_up", "id": "later"},
        )
        assert queued.status_code == 202, queued.text
        a.kill()
    with anyio.fail_after(TTL * 5):
        # a viewer of B waits for the run's end, which another process writes
        async with open_stream(http, "GET", f"{b.api}/conversations/{cid}/stream") as view:
            ending = await view.rest(within=TTL * 5)
    assert names(ending)[-3:] == ["system_failed", "task_failed", "done"]
    log = await read_all(http, c, cid)
    assert_once(log)
    assert names(log).count("done") == 1, "the dead run ended exactly once"
    assert [e["data"].get("task_id") for e in log if e["event"] == "task_started"] == [run_id]
    state = await status(http, c, cid)
    assert state["status"] == "idle"
    follow_up = state["queue"]["follow_up"]  # type: ignore[index]
    assert [m["id"] for m in follow_up] == ["later"], "the follow-up is still queued"
    # a new prompt through any process is served; the killed run never runs again
    async with open_stream(
        http,
        "POST",
        f"{c.api}/agents/stream",
        json={"query": "new question", "conversation_id": cid},
    ) as fresh:
        answer = await fresh.rest()
    assert answer[-1]["event"] == "done"
    log = await read_all(http, b, cid)
    assert_once(log)
    started_runs = [e["data"]["task_id"] for e in log if e["event"] == "task_started"]
    assert started_runs[0] == run_id and run_id not in started_runs[1:]


async def test_a_message_sent_while_the_owner_lies_dead_is_accepted_at_once(
    processes: list[Served], redis_server: RedisServer, tmp_path: Path, http: httpx2.AsyncClient
) -> None:
    """Intake needs no lease: SIGKILL the owner mid-run and send a follow-up
    through another process at once. It is queued and logged there (202)
    while the dead owner's lease still stands in Redis (forwarded to the
    owner, it would have waited for the lease to expire); the run then
    ends once, and the message is still queued."""
    ttl = 6.0
    a, b = await start(processes, redis_server, tmp_path, 2, ttl=ttl)
    async with open_stream(http, "POST", f"{a.api}/agents/stream", json={"query": SLOW}) as run:
        started = await run.until("message_chunk")
        cid = started[0]["data"]["conversation_id"]
        owner = f"{socket.gethostname()}:{a.process.pid}:"  # see default_owner()
        a.kill()
    lease_key = Keys().conversation(cid).lease
    async with aioredis.from_url(redis_server.url) as redis:
        with anyio.fail_after(ttl / 2):
            response = await http.post(
                f"{b.api}/conversations/{cid}/messages",
                json={"content": "still there?", "mode": "follow_up", "id": "meanwhile"},
            )
        holder = await redis.get(lease_key)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["queued"] is True and body["duplicate"] is False
    assert [m["id"] for m in body["queue"]["follow_up"]] == ["meanwhile"]
    assert holder is not None and holder.decode().startswith(owner), (
        "accepted while the dead owner's lease still stood"
    )
    with anyio.fail_after(ttl * 4):
        async with open_stream(http, "GET", f"{b.api}/conversations/{cid}/stream") as view:
            ending = await view.rest(within=ttl * 4)
    assert names(ending)[-3:] == ["system_failed", "task_failed", "done"]
    log = await read_all(http, b, cid)
    assert_once(log)
    queued = [e for e in log if e["event"] == "message_queued"]
    assert [e["data"]["payload"]["message_id"] for e in queued] == ["meanwhile"]
    assert names(log).count("done") == 1
    state = await status(http, b, cid)
    assert [m["id"] for m in state["queue"]["follow_up"]] == ["meanwhile"]  # type: ignore[index]


async def test_a_prompt_to_an_idle_conversation_of_a_dead_server_is_served_elsewhere(
    processes: list[Served], redis_server: RedisServer, tmp_path: Path, http: httpx2.AsyncClient
) -> None:
    """A holds an idle conversation's lease (it keeps it until it unloads the
    conversation) and is SIGKILLed. A prompt through B is sent to A as a
    control request, which nobody answers; once A's lease expires B
    withdraws it and runs the prompt itself: a 200 stream with its run, once
    (before: B waited for A's answer until its patience ran out, 503)."""
    a, b = await start(processes, redis_server, tmp_path, 2)
    async with open_stream(http, "POST", f"{a.api}/agents/stream", json={"query": "hi"}) as s:
        first = await s.rest()
    cid = first[0]["data"]["conversation_id"]
    a.kill()
    with anyio.fail_after(30):
        async with open_stream(
            http,
            "POST",
            f"{b.api}/agents/stream",
            json={"query": "are you there", "conversation_id": cid, "message_id": "once"},
        ) as s:
            second = await s.rest()
    assert second[-1]["event"] == "done"
    log = await read_all(http, b, cid)
    assert_once(log)
    delivered = [
        e["data"]["metadata"].get("message_id") for e in log if e["event"] == "thread_started"
    ]
    assert delivered.count("once") == 1
    assert names(log).count("task_started") == 2


async def test_a_viewer_on_the_process_that_ends_a_dead_owners_run_sees_what_follows(
    processes: list[Served], redis_server: RedisServer, tmp_path: Path, http: httpx2.AsyncClient
) -> None:
    """The process that ends a dead owner's run takes the lease, writes the
    end and lets the lease go again (once it unloads the conversation); a
    viewer it has of that conversation goes on receiving what the next
    holder writes, well before a heartbeat.
    (Seen by hand: the release dropped the tail the viewer waited on, and
    the next run reached it 15 s later. It depends on the viewer waiting at
    that moment: test_leases.py::test_a_viewer_waiting_here_outlives_a_lease_
    taken_and_let_go_here makes sure it is.)"""
    # b unloads the conversation soon after ending the run, which lets its
    # lease go, so c takes it and runs the next prompt itself (while b holds
    # it, c forwards the prompt to b, which runs it beside its viewer: the
    # release this test is about never happens)
    (tmp_path / "steerline.toml").write_text("[server.limits]\nidle_unload_after = 0.5\n")
    a, b = await start(processes, redis_server, tmp_path, 2)
    async with open_stream(
        http, "POST", f"{a.api}/agents/stream", json={"query": '/call sleep {"seconds": 60}'}
    ) as run:
        started = await run.until("tool_call_started")
        cid = started[0]["data"]["conversation_id"]
        async with open_stream(
            http, "GET", f"{b.api}/conversations/{cid}/stream?follow=true"
        ) as follower:
            await follower.until("tool_call_started")
            a.kill()
            # b, the only process left, ends the run (and lets the lease go once idle)
            ending = await follower.until("done", within=TTL * 5)
            assert names(ending)[-3:] == ["system_failed", "task_failed", "done"]
            lease = Keys().conversation(cid).lease
            async with aioredis.from_url(redis_server.url) as redis:

                async def let_go() -> bool:
                    return not await redis.exists(lease)

                await eventually(let_go, what="b letting the lease go")
            c = (await start(processes, redis_server, tmp_path, 1))[0]
            async with open_stream(
                http,
                "POST",
                f"{c.api}/agents/stream",
                json={"query": "still there?", "conversation_id": cid},
            ) as fresh:
                answer = await fresh.rest()
            assert answer[-1]["event"] == "done"
            # well under the 15 s heartbeat that used to bring it
            seen = await follower.until("done", within=5)
    assert seen == answer


async def test_one_message_id_sent_to_two_processes_is_delivered_once(
    processes: list[Served], redis_server: RedisServer, tmp_path: Path, http: httpx2.AsyncClient
) -> None:
    """Must-show 5: the same ``message_id`` through two processes at once."""
    a, b = await start(processes, redis_server, tmp_path, 2)
    async with open_stream(http, "POST", f"{a.api}/agents/stream", json={"query": "hi"}) as s:
        events = await s.rest()
    cid = events[0]["data"]["conversation_id"]
    for round_ in range(5):
        message_id = f"twice-{round_}"
        replies: list[httpx2.Response] = []

        async def send(
            server: Served, message_id: str = message_id, replies: list[httpx2.Response] = replies
        ) -> None:
            replies.append(
                await http.post(
                    f"{server.api}/conversations/{cid}/messages",
                    json={"content": f"once {message_id}", "id": message_id},
                )
            )

        async with anyio.create_task_group() as tg:
            tg.start_soon(send, a)
            tg.start_soon(send, b)
        assert sorted(r.status_code for r in replies) == [202, 202], [r.text for r in replies]
        assert sorted(r.json()["duplicate"] for r in replies) == [False, True]

        async def idle() -> bool:
            return (await status(http, a, cid))["status"] == "idle"

        await eventually(idle, what="the conversation idle again")
    log = await read_all(http, b, cid)
    assert_once(log)
    delivered = [
        e["data"]["metadata"].get("message_id") for e in log if e["event"] == "thread_started"
    ]
    assert sorted(d for d in delivered if d and d.startswith("twice-")) == [
        f"twice-{i}" for i in range(5)
    ]


async def test_a_redis_restart_while_idle_is_ridden_out(
    processes: list[Served], redis_server: RedisServer, tmp_path: Path, http: httpx2.AsyncClient
) -> None:
    """Must-show 4: Redis restarted (AOF) while idle; the processes reconnect
    by themselves and serve, and the old log is still readable. While Redis
    is down, requests get a clear 503 (never a hang)."""
    a, b = await start(processes, redis_server, tmp_path, 2)
    async with open_stream(http, "POST", f"{a.api}/agents/stream", json={"query": "hi"}) as s:
        before = await s.rest()
    cid = before[0]["data"]["conversation_id"]
    async with open_stream(
        http, "GET", f"{b.api}/conversations/{cid}/stream?follow=true"
    ) as follower:
        assert await follower.take(len(before)) == before
        redis_server.stop()
        # a viewer waiting for more is not left hanging: its stream ends
        assert await follower.rest(within=30) == []
    with anyio.fail_after(30):
        down = await http.get(f"{b.api}/conversations/{cid}")
    assert down.status_code == 503, down.text
    assert down.json()["error"]["code"] == "storage_unavailable", down.text
    redis_server.start()

    async def serving() -> bool:
        # what a load balancer asks: healthy again once Redis answers
        answers = [await http.get(f"{server.url}/healthz") for server in (a, b)]
        return all(response.status_code == 200 for response in answers)

    await eventually(serving, what="the processes serving again", within=30)
    assert await read_all(http, b, cid) == before
    answers = []
    for server in (a, b):
        async with open_stream(
            http,
            "POST",
            f"{server.api}/agents/stream",
            json={"query": "again", "conversation_id": cid},
        ) as s:
            answer = await s.rest()
        answers.append([(e["seq"], e["event"]) for e in answer])
        assert answer[-1]["event"] == "done"
    log = await read_all(http, a, cid)
    assert_once(log)
    assert log[: len(before)] == before
    assert names(log).count("done") == 3, (names(log), answers)


async def test_a_websocket_on_another_process_steers_and_edits_the_queue(
    processes: list[Served], redis_server: RedisServer, tmp_path: Path, http: httpx2.AsyncClient
) -> None:
    """The command set through a WebSocket on a process that does not run the
    conversation (forwarded to the one that does), and queue edits through a
    third: each answered as the owner's own clients would be."""
    a, b, c = await start(processes, redis_server, tmp_path, 3)
    async with open_stream(
        http, "POST", f"{a.api}/agents/stream", json={"query": '/call sleep {"seconds": 30}'}
    ) as run:
        started = await run.until("tool_call_started")
        cid = started[0]["data"]["conversation_id"]
        async with open_socket(b, cid) as socket:  # type: ignore[arg-type]
            ack = await socket.request(
                {"type": "follow_up", "request_id": "f", "content": "first draft", "id": "q1"}
            )
            assert ack["type"] == "ack", ack
            edited = await http.patch(
                f"{c.api}/conversations/{cid}/queue/q1", json={"content": "second draft"}
            )
            assert edited.status_code == 200, edited.text
            missing = await http.patch(
                f"{c.api}/conversations/{cid}/queue/nope", json={"content": "x"}
            )
            assert missing.status_code == 404, missing.text
            steer = await socket.request(
                {
                    "type": "steer",
                    "request_id": "s",
                    "content": "stop waiting",
                    "id": "s1",
                    "interrupt": True,  # the tool is cancelled, the steer goes next
                }
            )
            assert steer["type"] == "ack", steer
            events = await socket.until(
                lambda e: (
                    e["event"] == "thread_started"
                    and e["data"]["metadata"].get("message_id") == "s1"
                ),
                within=15,
            )
        rest = await run.rest()
    assert rest[-1]["event"] == "done"
    assert events
    # the follow-up, edited through C, was delivered once, as edited
    log = await read_all(http, b, cid)
    assert_once(log)
    delivered = [e for e in log if e["event"] == "thread_started"]
    assert [d["data"]["metadata"].get("message_id") for d in delivered][1:] == ["s1", "q1"]
    raw = json.dumps(log)
    assert "second draft" in raw and "first draft" not in raw.split('"s1"')[-1]


def test_serve_refuses_a_redis_that_may_evict_keys(tmp_path: Path) -> None:
    """Checked before the server starts: exit 2 and a clear message."""
    with RedisServer(tmp_path / "lru", maxmemory_policy="allkeys-lru") as lru:
        done = subprocess.run(
            [steerline_script(), "serve", "--port", str(free_port()), "--store", lru.url],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
    assert done.returncode == 2, done.stderr
    assert "maxmemory-policy 'allkeys-lru'" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/99", "DB index is out of range"), ("/0", "invalid username-password")],
)
def test_serve_reports_what_redis_refuses_without_a_traceback_or_the_password(
    redis_server: RedisServer, tmp_path: Path, path: str, expected: str
) -> None:
    """A database Redis does not have, or credentials it refuses: exit 2 and a
    clear message (before: a traceback for the database), the password masked."""
    url = redis_server.url.replace("redis://", "redis://someone:s3cret@").rsplit("/", 1)[0]
    if path == "/99":
        url = redis_server.url.rsplit("/", 1)[0]
    done = subprocess.run(
        [steerline_script(), "serve", "--port", str(free_port()), "--store", url + path],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr
    assert "Traceback" not in done.stderr
    assert "s3cret" not in done.stderr
