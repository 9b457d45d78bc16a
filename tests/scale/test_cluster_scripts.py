"""Every mutation script runs on a real Redis Cluster (SPEC §4, issue 13).

Three ``redis-server`` nodes joined into one cluster; each script of the
``redis://`` store is called through redis-py's cluster client with the
keys the store gives it, so a key outside the conversation's slot would be
refused (``CROSSSLOT``) or routed to the wrong node (``MOVED`` for a key in
the script). What does not run on a cluster is the process-level reader's
``XREAD`` over many conversations (docs/scaling.md): the store itself runs
on one primary, and refuses a cluster node at start-up.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
from redis.asyncio import RedisCluster

from steerline.core.errors import InvalidValueError
from steerline.log.redis import RedisEventLog, scripts
from steerline.log.redis.keys import Keys
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio

SLOTS = 16384


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[RedisServer]]:
    nodes = [RedisServer(tmp_path / f"node-{i}", cluster=True) for i in range(3)]
    try:
        for node in nodes:
            node.start()
        clients = [redis.Redis(port=node.port) for node in nodes]
        share = SLOTS // len(nodes)
        for i, client in enumerate(clients):
            last = SLOTS - 1 if i == len(nodes) - 1 else (i + 1) * share - 1
            client.execute_command("CLUSTER", "ADDSLOTSRANGE", i * share, last)
        for node in nodes[1:]:
            clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", node.port, node.bus_port)
        deadline = time.monotonic() + 20
        for client in clients:
            while client.cluster("info")["cluster_state"] != "ok":
                assert time.monotonic() < deadline, "the cluster did not form"
                time.sleep(0.02)  # polling a forming cluster, not synchronising the test
            client.close()
        yield nodes
    finally:
        for node in nodes:
            node.kill()


@pytest.fixture
async def client(cluster: list[RedisServer]) -> AsyncIterator[RedisCluster]:
    connection = RedisCluster(host="127.0.0.1", port=cluster[0].port)
    await connection.initialize()
    yield connection
    await connection.aclose()


async def test_every_script_runs_on_a_cluster(client: RedisCluster) -> None:
    keys = Keys().conversation("conv-cluster")
    queue, seen = keys.items("queue"), keys.items("seen")
    every = [*keys.fixed, *queue, *seen]
    assert len({client.keyslot(k) for k in every}) == 1, "one slot per conversation"

    def run(name: str, keys: list[str], args: list[object]) -> object:
        return client.register_script(getattr(scripts, name))(keys=keys, args=args)

    record = b'{"id":"conv-cluster","tenant":"default","status":"running","active_run_id":"run-1"}'
    created = await run(
        "CREATE",
        [keys.record, keys.log, keys.lease, keys.times],
        ["p1", 10_000, record, 1000, "conversation_started", b'{"event":"c","seq":1}', ""],
    )
    assert created == 1
    assert (await run("ACQUIRE", [keys.record, keys.lease], ["p1", 10_000]))[0] == b"mine"
    assert await run("RENEW", [keys.lease], ["p1|1", 10_000]) == 1
    lease = "p1|1"
    commit = await run(
        "COMMIT",
        [*keys.fixed, *queue],
        [
            lease,
            0,
            1000,
            0,
            f"{lease}#1",
            "A",
            "2",
            "e",
            b'{"event":"e","seq":2}',
            "run-1",
            "I",
            8,
            "queue",
            "m0",
            b'{"message":{"id":"m0","content":[],"lane":"steering",'
            b'"priority":0,"created_at":1.0,"arrival":1,"interrupt":false},"since":1}',
        ],
    )
    assert commit[:2] == [b"ok", 2]
    # another process: intake without the lease, a claim, a control request
    intake = await run(
        "INTAKE",
        [keys.record, keys.log, keys.lease, keys.collections, keys.times, *queue, *seen],
        [
            "p2",
            10_000,
            "m1",
            "steering",
            0,
            b'{"message":{"id":"m1","content":[],"lane":"steering","priority":0,'
            b'"created_at":1.0,"arrival":',
            b',"interrupt":false},"since":',
            b"}",
            b'{"event":"message_queued","data":{"payload":{"position":',
            b"}}}",
            100,
            0,
            1000,
            0,
            "queue",
            "seen",
        ],
    )
    assert intake[:3] == [b"queued", 3, 1]
    assert await run("CLAIM", [keys.record, keys.collections, *seen], ["seen", "m1"]) == [
        0,
        b'{"after":2}',
    ]
    sent = await run("SEND_CONTROL", [keys.lease, keys.control], [10, "q1", "proc:p2", b"{}"])
    assert sent[0] == b"p1|1"
    assert await run("WITHDRAW_CONTROL", [keys.lease, keys.control], [b"p1|1", sent[1]]) == b"wait"
    assert await run("RELEASE", [keys.lease, keys.control], [lease]) == b"pending"
    assert (await run("TRIM", [keys.record, keys.log, keys.times], [2000, 2000]))[:2] == [b"ok", 3]
    stored = await client.xrange(keys.log)
    assert stored == [], "trimmed by age"
    assert await run("DELETE", every, []) == 1


def test_the_store_refuses_a_cluster_node_with_a_clear_error(cluster: list[RedisServer]) -> None:
    """Not a failure at the first command that spans slots: a clear refusal
    at start-up (``steerline serve`` exits 2 with it)."""
    with pytest.raises(InvalidValueError, match="Redis Cluster node"):
        RedisEventLog(cluster[0].url).acquire()
