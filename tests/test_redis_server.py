"""The redis_server fixture runs a real redis-server that redis-py's asyncio client talks to."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio


async def test_set_then_get(redis_url: str) -> None:
    async with aioredis.Redis.from_url(redis_url, decode_responses=True) as client:
        assert await client.ping()
        await client.set("greeting", "hello")
        assert await client.get("greeting") == "hello"


async def test_data_survives_restart_through_the_aof(redis_server: RedisServer) -> None:
    async with aioredis.Redis.from_url(redis_server.url, decode_responses=True) as client:
        await client.set("kept", "across restarts")
        await client.rpush("events", "a", "b", "c")
    port = redis_server.port
    redis_server.restart()  # SIGTERM: redis writes and fsyncs the AOF before it exits
    assert redis_server.port == port
    async with aioredis.Redis.from_url(redis_server.url, decode_responses=True) as client:
        assert await client.get("kept") == "across restarts"
        assert await client.lrange("events", 0, -1) == ["a", "b", "c"]


async def test_config_follows_the_constructor(tmp_path: Path) -> None:
    with RedisServer(tmp_path, appendonly=False, maxmemory_policy="allkeys-lru") as server:
        async with aioredis.Redis.from_url(server.url, decode_responses=True) as client:
            assert await client.config_get("maxmemory-policy") == {
                "maxmemory-policy": "allkeys-lru"
            }
            assert await client.config_get("appendonly") == {"appendonly": "no"}


async def test_the_fixture_defaults(redis_url: str) -> None:
    async with aioredis.Redis.from_url(redis_url, decode_responses=True) as client:
        assert await client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert await client.config_get("appendonly") == {"appendonly": "yes"}
        assert await client.config_get("save") == {"save": ""}


def test_a_server_that_cannot_start_fails_with_its_log(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, maxmemory_policy="no-such-policy")
    with pytest.raises(RuntimeError, match="redis-server on port") as failure:
        server.start()
    assert "no-such-policy" in str(failure.value)  # the log tail says why
    assert not server.running


def test_a_missing_redis_server_skips_locally_and_fails_in_ci(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no redis-server here
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="redis-server not installed"):
        RedisServer(tmp_path)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(RuntimeError, match="redis-server is missing"):
        RedisServer(tmp_path)
