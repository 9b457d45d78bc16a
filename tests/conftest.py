"""Shared test configuration: async tests run on asyncio through anyio; a real redis-server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.redis_server import RedisServer


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server (AOF on, noeviction) in ``tmp_path / "redis"``, stopped after."""
    with RedisServer(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


CLUSTER_SLOTS = 16384


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RedisServer]]:
    """A real three-node Redis Cluster (three primaries, no replicas), shared by
    the tests of a session: each test uses key prefixes of its own."""
    directory = tmp_path_factory.mktemp("redis-cluster")
    nodes = [RedisServer(directory / f"node-{i}", cluster=True) for i in range(3)]
    try:
        for node in nodes:
            node.start()
        clients = [redis.Redis(port=node.port) for node in nodes]
        share = CLUSTER_SLOTS // len(nodes)
        for i, client in enumerate(clients):
            last = CLUSTER_SLOTS - 1 if i == len(nodes) - 1 else (i + 1) * share - 1
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", i * share, last)
        for node in nodes[1:]:
            clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", node.port, node.bus_port)
        deadline = time.monotonic() + 30
        for client in clients:
            while client.cluster("info")["cluster_state"] != "ok":
                assert time.monotonic() < deadline, "the cluster did not form"
                time.sleep(0.02)  # polling a forming cluster, not synchronising a test
            client.close()
        yield nodes
    finally:
        for node in nodes:
            node.kill()


@pytest.fixture
def redis_cluster_url(redis_cluster: list[RedisServer]) -> str:
    return redis_cluster[0].url
