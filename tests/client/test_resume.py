"""The issue's bar: through a proxy that cuts the connection at random points
several times per run, the consumer gets every event exactly once, in order,
ending with ``done`` — for ``Client`` and ``AsyncClient``, ``stream()`` and
``events()``, against a real ``steerline serve``.

Each test prints its seed (``-s`` shows it; a failure message carries it);
``CLIENT_FAULT_SEED=<seed>`` repeats the same faults (the server's timing
still varies). The reference is the server's log read afterwards by a direct,
un-proxied ``events()``.
"""

from __future__ import annotations

import os
import random
import time

import anyio
import pytest

from steerline.client import AsyncClient, Client, Reconnect, StreamFailed, WireEvent
from tests.client.proxy import FaultProxy, fault_proxy
from tests.server.harness import Served

WORDS = " ".join(f"w{i}" for i in range(150))
LONG = f"/delay 8\n{WORDS}"
"""About 160 events over 1.5 s: the demo agent echoes one word per token."""
CUTS = 6
POLICY = Reconnect(initial_delay=0.02, max_delay=0.2, max_attempts=20, stall_timeout=0.8)
"""Fast reconnection; the stall timeout is 4 pings of the test server (0.2 s)."""
WITHIN = 30.0


def seed() -> int:
    value = int(os.environ.get("CLIENT_FAULT_SEED") or random.randrange(2**32))
    print(f"fault proxy seed {value} (CLIENT_FAULT_SEED={value} repeats it)")
    return value


def check_exactly_once(
    received: list[WireEvent], log: list[WireEvent], first_seq: int, proxy: FaultProxy
) -> None:
    """Strictly increasing, no gaps, each event as the log has it, ending with done."""
    what = proxy.describe()
    print(f"{what}; {len(received)} events received")
    seqs = [e.seq for e in received]
    assert seqs == list(range(first_seq, first_seq + len(seqs))), what
    assert received == [e for e in log if first_seq <= e.seq <= seqs[-1]], what
    assert received[-1].event == "done", what
    assert received[-1].seq == log[-1].seq, f"the run's done is the log's last event; {what}"
    assert len(proxy.happened) >= 3, f"too few faults to mean anything; {what}"


# -- Client ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["stream", "events"])
def test_client_gets_every_event_once_through_cuts(shared_served: Served, kind: str) -> None:
    with (
        fault_proxy(shared_served.port, seed(), CUTS) as proxy,
        Client(shared_served.url) as direct,
        Client(proxy.url, reconnect=POLICY) as client,
    ):
        began = time.monotonic()
        if kind == "stream":
            first_seq = 1
            with client.stream(LONG) as events:
                received = list(events)
            cid = events.conversation_id
        else:
            with direct.stream("hi") as setup:
                list(setup)
            cid, after = setup.conversation_id, setup.last_seq
            assert cid is not None and after is not None
            direct.follow_up(cid, LONG)  # starts a run on the idle conversation
            first_seq = after + 1
            with client.events(cid, after=after) as events:
                received = list(events)
        assert time.monotonic() - began < WITHIN
        assert events.reconnects >= len(proxy.happened)
        assert cid is not None
        with direct.events(cid) as whole:
            log = list(whole)
    check_exactly_once(received, log, first_seq, proxy)


# -- AsyncClient -------------------------------------------------------------------------
@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["stream", "events", "follow"])
async def test_async_client_gets_every_event_once_through_cuts(
    shared_served: Served, kind: str
) -> None:
    with fault_proxy(shared_served.port, seed(), CUTS) as proxy:
        async with (
            AsyncClient(shared_served.url) as direct,
            AsyncClient(proxy.url, reconnect=POLICY) as client,
        ):
            received: list[WireEvent] = []
            with anyio.fail_after(WITHIN):
                if kind == "stream":
                    first_seq = 1
                    async with client.stream(LONG) as events:
                        received = [event async for event in events]
                    cid = events.conversation_id
                else:
                    async with direct.stream("hi") as setup:
                        [e async for e in setup]
                    cid, after = setup.conversation_id, setup.last_seq
                    assert cid is not None and after is not None
                    await direct.follow_up(cid, LONG)
                    first_seq = after + 1
                    async with client.events(cid, after=after, follow=kind == "follow") as events:
                        async for event in events:
                            received.append(event)
                            if kind == "follow" and event.event == "done":
                                break  # a follow stream never ends by itself
            assert cid is not None
            async with direct.events(cid) as whole:
                log = [e async for e in whole]
    check_exactly_once(received, log, first_seq, proxy)


# -- give-up -----------------------------------------------------------------------------
@pytest.mark.anyio
async def test_a_server_gone_for_good_ends_in_stream_failed(shared_served: Served) -> None:
    """Mid-stream the proxy goes away (connections reset, then refused): after
    ``max_attempts`` reconnections the stream raises StreamFailed with the last
    seq delivered, from which a new stream resumes exactly."""
    policy = Reconnect(initial_delay=0.02, max_delay=0.1, max_attempts=5, stall_timeout=2)
    received: list[WireEvent] = []
    with fault_proxy(shared_served.port, seed(), cuts=0) as proxy:
        async with AsyncClient(proxy.url, reconnect=policy) as client:
            with anyio.fail_after(WITHIN), pytest.raises(StreamFailed) as caught:
                async with client.stream(LONG) as events:
                    async for event in events:
                        received.append(event)
                        if len(received) == 20:
                            proxy.sever()
                            began = time.monotonic()
            gave_up_in = time.monotonic() - began
    failed = caught.value
    assert failed.last_seq == received[-1].seq and failed.attempts == 5
    assert failed.conversation_id == events.conversation_id
    assert gave_up_in < 5, gave_up_in
    async with AsyncClient(shared_served.url) as direct:
        assert failed.conversation_id is not None
        async with direct.events(failed.conversation_id, after=failed.last_seq) as rest:
            tail = [e async for e in rest]
    seqs = [e.seq for e in received + tail]
    assert seqs == list(range(1, len(seqs) + 1)) and tail[-1].event == "done"
