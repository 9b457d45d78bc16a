"""CORS is off by default and configurable (SPEC §4)."""

from __future__ import annotations

from collections.abc import Callable

import httpx2
import pytest

from steerline.server.settings import ServerSettings
from tests.server.harness import RunningServer

pytestmark = pytest.mark.anyio

PREFLIGHT = {
    "Origin": "http://app.example.test",
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "content-type",
}


async def test_cors_is_off_by_default(server: RunningServer) -> None:
    async with httpx2.AsyncClient(timeout=10) as client:
        response = await client.get(
            f"{server.url}/healthz", headers={"Origin": PREFLIGHT["Origin"]}
        )
    assert "access-control-allow-origin" not in response.headers


async def test_configured_origins_get_cors_headers(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(
        ServerSettings(store="memory://", cors_origins=("http://app.example.test",))
    )
    async with httpx2.AsyncClient(timeout=10) as client:
        preflight = await client.options(f"{server.api}/agents/stream", headers=PREFLIGHT)
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "http://app.example.test"
        other = await client.options(
            f"{server.api}/agents/stream", headers={**PREFLIGHT, "Origin": "http://evil.test"}
        )
        assert "access-control-allow-origin" not in other.headers


async def test_a_joined_stream_carries_cors_headers(
    make_server: Callable[..., RunningServer],
) -> None:
    """``GET …/stream`` is served in front of FastAPI's router, still inside
    the CORS middleware: a page on an allowed origin can read it."""
    server = make_server(
        ServerSettings(store="memory://", cors_origins=("http://app.example.test",))
    )
    async with httpx2.AsyncClient(timeout=10) as client:
        created = await client.post(f"{server.api}/agents/stream", json={"query": "hi"})
        cid = created.text.split('"conversation_id":"', 1)[1].split('"', 1)[0]
        origin = {"Origin": "http://app.example.test"}
        joined = await client.get(f"{server.api}/conversations/{cid}/stream", headers=origin)
        assert joined.status_code == 200
        assert joined.headers["access-control-allow-origin"] == "http://app.example.test"
        missing = await client.get(f"{server.api}/conversations/nope/stream", headers=origin)
        assert missing.status_code == 404
        assert missing.headers["access-control-allow-origin"] == "http://app.example.test"
