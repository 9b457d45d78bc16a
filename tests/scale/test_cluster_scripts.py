"""Every mutation script runs on a real Redis Cluster (SPEC §4, issue 13).

Each script of the ``redis://`` store is called through redis-py's cluster
client with the keys the store gives it, on the session's three-node
cluster: a key outside the conversation's slot would be refused
(``CROSSSLOT``, or "non local key" for a key the script names itself). The
store as a whole runs on the cluster in ``test_cluster_processes.py`` and
the contract tests (``redis-cluster``).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import RedisCluster

from steerline.log.redis import scripts
from steerline.log.redis.keys import Keys
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio

SLOTS = 16384


@pytest.fixture
async def client(redis_cluster: list[RedisServer]) -> AsyncIterator[RedisCluster]:
    connection = RedisCluster(host="127.0.0.1", port=redis_cluster[0].port)
    await connection.initialize()
    yield connection
    await connection.aclose()


async def test_every_script_runs_on_a_cluster(client: RedisCluster) -> None:
    keys = Keys(f"scripts{uuid.uuid4().hex[:8]}").conversation("conv-cluster")
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
