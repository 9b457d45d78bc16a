"""The queue of SPEC §2.9 driven the same way over HTTP and over WebSocket:
one command set underneath, so the same results and the same errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

import httpx2
import pytest

from tests.server.clients import (
    client,
    first,
    names,
    open_socket,
    open_stream,
    payload,
    read_log,
    wait_idle,
)
from tests.server.harness import RunningServer

pytestmark = pytest.mark.anyio
SLEEP = '/call sleep {"seconds": 3}'

Outcome = tuple[str, dict[str, Any]]
"""("ok", result) or (error code, {})."""


class Surface(Protocol):
    async def send(self, kind: str, **fields: Any) -> Outcome: ...


class Http:
    def __init__(self, http: httpx2.AsyncClient, base: str) -> None:
        self.http, self.base = http, base

    async def send(self, kind: str, **fields: Any) -> Outcome:
        http, base = self.http, self.base
        if kind in ("steer", "follow_up"):
            response = await http.post(f"{base}/messages", json={"mode": kind, **fields})
        elif kind == "edit_queued" or kind == "move_queued":
            message_id = fields.pop("id")
            response = await http.patch(f"{base}/queue/{message_id}", json=fields)
        elif kind == "remove_queued":
            response = await http.delete(f"{base}/queue/{fields['id']}")
        elif kind == "send_now":
            response = await http.post(f"{base}/queue/send")
        elif kind == "abort":
            response = await http.post(f"{base}/abort", json=fields)
        else:
            raise AssertionError(kind)
        body = response.json()
        if response.status_code >= 400:
            return body["error"]["code"], {}
        return "ok", body


class Ws:
    def __init__(self, socket: Any) -> None:
        self.socket, self.count = socket, 0

    async def send(self, kind: str, **fields: Any) -> Outcome:
        self.count += 1
        reply = await self.socket.request({"type": kind, "request_id": self.count, **fields})
        if reply["type"] == "error":
            return reply["error"]["code"], {}
        return "ok", {k: v for k, v in reply.items() if k not in ("type", "request_id")}


@asynccontextmanager
async def surface_for(kind: str, server: RunningServer, cid: str) -> AsyncIterator[Surface]:
    async with client() as http:
        if kind == "http":
            yield Http(http, f"{server.api}/conversations/{cid}")
        else:
            async with open_socket(server, cid) as socket:
                yield Ws(socket)


def ids(result: dict[str, Any], lane: str) -> list[str]:
    return [m["id"] for m in result["queue"][lane]]


@pytest.mark.parametrize("kind", ["http", "websocket"])
async def test_the_queue_over_both_surfaces(server: RunningServer, kind: str) -> None:
    async with client() as http:
        async with open_stream(
            http, "POST", f"{server.api}/agents/stream", json={"query": "hello"}
        ) as stream:
            await stream.rest()
        cid = stream.events[0]["data"]["conversation_id"]
        async with (
            open_stream(
                http,
                "GET",
                f"{server.api}/conversations/{cid}/stream?follow=true&after={stream.last_seq}",
            ) as viewer,
            surface_for(kind, server, cid) as surface,
        ):
            outcome, started = await surface.send("follow_up", content=SLEEP, id="run-1")
            assert outcome == "ok" and started["queued"] is False and started["run_id"]
            run_id = started["run_id"]
            await viewer.until(lambda e: e["event"] == "tool_call_started")
            for name in ("f1", "f2", "f3"):
                outcome, ack = await surface.send("follow_up", content=name, id=name)
                assert outcome == "ok" and ack["queued"] is True
                assert (ack["lane"], ack["run_id"]) == ("follow_up", run_id)
            assert ack["position"] == 2 and ids(ack, "follow_up") == ["f1", "f2", "f3"]

            outcome, edited = await surface.send("edit_queued", id="f1", content="f1 edited")
            assert outcome == "ok" and edited["message"]["content"][0]["text"] == "f1 edited"
            outcome, removed = await surface.send("remove_queued", id="f2")
            assert outcome == "ok" and ids(removed, "follow_up") == ["f1", "f3"]
            outcome, moved = await surface.send("move_queued", id="f3", before="f1")
            assert outcome == "ok" and ids(moved, "follow_up") == ["f3", "f1"]
            outcome, promoted = await surface.send("move_queued", id="f1", lane="steering")
            assert outcome == "ok" and ids(promoted, "steering") == ["f1"]
            assert ids(promoted, "follow_up") == ["f3"]
            # a stale expected_run_id is refused and queues nothing
            outcome, _ = await surface.send(
                "steer", content="stale", id="stale", expected_run_id="run-gone"
            )
            assert outcome == "run_mismatch"
            # sending the queue while running is refused
            assert (await surface.send("send_now"))[0] == "agent_busy"
            events = await viewer.until(
                lambda e: e["event"] == "done" and e["data"].get("task_id") == run_id, within=30
            )
            # delivered: the edit is refused now
            assert (await surface.send("edit_queued", id="f1", content="x"))[0] == (
                "already_delivered"
            )
            assert (await surface.send("remove_queued", id="nope"))[0] == (
                "queued_message_not_found"
            )

            # abort keeps the queue; send_now then delivers it
            outcome, second = await surface.send("follow_up", content=SLEEP, id="run-2")
            assert outcome == "ok" and second["queued"] is False
            await viewer.until(lambda e: e["event"] == "tool_call_started")
            assert (await surface.send("follow_up", content="kept", id="kept"))[0] == "ok"
            outcome, aborted = await surface.send("abort")
            assert outcome == "ok" and ids(aborted, "follow_up") == ["kept"]
            await viewer.until(lambda e: e["event"] == "done")
            outcome, sent = await surface.send("send_now")
            assert outcome == "ok" and sent["run_id"]
        log = await wait_idle(http, server, cid)
        all_events = await read_log(http, server, cid)

    delivered = [
        (payload(e)["content"], e["data"]["metadata"]["delivery"])
        for e in all_events
        if e["event"] == "thread_started"
    ]
    # the promoted follow-up came as a steer, before the remaining follow-up
    assert delivered[1:4] == [(SLEEP, "prompt"), ("f1 edited", "steer"), ("f3", "follow_up")]
    assert ("kept", "steer") not in delivered and delivered[-1] == ("kept", "follow_up")
    assert "stale" not in [content for content, _ in delivered]
    # the second viewer saw every queue change, in order, as the log has them
    viewer_changes = [e["seq"] for e in events if e["event"] == "queue_updated"]
    log_changes = [
        e["seq"]
        for e in all_events
        if e["event"] == "queue_updated"
        and viewer_changes
        and e["seq"] <= viewer_changes[-1]
        and e["seq"] >= viewer_changes[0]
    ]
    assert viewer_changes == log_changes
    assert names(log)[-1] == "done" and first(all_events, "message_queued")
