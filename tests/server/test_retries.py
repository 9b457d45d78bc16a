"""Client libraries retry the POST (fetch-event-source re-POSTs the same body
with ``Last-Event-ID`` after a drop): one run, and the rest of its stream."""

from __future__ import annotations

import pytest

from tests.server.clients import (
    assert_contiguous,
    client,
    first,
    names,
    open_stream,
    prompt,
    read_log,
    text_of,
)
from tests.server.harness import RunningServer

pytestmark = pytest.mark.anyio
WORDS = " ".join(f"w{i}" for i in range(30))


async def test_a_repost_with_last_event_id_continues_the_same_run(server: RunningServer) -> None:
    body = {"query": f"/delay 20\n{WORDS}", "conversation_id": "", "message_id": "m-1"}
    async with client() as http:
        async with open_stream(http, "POST", f"{server.api}/agents/stream", json=body) as stream:
            await stream.take(6)  # then the connection drops
        seen = stream.events
        cid = seen[0]["data"]["conversation_id"]
        assert seen[0]["event"] == "conversation_started"
        retry = {**body, "conversation_id": cid}  # the library repeats what it learned
        async with open_stream(
            http,
            "POST",
            f"{server.api}/agents/stream",
            json=retry,
            headers={"Last-Event-ID": str(stream.last_seq)},
        ) as resumed:
            rest = await resumed.rest()
        log = await read_log(http, server, cid)
    whole = seen + rest
    assert_contiguous(whole, 1)
    assert names(whole)[-1] == "done"
    assert text_of(whole) == f"Echo: {WORDS}"
    assert names(log).count("task_started") == 1, "one run, not two"
    assert [e for e in log if e["event"] == "thread_started"] == [first(whole, "thread_started")]


async def test_a_repost_without_last_event_id_gets_the_same_stream_again(
    server: RunningServer,
) -> None:
    async with client() as http:
        async with open_stream(
            http, "POST", f"{server.api}/agents/stream", json={"query": "hi"}
        ) as stream:
            await stream.rest()
        cid = stream.events[0]["data"]["conversation_id"]
        body = {"query": "again", "conversation_id": cid, "message_id": "m-2"}
        async with open_stream(http, "POST", f"{server.api}/agents/stream", json=body) as one:
            original = await one.rest()
        async with open_stream(http, "POST", f"{server.api}/agents/stream", json=body) as two:
            repeated = await two.rest()
        log = await read_log(http, server, cid)
    assert original == repeated and names(original)[0] == "task_started"
    assert names(log).count("task_started") == 2


async def test_last_event_id_without_a_message_id_is_a_resume(server: RunningServer) -> None:
    async with client() as http:
        events = await prompt(http, server, "first")
        cid = events[0]["data"]["conversation_id"]
        async with open_stream(
            http,
            "POST",
            f"{server.api}/agents/stream",
            json={"query": "first", "conversation_id": cid},
            headers={"Last-Event-ID": "2"},
        ) as resumed:
            rest = await resumed.rest()
        log = await read_log(http, server, cid)
    assert rest == events[2:]
    assert names(log).count("task_started") == 1, "a resume is never a new message"


async def test_an_empty_conversation_id_starts_a_new_conversation(server: RunningServer) -> None:
    async with (
        client() as http,
        open_stream(
            http,
            "POST",
            f"{server.api}/agents/stream",
            json={"query": "new chat", "conversation_id": ""},
        ) as stream,
    ):
        events = await stream.rest()
    assert events[0]["event"] == "conversation_started"
    assert events[0]["data"]["conversation_id"].startswith("conv-")
