"""Every method of the SDK against a real server, and the public surface."""

from __future__ import annotations

import inspect

import pytest

import steerline.client
from steerline.client import AsyncClient, AsyncEventStream, Client, EventStream, NotFound
from tests.server.harness import RunningServer

SLEEP = '/call sleep {"seconds": 2}'

EXPECTED = {
    "APIError", "AsyncClient", "AsyncEventStream", "BadRequest", "Client", "ClientError",
    "Conflict", "ConnectionFailed", "EventStream", "InvalidResponse", "NotFound",
    "PayloadTooLarge", "RateLimited", "Reconnect", "ServerError", "ServiceUnavailable",
    "StreamFailed", "Unauthorized", "WireEvent",
}  # fmt: skip


def test_export_list_is_exactly_the_documented_one() -> None:
    assert set(steerline.client.__all__) == EXPECTED
    assert steerline.client.__all__ == sorted(steerline.client.__all__)


def public(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in vars(cls).items()
        if callable(member) and (not name.startswith("_") or name == "__init__")
    }


def shape(signature: inspect.Signature) -> list[tuple[object, ...]]:
    """Each parameter but ``self``: name, kind, default, annotation (Async dropped)."""
    return [
        (p.name, p.kind, p.default, str(p.annotation).replace("Async", ""))
        for p in list(signature.parameters.values())[1:]
    ]


def test_the_sync_client_has_the_async_clients_methods() -> None:
    """Same names, same parameters (``aclose`` is ``close``), and return types."""
    sync, asynchronous = public(Client), public(AsyncClient)
    asynchronous["close"] = asynchronous.pop("aclose")
    assert sync.keys() == asynchronous.keys()
    for name, signature in asynchronous.items():
        assert shape(sync[name]) == shape(signature), name
    for name in ("conversation_id", "last_seq", "reconnects"):
        assert isinstance(getattr(EventStream, name), property)
        assert isinstance(getattr(AsyncEventStream, name), property)


@pytest.mark.anyio
async def test_every_method_of_the_async_client(server: RunningServer) -> None:
    async with AsyncClient(server.url + "/") as client:
        agents = await client.agents()
        assert agents["default"] == "demo" and "demo" in [a["name"] for a in agents["agents"]]
        async with client.stream("hi", agent_name="demo") as events:
            assert [e.event async for e in events][-1] == "done"
        cid = events.conversation_id
        assert cid is not None and cid.startswith("conv-")

        modes = await client.set_modes(cid, steering_mode="all", steering_policy="after_turn")
        assert (modes["steering_mode"], modes["steering_policy"]) == ("all", "after_turn")

        started = await client.follow_up(cid, SLEEP, id="run-1")
        assert started["queued"] is False and started["run_id"]
        await client.follow_up(cid, "f1", id="f1")
        await client.follow_up(cid, "f2", id="f2", priority=5)
        queue = await client.queue(cid)
        assert [m["id"] for m in queue["follow_up"]] == ["f2", "f1"]
        edited = await client.edit_queued(cid, "f1", content="f1 edited")
        assert edited["message"]["content"][0]["text"] == "f1 edited"
        moved = await client.move_queued(cid, "f1", before="f2")
        assert [m["id"] for m in moved["queue"]["follow_up"]] == ["f1", "f2"]
        removed = await client.remove_queued(cid, "f2")
        assert removed["message"]["id"] == "f2"
        steered = await client.steer(cid, "s1", id="s1", expected_run_id=started["run_id"])
        assert (steered["lane"], steered["run_id"]) == ("steering", started["run_id"])
        cleared = await client.clear_queue(cid, lane="steering")
        assert [m["id"] for m in cleared["removed"]] == ["s1"]
        status = await client.conversation(cid)
        assert status["status"] == "running" and status["active_run_id"] == started["run_id"]

        aborted = await client.abort(cid)
        assert [m["id"] for m in aborted["queue"]["follow_up"]] == ["f1"], "abort keeps the queue"
        async with client.events(cid, after=events.last_seq) as run:
            assert [e async for e in run][-1].data["payload"]["stop_reason"] == "aborted"
        sent = await client.send_now(cid)
        assert sent["run_id"] and sent["run_id"] != started["run_id"]
        async with client.events(cid, after=run.last_seq) as run:
            tail = [e async for e in run]
        assert [e.data["payload"]["content"] for e in tail if e.event == "thread_started"] == [
            "f1 edited"
        ]

        history = await client.history(cid)
        assert history["last_seq"] == tail[-1].seq and history["items"]
        listed = await client.conversations(limit=10)
        assert cid in [c["conversation_id"] for c in listed["conversations"]]
        assert (listed["limit"], listed["offset"]) == (10, 0)
        assert await client.delete_conversation(cid) is None
        with pytest.raises(NotFound):
            await client.conversation(cid)


def test_the_sync_client(server: RunningServer) -> None:
    with Client(server.url) as client:
        with client.stream("hello", conversation_id="my-chat", message_id="m-1") as events:
            assert events.conversation_id == "my-chat"
            received = list(events)
        assert received[0].event == "conversation_started" and received[-1].event == "done"
        assert events.last_seq == received[-1].seq
        # the same message id again: nothing queued, the same answer again
        with client.stream("hello", conversation_id="my-chat", message_id="m-1") as again:
            assert list(again) == received
        ack = client.steer("my-chat", "wake up", interrupt=True)
        assert ack["queued"] is False
        with client.events("my-chat", after=received[-1].seq) as run:
            assert [e.event for e in run][-1] == "done"
        assert client.queue("my-chat") == {
            "conversation_id": "my-chat",
            "steering": [],
            "follow_up": [],
        }
        assert client.conversation("my-chat")["status"] == "idle"
        assert client.history("my-chat")["items"]
        client.delete_conversation("my-chat")
        with pytest.raises(NotFound):
            client.queue("my-chat")
