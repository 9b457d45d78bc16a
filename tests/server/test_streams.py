"""One demo query over SSE, NDJSON and WebSocket: the same valid ValueCell stream (SPEC §3)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import anyio
import httpx2
import pytest
from websockets.asyncio.client import connect

from steerline.server.settings import ServerSettings
from steerline.transports.tail import StreamSettings
from tests.server.clients import (
    Envelope,
    after_task_started,
    assert_contiguous,
    client,
    first,
    names,
    new_conversation,
    open_socket,
    open_stream,
    payload,
    read_log,
    text_of,
)
from tests.server.harness import RunningServer

pytestmark = pytest.mark.anyio

PROMPT = 'hello there\n/think let me see\n/call calculator {"expression": "6*7"}'

ROLES = {
    "conversation_started": "system",
    "thread_started": "user",
    "task_started": "agent",
    "task_completed": "agent",
    "reasoning_started": "agent",
    "reasoning": "agent",
    "reasoning_completed": "agent",
    "message_chunk": "agent",
    "tool_call_started": "agent",
    "tool_call_completed": "agent",
    "queue_updated": "system",
    "message_queued": "system",
    "done": "system",
}


def check_valuecell_run(events: list[Envelope], conversation_id: str) -> None:
    """The invariants of one demo run of PROMPT (SPEC §3.1 and §3.2)."""
    for event in events:
        assert set(event) == {"event", "data", "seq"}, event
        data = event["data"]
        assert data["conversation_id"] == conversation_id
        assert isinstance(data["item_id"], str) and data["item_id"]
        assert data["role"] == ROLES[event["event"]], event
        assert None not in data.values(), "None fields are omitted"
    seq = after_task_started(events)
    assert seq[:2] == ["task_started", "thread_started"]
    assert seq[-2:] == ["task_completed", "done"]
    assert seq.count("done") == 1
    # reasoning, then the answer, then the tool call, then the results turn
    assert (
        seq.index("reasoning_started") < seq.index("reasoning") < seq.index("reasoning_completed")
    )
    assert seq.index("reasoning_completed") < seq.index("message_chunk")
    assert seq.index("tool_call_started") < seq.index("tool_call_completed")

    thread = first(events, "thread_started")
    assert thread["data"]["metadata"]["delivery"] == "prompt"
    assert thread["data"]["metadata"]["message_id"] == thread["data"]["item_id"]
    assert payload(thread)["content"] == PROMPT
    started = first(events, "task_started")
    run_id = started["data"]["task_id"]
    assert run_id.startswith("run-")
    for event in events[events.index(started) :]:
        assert event["data"]["task_id"] == run_id
    for event in events[events.index(thread) :]:
        assert event["data"]["thread_id"] == thread["data"]["thread_id"]

    # directives apply to every model call until the next user message (SPEC §2.8)
    assert text_of(events, "reasoning") == "let me see" * 2
    assert seq.count("reasoning_started") == seq.count("reasoning_completed") == 2
    call = first(events, "tool_call_started")
    assert payload(call)["tool_name"] == "calculator"
    assert payload(call)["tool_args"] == {"expression": "6*7"}
    result = first(events, "tool_call_completed")
    assert result["data"]["item_id"] == call["data"]["item_id"] == payload(call)["tool_call_id"]
    assert payload(result) == {
        "tool_call_id": payload(call)["tool_call_id"],
        "tool_name": "calculator",
        "tool_result": '[{"content": "42"}]',  # as ValueCell's server encodes it
        "is_error": False,
        "skipped": False,
    }
    assert text_of(events) == "Echo: hello thereResults: calculator=42"
    chunks = [e for e in events if e["event"] == "message_chunk"]
    # one item per paragraph: the echo and the results answer are two items
    assert len({c["data"]["item_id"] for c in chunks}) == 2
    assert payload(events[-1]) == {"stop_reason": "completed"}
    assert payload(events[-2])["stop_reason"] == "completed"


async def test_sse(server: RunningServer) -> None:
    async with client() as http:
        async with open_stream(
            http, "POST", f"{server.api}/agents/stream", json={"query": PROMPT}
        ) as stream:
            assert stream.response is not None
            headers = stream.response.headers
            assert headers["cache-control"] == "no-cache"
            assert headers["x-accel-buffering"] == "no"
            events = await stream.rest()
        assert stream.retry == 1000, "the retry: hint comes first"
        assert stream.comments == []
        assert names(events)[0] == "conversation_started"
        assert_contiguous(events, 1)
        cid = events[0]["data"]["conversation_id"]
        assert cid.startswith("conv-")
        check_valuecell_run(events, cid)

        # a browser-style parser sees the same events, each with its id
        async with http.stream("GET", f"{server.api}/conversations/{cid}/stream") as response:
            parsed = [
                (sse.id, json.loads(sse.data))
                async for sse in httpx2.EventSource(response)
                if sse.data
            ]
        assert [p[1] for p in parsed] == events
        assert all(sse_id == str(e["seq"]) for sse_id, e in parsed)


async def test_ndjson(server: RunningServer) -> None:
    async with (
        client() as http,
        http.stream(
            "POST",
            f"{server.api}/agents/stream",
            json={"query": PROMPT},
            headers={"Accept": "application/x-ndjson"},
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        body = await response.aread()
    assert body.endswith(b"\n") and b"\r" not in body
    events = [json.loads(line) for line in body.decode().split("\n") if line]
    assert_contiguous(events, 1)
    check_valuecell_run(events, events[0]["data"]["conversation_id"])


async def test_three_transports_agree(server: RunningServer) -> None:
    async with client() as http:
        async with open_stream(
            http, "POST", f"{server.api}/agents/stream", json={"query": PROMPT}
        ) as stream:
            sse = await stream.rest()
        async with open_stream(
            http, "POST", f"{server.api}/agents/stream", json={"query": PROMPT}, kind="ndjson"
        ) as stream:
            ndjson = await stream.rest()
        cid = await new_conversation(http, server)
        async with open_socket(server, cid) as socket:
            ack = await socket.request({"type": "prompt", "request_id": "r1", "content": PROMPT})
            assert ack["type"] == "ack" and ack["request_id"] == "r1", ack
            assert ack["run_id"].startswith("run-") and ack["duplicate"] is False
            ws = await socket.until("done")
        assert names(ws)[0] == "task_started", "a socket starts at the live end"
        assert ws[0]["data"]["task_id"] == ack["run_id"]
        assert_contiguous(ws)
        check_valuecell_run(ws, cid)
    assert after_task_started(sse) == after_task_started(ndjson) == after_task_started(ws)


async def test_second_prompt_on_a_conversation(server: RunningServer) -> None:
    """A later prompt's response starts at its run's task_started and is contiguous."""
    async with client() as http:
        cid = await new_conversation(http, server)
        async with open_stream(
            http,
            "POST",
            f"{server.api}/agents/stream",
            json={"query": PROMPT, "conversation_id": cid},
        ) as stream:
            events = await stream.rest()
        assert names(events)[0] == "task_started"
        assert_contiguous(events)
        assert events[0]["seq"] > 1
        check_valuecell_run(events, cid)


async def test_pings(make_server: Any) -> None:
    """Heartbeats are comments (SSE), ping lines (NDJSON), ping frames (WebSocket)."""
    settings = ServerSettings(
        store="memory://", stream=replace(StreamSettings(), ping_interval=0.1)
    )
    server: RunningServer = make_server(settings)
    async with client() as http:
        cid = await new_conversation(http, server)
        url = f"{server.api}/conversations/{cid}/stream?follow=true"
        async with open_stream(http, "GET", url) as stream:
            await stream.until("done")
            with anyio.fail_after(10):
                while "ping" not in stream.comments:
                    assert await stream._pull()
        async with open_stream(http, "GET", url, kind="ndjson") as stream:
            await stream.until("done")
            with anyio.fail_after(10):
                while {"event": "ping"} not in stream.controls:
                    assert await stream._pull()
        async with open_socket(server, cid) as socket:
            assert (await socket.next_frame()) == {"type": "ping"}


@pytest.mark.parametrize("compression", [None, "deflate"])
async def test_websocket_batches_are_one_envelope_per_frame(
    server: RunningServer, compression: str | None
) -> None:
    """A burst of events goes out as one write of many frames (without
    compression the server frames them itself): still one envelope per text
    frame, contiguous, the same as the log (SPEC §3.3)."""
    words = " ".join(f"w{i}" for i in range(2000))
    async with client() as http:
        cid = await new_conversation(http, server)
        base = (await http.get(f"{server.api}/conversations/{cid}")).json()["last_seq"]
        url = f"{server.ws}/conversations/{cid}/ws"
        async with connect(url, compression=compression, open_timeout=15) as ws:
            await ws.send(json.dumps({"type": "prompt", "request_id": "r", "content": words}))
            events: list[Envelope] = []
            with anyio.fail_after(30):
                while not events or events[-1]["event"] != "done":
                    raw = await ws.recv()
                    assert isinstance(raw, str)  # a text frame
                    frame = json.loads(raw)  # exactly one JSON value per frame
                    if "seq" in frame:
                        events.append(frame)
        log = await read_log(http, server, cid)
    assert events[0]["seq"] == base + 1
    assert_contiguous(events)
    assert events == log[base:]
    assert text_of(events).split() == ["Echo:", *words.split()]
