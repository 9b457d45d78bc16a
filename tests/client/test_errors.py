"""Every typed error, from a real server (and two a proxy would send)."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx2
import pytest

from steerline.client import (
    APIError,
    AsyncClient,
    BadRequest,
    Client,
    ClientError,
    Conflict,
    ConnectionFailed,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Reconnect,
    ServerError,
    ServiceUnavailable,
    StreamFailed,
    Unauthorized,
)
from steerline.server.settings import ServerSettings, TenantLimits
from tests.server.harness import RunningServer, free_port

pytestmark = pytest.mark.anyio
SLEEP = '/call sleep {"seconds": 5}'


async def start_running(client: AsyncClient) -> tuple[str, str]:
    """A conversation whose run is busy in a 5 s sleep: (conversation id, run id)."""
    async with client.stream(SLEEP) as events:
        async for event in events:
            if event.event == "tool_call_started":
                break
    assert events.conversation_id is not None
    status = await client.conversation(events.conversation_id)
    assert status["status"] == "running"
    return events.conversation_id, status["active_run_id"]


async def test_not_found(server: RunningServer) -> None:
    async with AsyncClient(server.url) as client:
        with pytest.raises(NotFound) as caught:
            await client.conversation("nope")
        assert (caught.value.status, caught.value.code) == (404, "conversation_not_found")
        assert "nope" in caught.value.message
        async with client.stream("hi") as events:
            assert [e.event async for e in events][-1] == "done"
        assert events.conversation_id is not None
        with pytest.raises(NotFound) as caught:
            await client.remove_queued(events.conversation_id, "no-such-message")
        assert caught.value.code == "queued_message_not_found"
        # a stream refused with 404 raises at once: it is not retried
        with pytest.raises(NotFound):
            async with client.events("nope") as stream:
                async for _ in stream:
                    pass


async def test_run_mismatch_and_conversation_busy(server: RunningServer) -> None:
    async with AsyncClient(server.url) as client:
        cid, run_id = await start_running(client)
        with pytest.raises(Conflict) as caught:
            await client.steer(cid, "too late", expected_run_id="run-gone")
        assert (caught.value.status, caught.value.code) == (409, "run_mismatch")
        assert (await client.queue(cid))["steering"] == [], "nothing was queued"
        ack = await client.steer(cid, "now", expected_run_id=run_id, id="s-1")
        assert (ack["message_id"], ack["lane"], ack["run_id"]) == ("s-1", "steering", run_id)
        with pytest.raises(Conflict) as busy:
            async with client.stream("another", conversation_id=cid, mode="reject") as events:
                async for _ in events:
                    pass
        assert busy.value.code == "conversation_busy"
        await client.abort(cid)


def test_already_delivered(server: RunningServer) -> None:
    with Client(server.url) as client:
        with client.stream("hi") as events:
            list(events)
        cid = events.conversation_id
        assert cid is not None
        # on an idle conversation a follow-up starts a run with it: delivered at once
        ack = client.follow_up(cid, "take this", id="m-1")
        assert ack["queued"] is False and ack["run_id"]
        with client.events(cid) as run:
            assert [e.event for e in run][-1] == "done"
        with pytest.raises(Conflict) as caught:
            client.edit_queued(cid, "m-1", content="changed")
        assert (caught.value.status, caught.value.code) == (409, "already_delivered")


async def test_rate_limited_with_retry_after(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(
        ServerSettings(store="memory://", tenant_limits=TenantLimits(requests_per_minute=2))
    )
    async with AsyncClient(server.url) as client:
        with pytest.raises(RateLimited) as caught:
            for _ in range(5):
                await client.agents()
    limited = caught.value
    assert (limited.status, limited.code) == (429, "rate_limited")
    assert limited.retry_after is not None and limited.retry_after >= 1


def test_unauthorized_without_the_key(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(ServerSettings(store="memory://", api_keys={"tok-1": "acme"}))
    for key in (None, "wrong"):
        with Client(server.url, api_key=key) as client:
            with pytest.raises(Unauthorized) as caught:
                client.agents()
            assert (caught.value.status, caught.value.code) == (401, "unauthorized")
            with pytest.raises(Unauthorized), client.stream("hi") as events:
                list(events)
    with Client(server.url, api_key="tok-1") as client:
        assert client.agents()["default"] == "demo"
        with client.stream("hi") as events:
            assert [e.event for e in events][-1] == "done"


async def test_payload_too_large(server: RunningServer) -> None:
    big = "x" * 70_000  # over the 64 KiB message limit
    async with AsyncClient(server.url) as client:
        with pytest.raises(PayloadTooLarge) as caught:
            async with client.stream(big) as events:
                async for _ in events:
                    pass
        assert (caught.value.status, caught.value.code) == (413, "message_too_large")
        async with client.stream("hi") as events:
            [e async for e in events]
        assert events.conversation_id is not None
        with pytest.raises(PayloadTooLarge):
            await client.follow_up(events.conversation_id, big)


async def test_bad_request(server: RunningServer) -> None:
    async with AsyncClient(server.url) as client:
        async with client.stream("hi") as events:
            [e async for e in events]
        cid = events.conversation_id
        assert cid is not None
        with pytest.raises(BadRequest) as caught:
            await client.set_modes(cid, steering_mode="sometimes")
        assert (caught.value.status, caught.value.code) == (422, "invalid_request")
        with pytest.raises(BadRequest) as nothing:
            await client.edit_queued(cid, "m-1")
        assert (nothing.value.status, nothing.value.code) == (400, "invalid_value")


def test_an_error_body_that_is_not_json() -> None:
    def proxy(request: httpx2.Request) -> httpx2.Response:
        if request.url.path.endswith("/agents"):
            return httpx2.Response(502, html="<html><body>Bad Gateway</body></html>")
        return httpx2.Response(503, headers={"Retry-After": "7"}, text="down for maintenance")

    with Client("http://sdk.test", transport=httpx2.MockTransport(proxy)) as client:
        with pytest.raises(ServerError) as caught:
            client.agents()
        assert type(caught.value) is ServerError
        assert (caught.value.status, caught.value.code) == (502, None)
        assert "Bad Gateway" in caught.value.message and "502" in str(caught.value)
        with pytest.raises(ServiceUnavailable) as unavailable:
            client.conversation("c-1")
        assert unavailable.value.retry_after == 7.0
        assert "down for maintenance" in unavailable.value.message


def test_every_error_is_a_client_error() -> None:
    for cls in (APIError, ConnectionFailed, StreamFailed, RateLimited, ServiceUnavailable):
        assert issubclass(cls, ClientError)


async def test_connection_failed_and_a_stream_that_gives_up() -> None:
    """Nothing listens: a plain call fails at once; a stream retries
    ``max_attempts`` times, then raises StreamFailed, within a bounded time."""
    url = f"http://127.0.0.1:{free_port()}"
    policy = Reconnect(initial_delay=0.05, max_delay=0.1, max_attempts=4)
    async with AsyncClient(url, reconnect=policy) as client:
        with pytest.raises(ConnectionFailed) as refused:
            await client.agents()
        assert isinstance(refused.value.__cause__, httpx2.ConnectError)
        began = time.monotonic()
        with pytest.raises(StreamFailed) as caught:
            async with client.stream("hi") as events:
                async for _ in events:
                    pass
        elapsed = time.monotonic() - began
    failed = caught.value
    assert failed.attempts == 4 and failed.last_seq is None
    assert isinstance(failed.last_error, httpx2.ConnectError)
    assert failed.conversation_id == events.conversation_id
    assert 4 * 0.05 * 0.5 <= elapsed < 3, elapsed
