"""The rest of the HTTP API: ops endpoints, history, delete, queue, modes, agents (SPEC §3.4)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from steerline.server.settings import ServerSettings
from steerline.service.service import ServiceLimits
from tests.server.clients import (
    client,
    error_of,
    first,
    names,
    new_conversation,
    open_stream,
    payload,
    read_log,
    text_of,
)
from tests.server.harness import RunningServer

pytestmark = pytest.mark.anyio


async def test_healthz_metrics_docs_openapi(server: RunningServer) -> None:
    async with client() as http:
        assert (await http.get(f"{server.url}/healthz")).json() == {"status": "ok"}
        await new_conversation(http, server)
        metrics = await http.get(f"{server.url}/metrics")
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain")
        text = metrics.text
        for name in (
            "steerline_runs_total",
            "steerline_stream_events_total",
            "steerline_live_streams",
            "steerline_queue_depth",
            "steerline_running_conversations",
            "steerline_slow_consumers_dropped_total",
        ):
            assert f"# TYPE {name.removesuffix('_total')}" in text, name
        assert "steerline_runs_total 1.0" in text
        assert 'steerline_stream_events_total{transport="sse"}' in text
        docs = await http.get(f"{server.url}/docs")
        assert docs.status_code == 200 and "text/html" in docs.headers["content-type"]
        spec = (await http.get(f"{server.url}/openapi.json")).json()
        for path in (
            "/api/v1/agents/stream",
            "/api/v1/conversations/{conversation_id}/stream",
            "/api/v1/conversations/{conversation_id}/messages",
            "/api/v1/conversations/{conversation_id}/history",
            "/api/v1/agents",
        ):
            assert path in spec["paths"], path


async def test_error_metric(server: RunningServer) -> None:
    async with client() as http:
        error_of(await http.get(f"{server.api}/conversations/nope"), 404)
        text = (await http.get(f"{server.url}/metrics")).text
    assert 'steerline_http_errors_total{code="conversation_not_found"} 1.0' in text


async def test_agents_lists_demo(server: RunningServer) -> None:
    async with client() as http:
        agents = (await http.get(f"{server.api}/agents")).json()["agents"]
    demo = next(a for a in agents if a["name"] == "demo")
    assert demo["provider"] == "demo" and demo["description"]


async def test_history_merges_chunks_per_item(server: RunningServer) -> None:
    query = 'alpha beta gamma\n/think first think\n/call echo {"text": "pong"}'
    async with client() as http:
        async with open_stream(
            http, "POST", f"{server.api}/agents/stream", json={"query": query}
        ) as stream:
            events = await stream.rest()
        cid = events[0]["data"]["conversation_id"]
        history = (await http.get(f"{server.api}/conversations/{cid}/history")).json()
    assert history["conversation_id"] == cid
    assert history["last_seq"] == events[-1]["seq"]
    items = history["items"]
    assert [i["type"] for i in items] == [
        "user_message",
        "reasoning",
        "message",
        "tool_call",
        "reasoning",
        "message",
    ]
    user, reasoning, message, tool, _, results = items
    assert user["content"] == query and user["delivery"] == "prompt" and user["role"] == "user"
    assert reasoning["content"] == "first think"
    assert message["content"] == "Echo: alpha beta gamma"
    # each item is exactly the merge of its chunks, by item_id
    for item in (message, results):
        chunks = [e for e in events if e["data"]["item_id"] == item["item_id"]]
        assert item["content"] == text_of(chunks)
        assert item["first_seq"] == chunks[0]["seq"] and item["last_seq"] == chunks[-1]["seq"]
    assert tool["tool_name"] == "echo" and tool["tool_args"] == {"text": "pong"}
    assert tool["result"] == "pong" and tool["is_error"] is False and tool["skipped"] is False
    assert results["content"] == "Results: echo=pong"
    assert all(i["task_id"] == events[1]["data"]["task_id"] for i in items)


async def test_delete_and_the_id_is_never_reused(server: RunningServer) -> None:
    async with client() as http:
        cid = await new_conversation(http, server)
        response = await http.delete(f"{server.api}/conversations/{cid}")
        assert response.status_code == 204
        error_of(await http.get(f"{server.api}/conversations/{cid}"), 404)
        error_of(await http.get(f"{server.api}/conversations/{cid}/stream"), 404)
        error_of(await http.delete(f"{server.api}/conversations/{cid}"), 404)
        response = await http.post(
            f"{server.api}/agents/stream", json={"query": "again", "conversation_id": cid}
        )
        error_of(response, 409, "conversation_exists")
        assert (await http.get(f"{server.api}/conversations")).json()["conversations"] == []


async def test_delete_a_running_conversation_ends_its_streams(server: RunningServer) -> None:
    async with (
        client() as http,
        open_stream(
            http,
            "POST",
            f"{server.api}/agents/stream",
            json={"query": '/call sleep {"seconds": 30}'},
        ) as stream,
    ):
        await stream.until("tool_call_started")
        cid = stream.events[0]["data"]["conversation_id"]
        async with open_stream(
            http, "GET", f"{server.api}/conversations/{cid}/stream?follow=true"
        ) as viewer:
            await viewer.until("tool_call_started")
            response = await http.delete(f"{server.api}/conversations/{cid}")
            assert response.status_code == 204
            await viewer.rest()  # ends: the conversation is gone
        await stream.rest()


async def test_queue_clear_per_lane(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(
        ServerSettings(store="memory://", service=ServiceLimits(auto_continue=False))
    )
    async with client() as http:
        cid = await new_conversation(http, server)
        url = f"{server.api}/conversations/{cid}"
        for i, mode in enumerate(["steer", "follow_up", "steer", "follow_up"]):
            response = await http.post(
                f"{url}/messages", json={"content": f"m{i}", "mode": mode, "id": f"m{i}"}
            )
            assert response.status_code == 202
        queue = (await http.get(url)).json()["queue"]
        assert [m["id"] for m in queue["steering"]] == ["m0", "m2"]
        assert [m["id"] for m in queue["follow_up"]] == ["m1", "m3"]
        removed = (await http.delete(f"{url}/queue", params={"lane": "steering"})).json()
        assert [m["id"] for m in removed["removed"]] == ["m0", "m2"]
        assert removed["removed"][0]["content"] == [{"type": "text", "text": "m0"}]
        queue = (await http.get(url)).json()["queue"]
        assert queue["steering"] == [] and len(queue["follow_up"]) == 2
        removed = (await http.delete(f"{url}/queue", params={"lane": "follow_up"})).json()
        assert [m["id"] for m in removed["removed"]] == ["m1", "m3"]
        await http.post(f"{url}/messages", json={"content": "x", "mode": "steer", "id": "x"})
        await http.post(f"{url}/messages", json={"content": "y", "id": "y"})
        removed = (await http.delete(f"{url}/queue")).json()  # default lane=all
        assert [m["id"] for m in removed["removed"]] == ["x", "y"]
        assert (await http.get(url)).json()["queue"] == {"steering": [], "follow_up": []}
        # every inbox change is on the wire as queue_updated
        log = await read_log(http, server, cid)
        updates = [payload(e) for e in log if e["event"] == "queue_updated"]
        assert updates[-1] == {"steering": [], "follow_up": []}
        assert names(log).count("message_queued") == 6


async def test_priority_orders_a_lane(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(
        ServerSettings(store="memory://", service=ServiceLimits(auto_continue=False))
    )
    async with client() as http:
        cid = await new_conversation(http, server)
        url = f"{server.api}/conversations/{cid}"
        for name, priority in (("low", 0), ("high", 5), ("low2", 0), ("mid", 1)):
            await http.post(
                f"{url}/messages", json={"content": name, "id": name, "priority": priority}
            )
        queue = (await http.get(url)).json()["queue"]
        assert [m["id"] for m in queue["follow_up"]] == ["high", "mid", "low", "low2"]


async def test_patch_modes(server: RunningServer) -> None:
    async with client() as http:
        cid = await new_conversation(http, server)
        url = f"{server.api}/conversations/{cid}"
        status = (await http.get(url)).json()
        assert status["steering_mode"] == "one-at-a-time"
        assert status["follow_up_mode"] == "one-at-a-time"
        assert status["steering_policy"] == "after_tool"
        patched = await http.patch(
            url, json={"steering_mode": "all", "steering_policy": "after_turn"}
        )
        assert patched.status_code == 200
        body = patched.json()
        assert body["steering_mode"] == "all"
        assert body["follow_up_mode"] == "one-at-a-time", "fields not sent are unchanged"
        assert body["steering_policy"] == "after_turn"
        body = (await http.patch(url, json={"follow_up_mode": "all"})).json()
        assert (body["steering_mode"], body["follow_up_mode"]) == ("all", "all")
        assert (await http.get(url)).json()["steering_policy"] == "after_turn"


async def test_follow_up_mode_all_delivers_at_once(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(
        ServerSettings(store="memory://", service=ServiceLimits(auto_continue=False))
    )
    async with client() as http:
        cid = await new_conversation(http, server)
        url = f"{server.api}/conversations/{cid}"
        await http.patch(url, json={"follow_up_mode": "all"})
        await http.post(f"{url}/messages", json={"content": "one"})
        await http.post(f"{url}/messages", json={"content": "two"})
        async with open_stream(
            http,
            "POST",
            f"{server.api}/agents/stream",
            json={"query": "go", "conversation_id": cid},
        ) as stream:
            events = await stream.rest()
    threads = [payload(e)["content"] for e in events if e["event"] == "thread_started"]
    assert threads == ["go", "one", "two"]
    # one answer for both follow-ups, on the thread of the last one
    assert text_of(events) == "Echo: goEcho: two"
    last = first(events, "thread_started", content="two")
    answer = [e for e in events if e["event"] == "message_chunk"][-1]
    assert answer["data"]["thread_id"] == last["data"]["thread_id"]


async def test_list_is_paginated(server: RunningServer) -> None:
    async with client() as http:
        ids = [await new_conversation(http, server) for _ in range(5)]
        page = (await http.get(f"{server.api}/conversations", params={"limit": 2})).json()
        assert len(page["conversations"]) == 2 and page["next_offset"] == 2
        seen = [c["conversation_id"] for c in page["conversations"]]
        while page["next_offset"] is not None:
            page = (
                await http.get(
                    f"{server.api}/conversations",
                    params={"limit": 2, "offset": page["next_offset"]},
                )
            ).json()
            seen += [c["conversation_id"] for c in page["conversations"]]
    assert sorted(seen) == sorted(ids)
    assert seen == ids[::-1], "most recently updated first"
