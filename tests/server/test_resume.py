"""Resumption: a read cut anywhere and resumed equals one uninterrupted read (SPEC §3.3)."""

from __future__ import annotations

import anyio
import httpx2
import pytest

from tests.server.clients import (
    Envelope,
    Kind,
    assert_contiguous,
    client,
    error_of,
    names,
    new_conversation,
    open_socket,
    open_stream,
    read_log,
)
from tests.server.harness import RunningServer

pytestmark = pytest.mark.anyio

# ~20 events: text, a tool call and the results turn
SHORT = 'one two three four five six seven\n/call echo {"text": "hi"}'
LONG = "/delay 15\n" + " ".join(f"w{i}" for i in range(60))


async def short_run(http: httpx2.AsyncClient, server: RunningServer) -> tuple[str, list[Envelope]]:
    async with open_stream(
        http, "POST", f"{server.api}/agents/stream", json={"query": SHORT}
    ) as stream:
        events = await stream.rest()
    cid = events[0]["data"]["conversation_id"]
    assert 15 <= len(events) <= 30, len(events)
    return cid, events


async def read_first(
    http: httpx2.AsyncClient, url: str, count: int, kind: Kind = "sse"
) -> list[Envelope]:
    """Read ``count`` events, then disconnect."""
    async with open_stream(http, "GET", url, kind=kind) as stream:
        return await stream.take(count)


async def read_all(
    http: httpx2.AsyncClient, url: str, headers: dict[str, str] | None = None, kind: Kind = "sse"
) -> list[Envelope]:
    async with open_stream(http, "GET", url, headers=headers or {}, kind=kind) as stream:
        return await stream.rest()


async def test_resume_at_every_position_with_last_event_id(server: RunningServer) -> None:
    async with client() as http:
        cid, run = await short_run(http, server)
        url = f"{server.api}/conversations/{cid}/stream"
        full = await read_all(http, url)
        assert full == run, "a replay is byte-for-byte the live stream"
        assert_contiguous(full, 1)
        for k in range(1, len(full) + 1):
            head = await read_first(http, url, k)
            assert head == full[:k]
            tail = await read_all(http, url, {"Last-Event-ID": str(head[-1]["seq"])})
            assert head + tail == full, f"cut after {k} events"


async def test_resume_at_every_position_with_after(server: RunningServer) -> None:
    async with client() as http:
        cid, full = await short_run(http, server)
        url = f"{server.api}/conversations/{cid}/stream"
        for k in range(len(full) + 1):
            kinds: tuple[Kind, ...] = ("sse", "ndjson")
            for kind in kinds:
                tail = await read_all(http, f"{url}?after={k}", kind=kind)
                assert full[:k] + tail == full, f"after={k} ({kind})"


async def test_last_event_id_wins_over_after(server: RunningServer) -> None:
    async with client() as http:
        cid, full = await short_run(http, server)
        url = f"{server.api}/conversations/{cid}/stream"
        # a reconnecting EventSource repeats its original URL, after= included
        tail = await read_all(http, f"{url}?after=2", {"Last-Event-ID": "9"})
        assert tail == full[9:]
        tail = await read_all(http, f"{url}?after=9", {"Last-Event-ID": "2"})
        assert tail == full[2:]
        # a bad after= is still refused, even next to a good header? No: the header wins
        tail = await read_all(http, f"{url}?after=5", {"Last-Event-ID": "0"})
        assert tail == full


async def test_resume_while_the_run_is_live(server: RunningServer) -> None:
    async with client() as http:
        cid = await new_conversation(http, server)
        async with open_stream(
            http,
            "POST",
            f"{server.api}/agents/stream",
            json={"query": LONG, "conversation_id": cid},
        ) as stream:
            head = await stream.until("message_chunk")
            head += await stream.take(3)
        status = (await http.get(f"{server.api}/conversations/{cid}")).json()
        assert status["status"] == "running", "the resume happens during the run"
        last = head[-1]["seq"]
        # without follow, a join of a running conversation ends at the run's done
        tail = await read_all(
            http, f"{server.api}/conversations/{cid}/stream", {"Last-Event-ID": str(last)}
        )
        assert names(tail)[-1] == "done"
        log = await read_log(http, server, cid)
    joined = head + tail
    assert joined == log[log.index(head[0]) :]
    assert_contiguous(joined)


async def test_resume_twice_during_a_live_run(server: RunningServer) -> None:
    """Cut, resume, cut again, resume again, all while the agent streams."""
    async with client() as http:
        cid = await new_conversation(http, server)
        response = await http.post(
            f"{server.api}/conversations/{cid}/messages", json={"content": LONG}
        )
        assert response.json()["run_id"]
        url = f"{server.api}/conversations/{cid}/stream"
        seen: list[Envelope] = []
        for count in (5, 7):
            headers = {"Last-Event-ID": str(seen[-1]["seq"])} if seen else {}
            async with open_stream(http, "GET", url, headers=headers) as stream:
                seen += await stream.take(count)
        seen += await read_all(http, url, {"Last-Event-ID": str(seen[-1]["seq"])})
        log = await read_log(http, server, cid)
    assert seen == log
    assert names(seen)[-1] == "done"


