"""Client disconnects: the run goes on by default, ``on_disconnect=cancel`` stops it,
and hundreds of dropped connections leak no task and no stream slot (SPEC §3.4)."""

from __future__ import annotations

import json
from collections.abc import Callable

import anyio
import pytest
from websockets.asyncio.client import connect

from steerline.server.settings import ServerSettings
from steerline.service.service import ServiceLimits
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
from tests.server.harness import RunningServer, problems, server_log

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


async def test_two_hundred_disconnects_leak_nothing(
    make_server: Callable[..., RunningServer],
) -> None:
    # 50 new conversations' runs (0.8 s each) go on after their streams are
    # cut: more than the default 32 may run at once on a fast machine
    server = make_server(
        ServerSettings(store="memory://", service=ServiceLimits(max_running_per_tenant=200))
    )
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


async def test_clients_leaving_log_no_errors(server: RunningServer) -> None:
    """Clients that leave mid-stream (a close frame, a TCP close without one, a
    reset) are ordinary: the server logs them at INFO at most, never an ERROR
    traceback, and releases every stream."""
    flood = "/delay 1\n" + " ".join(f"w{i}" for i in range(3000))
    async with client() as http:
        cid = await new_conversation(http, server)
        response = await http.post(
            f"{server.api}/conversations/{cid}/messages", json={"content": flood}
        )
        assert response.json()["run_id"]

        async def websocket_leaves(i: int) -> None:
            # max_queue=None: the client keeps reading what it does not consume, so a
            # close handshake is not stuck behind a replay it never reads
            ws = await connect(
                f"{server.ws}/conversations/{cid}/ws", open_timeout=15, max_queue=None
            )
            await ws.send(json.dumps({"type": "resume", "request_id": "r", "after": 0}))
            if i % 4 == 3:  # leave while a request is being answered
                await ws.send(json.dumps({"type": "set_modes", "request_id": "m"}))
            for _ in range(3):
                await ws.recv()
            how = i % 4
            if how == 0:
                await ws.close()  # a close frame
            elif how == 1:
                ws.transport.close()  # TCP FIN, no close frame
            else:
                ws.transport.abort()  # TCP RST
            await ws.wait_closed()

        async def http_leaves(i: int) -> None:
            kind = "sse" if i % 2 else "ndjson"
            url = f"{server.api}/conversations/{cid}/stream?follow=true&after=0"
            async with open_stream(http, "GET", url, kind=kind) as stream:
                await stream.take(3)

        async def refused_websocket_leaves(i: int) -> None:
            # refused (unknown conversation) while the client is already gone
            ws = await connect(f"{server.ws}/conversations/unknown-{i}/ws", open_timeout=15)
            ws.transport.abort()

        with server_log() as records:
            with anyio.fail_after(60):
                for _ in range(5):
                    async with anyio.create_task_group() as group:
                        for i in range(24):
                            group.start_soon(websocket_leaves, i)
                        for i in range(6):
                            group.start_soon(http_leaves, i)
                            group.start_soon(refused_websocket_leaves, i)

            async def released() -> bool:
                return len(server.state.streams) == 0 and server.state.gate.streams("default") == 0

            await eventually(released, what="every stream released")
        await http.post(f"{server.api}/conversations/{cid}/abort")
    assert problems(records) == []
