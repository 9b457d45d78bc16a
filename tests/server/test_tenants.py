"""API keys, tenant isolation and per-tenant limits (SPEC §4)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from steerline.server.settings import (
    InsecureBindError,
    ServerSettings,
    TenantLimits,
    check_bind,
)
from tests.server.clients import (
    client,
    error_of,
    eventually,
    new_conversation,
    open_socket,
    open_stream,
)
from tests.server.harness import RunningServer, free_port

pytestmark = pytest.mark.anyio

KEYS = {"k1": "t1", "k2": "t2"}
T1 = {"Authorization": "Bearer k1"}
T2 = {"Authorization": "Bearer k2"}


@pytest.fixture
def keyed(make_server: Callable[..., RunningServer]) -> RunningServer:
    return make_server(ServerSettings(store="memory://", api_keys=KEYS))


async def test_missing_or_invalid_key_is_401(keyed: RunningServer) -> None:
    api = keyed.api
    async with client() as http:
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic k1"}):
            for method, url, body in [
                ("POST", f"{api}/agents/stream", {"query": "hi"}),
                ("GET", f"{api}/conversations", None),
                ("GET", f"{api}/agents", None),
                ("GET", f"{api}/conversations/conv-x", None),
                ("GET", f"{api}/conversations/conv-x/stream", None),
                ("POST", f"{api}/conversations/conv-x/messages", {"content": "a"}),
            ]:
                response = await http.request(method, url, json=body, headers=headers)
                error_of(response, 401, "unauthorized")
                assert response.headers["www-authenticate"] == "Bearer"
        assert (
            await http.get(f"{api}/conversations", params={"access_token": "nope"})
        ).status_code == 401
        # a key in the query works for browsers (EventSource, WebSocket)
        ok = await http.get(f"{api}/conversations", params={"access_token": "k1"})
        assert ok.status_code == 200
        assert (await http.get(f"{api}/agents", headers=T1)).status_code == 200
        # liveness needs no key
        assert (await http.get(f"{keyed.url}/healthz")).status_code == 200
    async with open_socket(keyed, "conv-x") as socket:
        frame = await socket.next_frame()
        assert frame["type"] == "error" and frame["error"]["code"] == "unauthorized"
        await socket.ws.wait_closed()
        assert socket.ws.close_code == 4403


async def test_tenants_are_isolated(keyed: RunningServer) -> None:
    api = keyed.api
    async with client(headers=T1) as one, client(headers=T2) as two:
        cid = await new_conversation(one, keyed)
        own = await new_conversation(two, keyed)
        conv = f"{api}/conversations/{cid}"
        for method, url, body in [
            ("GET", conv, None),
            ("PATCH", conv, {"steering_policy": "immediate"}),
            ("GET", f"{conv}/stream", None),
            ("GET", f"{conv}/history", None),
            ("POST", f"{conv}/messages", {"content": "intrude"}),
            ("POST", f"{conv}/abort", None),
            ("DELETE", f"{conv}/queue", None),
            ("DELETE", conv, None),
        ]:
            response = await two.request(method, url, json=body)
            error_of(response, 404, "conversation_not_found")
        # the same id on /agents/stream neither reaches nor shadows t1's conversation
        response = await two.post(
            f"{api}/agents/stream", json={"query": "intrude", "conversation_id": cid}
        )
        error_of(response, 404, "conversation_not_found")
        async with open_socket(keyed, cid, headers=T2) as socket:
            frame = await socket.next_frame()
            assert frame["error"]["code"] == "conversation_not_found"
            await socket.ws.wait_closed()
            assert socket.ws.close_code == 4404
        # listing shows each tenant its own conversations only
        listed_one = (await one.get(f"{api}/conversations")).json()["conversations"]
        listed_two = (await two.get(f"{api}/conversations")).json()["conversations"]
        assert [c["conversation_id"] for c in listed_one] == [cid]
        assert [c["conversation_id"] for c in listed_two] == [own]
        # t1's conversation is untouched
        status = (await one.get(conv)).json()
        assert status["steering_policy"] == "after_tool"
        history = (await one.get(f"{conv}/history")).json()
        assert "intrude" not in str(history)
        # and t1 can still use it over a socket
        async with open_socket(keyed, cid, headers=T1) as socket:
            ack = await socket.request({"type": "prompt", "request_id": "a", "content": "mine"})
            assert ack["type"] == "ack"
            await socket.until("done")


async def test_requests_per_minute(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(
        ServerSettings(
            store="memory://", api_keys=KEYS, tenant_limits=TenantLimits(requests_per_minute=5)
        )
    )
    async with client(headers=T1) as one, client(headers=T2) as two:
        for _ in range(5):
            assert (await one.get(f"{server.api}/agents")).status_code == 200
        response = await one.get(f"{server.api}/agents")
        error_of(response, 429, "rate_limited")
        assert int(response.headers["retry-after"]) >= 1
        error_of(await one.post(f"{server.api}/agents/stream", json={"query": "hi"}), 429)
        # the other tenant has its own budget
        assert (await two.get(f"{server.api}/agents")).status_code == 200


async def test_websocket_frames_count_against_the_rate(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(
        ServerSettings(
            store="memory://", api_keys=KEYS, tenant_limits=TenantLimits(requests_per_minute=6)
        )
    )
    async with client(headers=T1) as one:
        cid = await new_conversation(one, server)  # 1 request
    async with open_socket(server, cid, headers=T1) as socket:  # 2
        replies = [
            await socket.request({"type": "set_modes", "request_id": f"m{i}"}) for i in range(6)
        ]
    assert [r["type"] for r in replies[:4]] == ["ack"] * 4
    assert replies[-1]["type"] == "error"
    assert replies[-1]["error"]["code"] == "rate_limited"
    assert replies[-1]["request_id"] == "m5"


async def test_max_streams(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(
        ServerSettings(store="memory://", api_keys=KEYS, tenant_limits=TenantLimits(max_streams=1))
    )
    async with client(headers=T1) as one, client(headers=T2) as two:
        cid = await new_conversation(one, server)
        url = f"{server.api}/conversations/{cid}/stream?follow=true"
        async with open_stream(one, "GET", url) as held:
            await held.until("done")
            assert server.state.gate.streams("t1") == 1
            error_of(await one.get(url), 429, "too_many_streams")
            response = await one.post(f"{server.api}/agents/stream", json={"query": "hi"})
            error_of(response, 429, "too_many_streams")
            assert "retry-after" in response.headers
            async with open_socket(server, cid, headers=T1) as socket:
                frame = await socket.next_frame()
                assert frame["error"]["code"] == "too_many_streams"
            # another tenant is not affected
            other = await new_conversation(two, server)
            assert other != cid
        # the slot comes back when the stream closes
        await eventually(_slot_free(server, "t1"), what="t1's stream slot released")
        async with open_stream(one, "GET", url) as again:
            await again.until("done")


def _slot_free(server: RunningServer, tenant: str) -> Callable[[], Any]:
    async def check() -> bool:
        return server.state.gate.streams(tenant) == 0

    return check


def test_check_bind() -> None:
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        check_bind(ServerSettings(host=host))
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.com"):
        with pytest.raises(InsecureBindError, match="--insecure"):
            check_bind(ServerSettings(host=host))
        check_bind(ServerSettings(host=host, api_keys={"k": "t"}))
        check_bind(ServerSettings(host=host, insecure=True))


def _steerline() -> str:
    import shutil
    import sys

    found = shutil.which("steerline") or str(Path(sys.executable).parent / "steerline")
    assert Path(found).exists(), found
    return found


def test_cli_refuses_a_public_bind_without_keys(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEERLINE_")}
    process = subprocess.Popen(
        [
            _steerline(),
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            str(free_port()),
            "--store",
            "memory://",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode != 0
    assert "refusing to bind" in err and "--insecure" in err, (out, err)
    assert "Uvicorn running" not in out + err


async def test_bearer_on_websocket_query_token(keyed: RunningServer) -> None:
    async with client(headers=T1) as one:
        cid = await new_conversation(one, keyed)
    url = f"{keyed.ws}/conversations/{cid}/ws?access_token=k1"
    async with connect(url) as ws:
        await ws.send('{"type": "set_modes", "request_id": "q"}')
        assert '"ack"' in str(await ws.recv())
