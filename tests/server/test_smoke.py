"""The demo agent over SSE, NDJSON and WebSocket yields one valid ValueCell stream."""

from __future__ import annotations

import json

import httpx2
import pytest

from tests.server.harness import RunningServer

pytestmark = pytest.mark.anyio

PROMPT = 'hello\n/call calculator {"expression": "6*7"}'


async def read_sse(response: httpx2.Response) -> list[dict[str, object]]:
    events = []
    last_id = 0
    async for sse in httpx2.EventSource(response):
        if not sse.data:  # the retry: hint dispatches no event in browsers
            continue
        envelope = json.loads(sse.data)
        assert int(sse.id) == envelope["seq"] > last_id
        last_id = envelope["seq"]
        events.append(envelope)
    return events


async def test_sse_stream_is_a_valuecell_stream(server: RunningServer) -> None:
    async with (
        httpx2.AsyncClient(timeout=10) as client,
        client.stream("POST", f"{server.api}/agents/stream", json={"query": PROMPT}) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-accel-buffering"] == "no"
        events = await read_sse(response)
    names = [e["event"] for e in events]
    assert names[0] == "conversation_started"
    assert names[1] == "task_started"
    assert "message_chunk" in names
    assert names[-2:] == ["task_completed", "done"]
    assert all(e["data"]["conversation_id"] == events[0]["data"]["conversation_id"] for e in events)
