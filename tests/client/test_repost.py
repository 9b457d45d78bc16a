"""Why ``stream()`` resumes by re-POSTing its body (docs/client.md), checked
against the real server.

The SDK names the conversation and the message, so the re-POST is
idempotent: the server queues nothing twice and answers the rest of the same
slice, which ends at the ``done`` of the run that handles the message — also
when another run is active by the time the client reconnects, where a
``GET …/stream`` with ``Last-Event-ID`` would run on to that other run's end.

A transport wrapper cuts the first answer at a chosen point and holds the
reconnection until the test opens a gate, so the moment of the reconnect is
chosen, not timed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import httpx2
import pytest

from steerline.client import AsyncClient, Reconnect, WireEvent
from tests.server.harness import RunningServer

pytestmark = pytest.mark.anyio
SLEEP = '/call sleep {"seconds": 1}'
POLICY = Reconnect(initial_delay=0.01, max_delay=0.05, max_attempts=5)
WITHIN = 20.0


class _CutStream(httpx2.AsyncByteStream):
    """The answer's body until a chunk with an event in it, then a reset."""

    def __init__(self, inner: httpx2.AsyncByteStream) -> None:
        self.inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.inner:
            yield chunk
            if b"data:" in chunk:
                break
        raise httpx2.ReadError("connection reset by the test")

    async def aclose(self) -> None:
        await self.inner.aclose()


class CutOnce(httpx2.AsyncBaseTransport):
    """Cuts the first stream answer (``where``: after its first event, or before
    the answer arrives at all) and holds every later request until ``gate`` is set."""

    def __init__(self, where: str) -> None:
        self.inner = httpx2.AsyncHTTPTransport()
        self.where = where
        self.requests: list[httpx2.Request] = []
        self.gate = anyio.Event()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        if len(self.requests) > 1:
            await self.gate.wait()
            return await self.inner.handle_async_request(request)
        response = await self.inner.handle_async_request(request)
        if self.where == "before_answer":
            # the server got the request and accepted the message; its answer is lost
            await response.aclose()
            raise httpx2.ReadTimeout("the answer never came", request=request)
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        return httpx2.Response(
            response.status_code,
            headers=response.headers,
            stream=_CutStream(response.stream),
            extensions=response.extensions,
            request=request,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


async def until(events: AsyncIterator[WireEvent], test: str) -> list[WireEvent]:
    got = []
    async for event in events:
        got.append(event)
        if event.event == test:
            return got
    raise AssertionError(f"no {test}")


@pytest.mark.parametrize("where", ["before_answer", "after_first_event"])
async def test_a_new_conversation_reposted_is_one_conversation_one_run(
    server: RunningServer, where: str
) -> None:
    transport = CutOnce(where)
    transport.gate.set()
    async with AsyncClient(server.url, transport=transport, reconnect=POLICY) as client:
        with anyio.fail_after(WITHIN):
            async with client.stream("hello") as events:
                received = [e async for e in events]
        cid = events.conversation_id
        assert cid is not None
        async with client.events(cid) as whole:
            log = [e async for e in whole]
        listed = await client.conversations()
    first, second = transport.requests[:2]  # then the events() and conversations() calls
    assert second.method == "POST" and transport.requests[2].method == "GET"
    assert first.content == second.content, "the identical body, ids included"
    expected_header = None if where == "before_answer" else str(received[0].seq)
    assert second.headers.get("last-event-id") == expected_header
    assert received == log, "the whole conversation, once"
    assert [e.event for e in log].count("task_started") == 1
    assert [e.event for e in log].count("thread_started") == 1
    assert [c["conversation_id"] for c in listed["conversations"]] == [cid]


async def test_a_resumed_message_stream_ends_at_the_done_of_its_own_run(
    server: RunningServer,
) -> None:
    async with AsyncClient(server.url) as direct:
        # run A is busy in a sleep
        async with direct.stream(SLEEP) as setup:
            await until(setup, "tool_call_started")
        cid = setup.conversation_id
        assert cid is not None
        run_a = (await direct.conversation(cid))["active_run_id"]
        transport = CutOnce("after_first_event")
        received: list[WireEvent] = []
        async with (
            AsyncClient(server.url, transport=transport, reconnect=POLICY) as client,
            anyio.create_task_group() as group,
        ):

            async def consume() -> None:
                # queued behind run A's sleep as a follow-up: run A handles it
                async with client.stream("queued one", conversation_id=cid) as events:
                    async for event in events:
                        received.append(event)

            with anyio.fail_after(WITHIN):
                group.start_soon(consume)
                async with direct.events(cid, after=setup.last_seq, follow=True) as viewer:
                    await until(viewer, "done")  # run A ends while the stream is cut
                    ack = await direct.follow_up(cid, SLEEP)  # run B starts
                    run_b = ack["run_id"]
                    assert run_b and run_b != run_a
                    await until(viewer, "tool_call_started")
                    seen_before_cut = received[-1].seq
                    # what a GET …/stream resume would carry now: on to run B's end
                    async with direct.events(cid, after=seen_before_cut) as get_resume:
                        via_get = [e async for e in get_resume]
                    transport.gate.set()  # the re-POST goes out now, B still running
    assert len(transport.requests) == 2
    assert transport.requests[1].headers["last-event-id"] == str(seen_before_cut)
    assert received[0].event == "message_queued"
    assert received[-1].event == "done" and received[-1].data["task_id"] == run_a
    assert all(e.data.get("task_id") != run_b for e in received)
    assert any(
        e.event == "thread_started" and e.data["payload"]["content"] == "queued one"
        for e in received
    )
    # the GET resume would have ended at run B's done instead
    assert via_get[-1].event == "done" and via_get[-1].data["task_id"] == run_b