async def test_three_viewers_see_the_same_sequence(server: RunningServer) -> None:
    async with client() as http:
        cid = await new_conversation(http, server)
        base = (await http.get(f"{server.api}/conversations/{cid}")).json()["last_seq"]
        url = f"{server.api}/conversations/{cid}/stream"
        results: dict[str, list[Envelope]] = {}

        async def follow(name: str, ready: anyio.Event, kind: Kind) -> None:
            async with open_stream(http, "GET", f"{url}?follow=true&after={base}", kind=kind) as s:
                ready.set()
                results[name] = await s.until("done")

        async def during(name: str) -> None:
            async with open_stream(http, "GET", url, headers={"Last-Event-ID": str(base)}) as s:
                results[name] = await s.rest()

        async with anyio.create_task_group() as group:
            readies = [anyio.Event() for _ in range(3)]
            kinds: list[Kind] = ["sse", "ndjson", "sse"]
            for i, (ready, kind) in enumerate(zip(readies, kinds, strict=True)):
                group.start_soon(follow, f"follow-{i}", ready, kind)
            for ready in readies:
                await ready.wait()
            # the three followers wait at the live end; now start a run
            async with open_stream(
                http,
                "POST",
                f"{server.api}/agents/stream",
                json={"query": LONG, "conversation_id": cid},
            ) as stream:
                await stream.take(2)
                # three more viewers join during the run
                for i in range(3):
                    group.start_soon(during, f"during-{i}")
                results["poster"] = await stream.finish()
    reference = results["poster"]
    assert names(reference)[0] == "task_started" and names(reference)[-1] == "done"
    assert len(results) == 7
    for name, events in results.items():
        assert events == reference, name


async def test_websocket_resume_frame(server: RunningServer) -> None:
    async with client() as http:
        cid, full = await short_run(http, server)
    async with open_socket(server, cid) as socket:
        ack = await socket.request({"type": "resume", "request_id": "r", "after": 4})
        assert ack == {"type": "ack", "request_id": "r", "after": 4}
        replay = await socket.until(lambda e: e["seq"] == full[-1]["seq"])
        assert replay == full[4:]
        # resuming again restarts the replay from the new point
        socket.events.clear()
        await socket.request({"type": "resume", "request_id": "again", "after": 0})
        again = await socket.until(lambda e: e["seq"] == full[-1]["seq"])
        assert [e["seq"] for e in again] == [e["seq"] for e in full]


async def test_resume_beyond_the_end_is_refused(server: RunningServer) -> None:
    async with client() as http:
        cid, full = await short_run(http, server)
        url = f"{server.api}/conversations/{cid}/stream"
        error_of(await http.get(url, headers={"Last-Event-ID": str(full[-1]["seq"] + 1)}), 400)
        # the last id itself is fine: nothing follows, the stream ends at once
        assert await read_all(http, url, {"Last-Event-ID": str(full[-1]["seq"])}) == []


async def test_post_resume_beyond_the_end_is_refused_before_anything_is_accepted(
    server: RunningServer,
) -> None:
    """A resume point past the log's end on ``POST /agents/stream`` is a 400, with a
    new message_id and for a conversation the request would create too: its stream
    would otherwise wait forever for a ``done`` after that point."""
    async with client() as http:
        cid, full = await short_run(http, server)
        past = str(full[-1]["seq"] + 1_000)
        with anyio.fail_after(10):
            refused = await http.post(
                f"{server.api}/agents/stream",
                json={"query": "more", "conversation_id": cid, "message_id": "new-one"},
                headers={"Last-Event-ID": past},
            )
            error_of(refused, 400, "invalid_event_id")
            assert await read_log(http, server, cid) == full, "nothing was accepted"
            for body in ({"query": "hi", "conversation_id": "brand-new"}, {"query": "hi"}):
                refused = await http.post(
                    f"{server.api}/agents/stream", json=body, params={"after": "5"}
                )
                error_of(refused, 400, "invalid_event_id")
            missing = await http.get(f"{server.api}/conversations/brand-new")
            error_of(missing, 404, "conversation_not_found")
            listed = (await http.get(f"{server.api}/conversations")).json()["conversations"]
            assert [c["conversation_id"] for c in listed] == [cid]
        # after=0 on a new conversation is everything: fine
        async with open_stream(
            http,
            "POST",
            f"{server.api}/agents/stream?after=0",
            json={"query": "hi", "conversation_id": "brand-new"},
        ) as stream:
            events = await stream.rest()
        assert names(events)[0] == "conversation_started" and names(events)[-1] == "done"
