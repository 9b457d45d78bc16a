"""Client disconnects: the run goes on by default, ``on_disconnect=cancel`` stops it,
and hundreds of dropped connections leak no task and no stream slot (SPEC §3.4)."""

from __future__ import annotations

import pytest

from tests.server.clients import (
    Kind,
    client,
    eventually,
    names,
    new_conversation,
    open_socket,
    open_stream,
    payload,
    server_tasks,
    text_of,
    wait_idle,
)
from tests.server.harness import RunningServer

pytestmark = pytest.mark.anyio

WORDS = " ".join(f"w{i}" for i in range(40))
SLOW = f"/delay 20\n{WORDS}"


@pytest.mark.parametrize("kind", ["sse", "ndjson"])
async def test_disconnect_does_not_cancel_by_default(server: RunningServer, kind: Kind) -> None:
    async with client() as http:
        async with open_stream(
            http, "POST", f"{server.api}/agents/stream", json={"query": SLOW}, kind=kind
        ) as stream:
            await stream.until("message_chunk")
            cid = stream.events[0]["data"]["conversation_id"]
        # the client is gone; the run is not
        events = await wait_idle(http, server, cid)
    assert payload(events[-1]) == {"stop_reason": "completed"}
    assert names(events)[-2] == "task_completed"
    assert text_of(events) == f"Echo: {WORDS}"


async def test_disconnect_of_a_joined_stream_does_not_cancel(server: RunningServer) -> None:
    async with client() as http:
        cid = await new_conversation(http, server)
        response = await http.post(
            f"{server.api}/conversations/{cid}/messages", json={"content": SLOW}
        )
        assert response.json()["run_id"]
        async with open_stream(http, "GET", f"{server.api}/conversations/{cid}/stream") as s:
            await s.until("message_chunk")
        events = await wait_idle(http, server, cid)
    assert payload(events[-1])["stop_reason"] == "completed"


async def test_websocket_close_does_not_cancel(server: RunningServer) -> None:
    async with client() as http:
        cid = await new_conversation(http, server)
        async with open_socket(server, cid) as socket:
            await socket.request({"type": "prompt", "request_id": "p", "content": SLOW})
            await socket.until("message_chunk")
        events = await wait_idle(http, server, cid)
    assert payload(events[-1])["stop_reason"] == "completed"


async def test_on_disconnect_cancel(server: RunningServer) -> None:
    async with client() as http:
        async with open_stream(
            http,
            "POST",
            f"{server.api}/agents/stream?on_disconnect=cancel",
            json={"query": '/call sleep {"seconds": 30}'},
        ) as stream:
            await stream.until("tool_call_started")
            cid = stream.events[0]["data"]["conversation_id"]
        events = await wait_idle(http, server, cid)
    assert names(events)[-2:] == ["task_cancelled", "done"]
    assert payload(events[-1]) == {"stop_reason": "aborted"}
    result = [e for e in events if e["event"] == "tool_call_completed"]
    assert payload(result[0])["is_error"] is True


async def test_on_disconnect_cancel_on_a_joined_stream(server: RunningServer) -> None:
    async with client() as http:
        cid = await new_conversation(http, server)
        response = await http.post(
            f"{server.api}/conversations/{cid}/messages", json={"content": SLOW}
        )
        run_id = response.json()["run_id"]
        async with open_stream(
            http, "GET", f"{server.api}/conversations/{cid}/stream?on_disconnect=cancel"
        ) as s:
            await s.until("message_chunk")
        events = await wait_idle(http, server, cid)
    assert events[-1]["data"]["task_id"] == run_id
    assert payload(events[-1])["stop_reason"] == "aborted"
    assert len(text_of(events)) < len(f"Echo: {WORDS}"), "the answer was cut"


async def test_on_disconnect_cancel_after_the_run_is_harmless(server: RunningServer) -> None:
    """A cancel-on-disconnect stream that outlives its run aborts nothing later."""
    async with client() as http:
        cid = await new_conversation(http, server)
        async with open_stream(
            http,
            "GET",
            f"{server.api}/conversations/{cid}/stream?follow=true&on_disconnect=cancel",
        ) as s:
            await s.until("done")
        async with open_stream(
            http,
            "POST",
            f"{server.api}/agents/stream",
            json={"query": "still fine", "conversation_id": cid},
        ) as stream:
            events = await stream.rest()
    assert payload(events[-1])["stop_reason"] == "completed"


async def test_two_hundred_disconnects_leak_nothing(server: RunningServer) -> None:
    state = server.state
    async with client() as http:
        cid = await new_conversation(http, server)
        # a run that stays live the whole time, so every stream is cut mid-run
        response = await http.post(
            f"{server.api}/conversations/{cid}/messages",
            json={"content": '/call sleep {"seconds": 60}'},
        )
        assert response.json()["run_id"]
        url = f"{server.api}/conversations/{cid}/stream"
        async with open_stream(http, "GET", url) as s:
            await s.until("tool_call_started")

        async def quiet() -> bool:
            return len(state.streams) == 0 and state.gate.streams("default") == 0

        await eventually(quiet, what="warm-up streams closed")
        tasks_before = await server_tasks(server)

        for i in range(200):
            kind = i % 4
            if kind == 0:
                async with open_stream(http, "GET", f"{url}?follow=true") as s:
                    await s.until("tool_call_started")
            elif kind == 1:
                async with open_stream(http, "GET", url, kind="ndjson") as s:
                    await s.until("tool_call_started")
            elif kind == 2:
                async with open_socket(server, cid) as socket:
                    await socket.request({"type": "resume", "request_id": "r", "after": 0})
                    await socket.until("tool_call_started")
            else:
                # a new conversation's response, cut before its run ends
                async with open_stream(
                    http, "POST", f"{server.api}/agents/stream", json={"query": SLOW}
                ) as s:
                    await s.until("task_started")
        assert state.gate.streams("default") <= 1
        await eventually(quiet, what="every stream slot released")
        assert state.service is not None
        service = state.service

        async def short_runs_done() -> bool:
            # the short runs started above go on after their client left
            return all(not c.busy for c in service.live_conversations() if c.id != cid)

        await eventually(short_runs_done, what="the short runs finished")
        assert len(service.live_conversations()) == 51
        counts: list[int] = []

        async def settled() -> bool:
            counts.append(await server_tasks(server))
            return counts[-1] <= tasks_before + 3

        await eventually(settled, what=f"server tasks back to {tasks_before}: {counts[-5:]}")
        metrics = (await http.get(f"{server.url}/metrics")).text
        for transport in ("sse", "ndjson", "websocket"):
            line = f'steerline_live_streams{{transport="{transport}"}} 0.0'
            assert line in metrics, transport
        await http.post(f"{server.api}/conversations/{cid}/abort")
        await wait_idle(http, server, cid)
