"""``steerline serve`` processes on a real three-node Redis Cluster: the
must-shows that involve several processes, as on one Redis (the cluster's
reader is notified by writers instead of one ``XREAD`` over many logs)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx2
import pytest

from tests.redis_server import RedisServer
from tests.scale.test_processes import SLOW, TTL, assert_once, read_all, status
from tests.server.clients import client, names, open_stream
from tests.server.harness import Served

pytestmark = pytest.mark.anyio


@pytest.fixture
async def cluster_processes(
    redis_cluster: list[RedisServer], tmp_path: Path
) -> AsyncIterator[list[Served]]:
    """Three ``steerline serve`` on the cluster (keys of this test only), ready."""
    store = f"{redis_cluster[0].url}?lease_ttl={TTL}&prefix=p{uuid.uuid4().hex[:10]}"
    started = [Served(None, tmp_path, store=store) for _ in range(3)]
    try:
        with anyio.fail_after(60):
            for process in started:
                await process.wait_ready()
        yield started
    finally:
        for process in started:
            process.kill()


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with client() as http:
        yield http


async def test_on_a_cluster_run_on_a_stream_on_b_steer_through_c_resume_on_c(
    cluster_processes: list[Served], http: httpx2.AsyncClient
) -> None:
    a, b, c = cluster_processes
    async with open_stream(http, "POST", f"{a.api}/agents/stream", json={"query": SLOW}) as run:
        started = await run.until("message_chunk")
        cid = started[0]["data"]["conversation_id"]
        async with open_stream(http, "GET", f"{b.api}/conversations/{cid}/stream") as view:
            joined = await view.until("message_chunk")
            response = await http.post(
                f"{c.api}/conversations/{cid}/messages",
                json={"content": "turn left", "mode": "steer", "id": "steer-1"},
            )
            assert response.status_code == 202, response.text
            assert response.json()["queued"] is True
            middle = await view.take(20)
        last = middle[-1]["seq"]
        async with open_stream(
            http,
            "GET",
            f"{c.api}/conversations/{cid}/stream",
            headers={"Last-Event-ID": str(last)},
        ) as resumed:
            rest = await resumed.rest()
        seen_by_a = started + await run.rest()
    assert rest[0]["seq"] == last + 1 and rest[-1]["event"] == "done"
    seen_by_b = joined + middle + rest
    assert_once(seen_by_b)
    by_seq = {e["seq"]: e for e in seen_by_a}
    assert all(by_seq[e["seq"]] == e for e in seen_by_b), "B and C saw what A wrote"
    log = await read_all(http, b, cid)
    assert_once(log)
    delivered = [
        e["data"]["metadata"].get("message_id") for e in log if e["event"] == "thread_started"
    ]
    assert delivered.count("steer-1") == 1


async def test_on_a_cluster_the_owners_death_ends_its_run_once(
    cluster_processes: list[Served], http: httpx2.AsyncClient
) -> None:
    a, b, c = cluster_processes
    async with open_stream(http, "POST", f"{a.api}/agents/stream", json={"query": SLOW}) as run:
        started = await run.until("message_chunk")
        cid = started[0]["data"]["conversation_id"]
        a.kill()
    queued = await http.post(
        f"{b.api}/conversations/{cid}/messages",
        json={"content": "and then?", "mode": "follow_up", "id": "later"},
    )
    assert queued.status_code == 202, queued.text
    with anyio.fail_after(TTL * 6):
        async with open_stream(http, "GET", f"{c.api}/conversations/{cid}/stream") as view:
            ending = await view.rest(within=TTL * 6)
    assert names(ending)[-3:] == ["system_failed", "task_failed", "done"]
    log = await read_all(http, b, cid)
    assert_once(log)
    assert names(log).count("done") == 1
    state = await status(http, c, cid)
    assert [m["id"] for m in state["queue"]["follow_up"]] == ["later"]  # type: ignore[index]
