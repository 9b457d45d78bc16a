"""SIGKILL at random moments under concurrent load, then restart (SPEC §3.4, §4).

A real ``steerline serve`` on one sqlite file is killed several times while
clients stream prompts, queue follow-ups and steers, and join streams. After
each restart, for every conversation touched:

* the log (``GET …/stream?after=0``) has seqs 1..N, gapless, no duplicates;
* every event any client received before a kill is still there, byte for
  byte, at the same seq (a crash never takes back an event a client saw);
* every acknowledged message id (202 ``duplicate: false``, or a
  ``/agents/stream`` answer that started streaming) is delivered
  (``thread_started`` ``metadata.message_id``) or queued, exactly once over
  all conversations; no message id ever appears twice;
* every run ends exactly once; a run cut by the kill ends with
  ``system_failed`` (``run_lost``) + ``task_failed`` + ``done{error}``;
  runs never overlap; after recovery every conversation is idle;
* re-sending an acknowledged id answers ``duplicate: true``; re-sending one
  whose answer the kill swallowed is a duplicate exactly when it was kept;
* a conversation exists with its ``conversation_started`` first, or not at all.

At the end a new prompt on each conversation with a kept queue takes its kept
steers (follow-ups may stay queued; they still count as queued).

The kill point is the only thing chosen by time (a seeded random delay, then a
burst of requests and a second short random delay). Each verification reports
every violation it finds, with the seed; repeat one with
``KILL_DURABILITY_SEED=<seed>`` (the kill lands at the same moments, the
server's timing still varies).
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from tests.server.clients import WAIT, client
from tests.server.harness import Served

pytestmark = pytest.mark.anyio

KILLS = 3
"""Kill/restart rounds."""
WORKERS = 5
"""Concurrent client tasks sending work in each round."""
FOLLOWERS = 2
"""Extra ``?follow=true`` viewers per round (on conversations known at its start)."""
BURST = 6
"""Requests sent at once just before the kill (prompts, follow-ups, steers)."""
KILL_AFTER = (0.25, 1.5)
"""Seconds of load before the SIGKILL (uniform, seeded)."""

CONFIG = """\
[server.limits]
requests_per_minute = 1000000
max_streams_per_tenant = 1000
"""
"""Limits out of the way: this test is about durability, not rate limits."""

Envelope = dict[str, Any]
LANES = ("steering", "follow_up")


# -- the server process ----------------------------------------------------------------
# -- raw SSE ---------------------------------------------------------------------------
class Truncated(Exception):
    """The body ended in the middle of a frame (the server died while writing)."""


async def read_sse(response: httpx2.Response, on_event: Callable[[Envelope, str], None]) -> None:
    """Parse an SSE body; ``on_event(envelope, raw data)`` per complete frame.

    Only complete frames (ended by a blank line) count as received.
    """
    assert response.status_code == 200, (response.status_code, await response.aread())
    assert response.headers["content-type"].startswith("text/event-stream")
    buffer = ""
    last = 0
    async for text in response.aiter_text():
        buffer += text
        *blocks, buffer = buffer.split("\n\n")
        for block in blocks:
            sse_id: str | None = None
            data: list[str] = []
            for line in block.split("\n"):
                if not line or line.startswith(":"):
                    continue
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "id":
                    sse_id = value
                elif name == "data":
                    data.append(value)
                elif name != "retry":
                    raise AssertionError(f"unexpected SSE line {line!r}")
            if not data:
                continue
            raw = "\n".join(data)
            envelope = json.loads(raw)
            assert sse_id == str(envelope["seq"]), (sse_id, raw)
            assert envelope["seq"] > last, f"seq {envelope['seq']} after {last}"
            last = envelope["seq"]
            on_event(envelope, raw)
    # a retry: hint or comment may precede the next event's lines (SPEC §3.3); an
    # id: or data: line without its blank line is a frame cut short
    if any(line.startswith(("id:", "data:")) for line in buffer.split("\n")):
        raise Truncated(buffer)


# -- what the clients did and saw --------------------------------------------------------
@dataclass
class Sent:
    message_id: str
    cid: str
    content: str
    via: str
    """prompt | follow_up | steer"""
    round: int
    acked: bool = False
    how: str = ""
    """What acknowledged it: the first streamed event, 202, or a retry's answer."""
    dead: bool = False
    """Never accepted: its conversation does not exist after the crash."""


@dataclass(repr=False)
class World:
    seed: int
    rng: random.Random
    round: int = 0
    killed: bool = False
    known: set[str] = field(default_factory=set)
    """Conversations known to exist."""
    maybe: set[str] = field(default_factory=set)
    """Conversations a prompt may have created (its answer may have been lost)."""
    sent: dict[str, Sent] = field(default_factory=dict)
    seen: dict[str, dict[int, tuple[str, str]]] = field(default_factory=dict)
    """cid → seq → (raw envelope, who saw it)."""
    verified_len: dict[str, int] = field(default_factory=dict)
    stats: list[str] = field(default_factory=list)

    def __repr__(self) -> str:  # short in tracebacks
        return f"World(seed={self.seed}, round={self.round})"

    def tag(self, message: str) -> str:
        return f"[seed={self.seed} round={self.round}] {message}"

    def record(self, cid: str, envelope: Envelope, raw: str, who: str) -> None:
        assert envelope["data"]["conversation_id"] == cid, self.tag(f"{cid}: foreign {raw}")
        seq = envelope["seq"]
        by_seq = self.seen.setdefault(cid, {})
        before = by_seq.get(seq)
        if before is None:
            by_seq[seq] = (raw, who)
        else:
            assert before[0] == raw, self.tag(
                f"{cid} seq {seq}: {before[1]} saw {before[0]}, {who} saw {raw}"
            )

    def max_seen(self, cid: str) -> int:
        return max(self.seen.get(cid) or [0])

    def new_message(self, message_id: str, cid: str, content: str, via: str) -> Sent:
        assert message_id not in self.sent
        sent = Sent(message_id, cid, content, via, self.round)
        self.sent[message_id] = sent
        return sent


def content_for(rng: random.Random, tag: str, kind: str) -> str:
    if kind == "prompt":
        delay, words = rng.randint(10, 25), rng.randint(8, 40)
    else:
        delay, words = rng.randint(3, 12), rng.randint(2, 10)
    lines = [f"/delay {delay}"]
    if kind == "prompt" and rng.random() < 0.25:
        lines.append('/call sleep {"seconds": 0.15}')
    lines.append(" ".join([tag, *(f"w{i}" for i in range(words))]))
    return "\n".join(lines)


# -- the load ----------------------------------------------------------------------------
class Client:
    """One worker's view: its own seeded random, the shared world."""

    def __init__(
        self, world: World, http: httpx2.AsyncClient, server: Served, rng: random.Random, wid: int
    ) -> None:
        self.world = world
        self.http = http
        self.server = server
        self.rng = rng
        self.wid = wid
        self.count = 0

    def name(self, kind: str) -> str:
        self.count += 1
        return f"r{self.world.round}-w{self.wid}-{self.count}-{kind}"

    async def prompt(self, cid: str | None) -> None:
        """``POST /agents/stream`` (a new conversation when ``cid`` is None), read to its end."""
        world = self.world
        new = cid is None
        message_id = self.name("prompt")
        if cid is None:
            cid = f"kd-{message_id}"
            world.maybe.add(cid)
        sent = world.new_message(
            message_id, cid, content_for(self.rng, message_id, "prompt"), "prompt"
        )
        body = {"query": sent.content, "conversation_id": cid, "message_id": message_id}

        def on_event(envelope: Envelope, raw: str) -> None:
            if not sent.acked:
                sent.acked, sent.how = True, f"stream began with {envelope['event']}"
                if new:
                    world.known.add(cid)
            world.record(cid, envelope, raw, f"prompt {message_id}")

        async with self.http.stream("POST", f"{self.server.api}/agents/stream", json=body) as r:
            await read_sse(r, on_event)

    async def message(self, cid: str, mode: str, count: int = 0, join: bool = True) -> None:
        """``POST …/messages`` (1 to 3 at once), then join the stream until the run is done."""
        world = self.world
        for _ in range(count or self.rng.randint(1, 3)):
            message_id = self.name(mode)
            sent = world.new_message(message_id, cid, content_for(self.rng, message_id, mode), mode)
            response = await self.http.post(
                f"{self.server.api}/conversations/{cid}/messages",
                json={"content": sent.content, "mode": mode, "id": message_id},
            )
            assert response.status_code == 202, world.tag(f"{message_id}: {response.text}")
            answer = response.json()
            assert answer["duplicate"] is False, world.tag(f"fresh id {message_id}: {answer}")
            sent.acked, sent.how = True, "202"
        if join:
            await self.join(cid)

    async def join(self, cid: str, follow: bool = False) -> None:
        """``GET …/stream`` from a little before the last seq seen (or from 0)."""
        world = self.world
        last = world.max_seen(cid)
        after = 0 if self.rng.random() < 0.2 else max(0, last - self.rng.randint(0, 20))
        params: dict[str, Any] = {"after": after}
        if follow:
            params["follow"] = "true"
        who = f"w{self.wid} join {cid} after={after} follow={follow}"
        url = f"{self.server.api}/conversations/{cid}/stream"
        async with self.http.stream("GET", url, params=params) as r:
            await read_sse(r, lambda e, raw: world.record(cid, e, raw, who))

    async def resend(self) -> None:
        """An id acknowledged earlier, sent again: a duplicate, queues nothing."""
        world = self.world
        acked = [s for s in world.sent.values() if s.acked]
        if not acked:
            return
        sent = self.rng.choice(acked)
        response = await self.http.post(
            f"{self.server.api}/conversations/{sent.cid}/messages",
            json={"content": sent.content, "mode": "follow_up", "id": sent.message_id},
        )
        assert response.status_code == 202, world.tag(response.text)
        assert response.json()["duplicate"] is True, world.tag(
            f"acknowledged {sent.message_id} ({sent.how}) re-sent live: {response.json()}"
        )

    async def step(self) -> None:
        world = self.world
        known = sorted(world.known)
        roll = self.rng.random()
        if not known or roll < 0.2:
            await self.prompt(None)
        elif roll < 0.45:
            await self.prompt(self.rng.choice(known))
        elif roll < 0.65:
            await self.message(self.rng.choice(known), "follow_up")
        elif roll < 0.85:
            await self.message(self.rng.choice(known), "steer")
        elif roll < 0.95:
            await self.join(self.rng.choice(known))
        else:
            await self.resend()

    async def burst(self) -> None:
        """One request sent just before the kill: its answer may never arrive."""
        known = sorted(self.world.known)
        if not known or self.rng.random() < 0.4:
            await self.prompt(None)
        else:
            mode = self.rng.choice(["follow_up", "steer"])
            await self.message(self.rng.choice(known), mode, count=1, join=False)

    async def guarded(self, action: Callable[[], Awaitable[None]]) -> bool:
        """Run one action; False when the kill ended it (any other failure fails the test)."""
        try:
            with anyio.fail_after(WAIT):
                await action()
        except (httpx2.TransportError, httpx2.StreamError, Truncated):
            if not self.world.killed:
                raise
            return False
        return True

    async def work(self) -> None:
        while not self.world.killed and await self.guarded(self.step):
            pass


async def load_then_kill(world: World, server: Served) -> None:
    delay = world.rng.uniform(*KILL_AFTER)
    seeds = [world.rng.randrange(2**32) for _ in range(WORKERS + FOLLOWERS + 1)]
    burst_after = world.rng.uniform(0, 0.1)
    known = sorted(world.known)
    watched = world.rng.sample(known, min(FOLLOWERS, len(known)))
    world.killed = False
    async with client() as http:
        clients = [Client(world, http, server, random.Random(s), i) for i, s in enumerate(seeds)]
        async with anyio.create_task_group() as tasks:
            for worker in clients[:WORKERS]:
                tasks.start_soon(worker.work)
            for cid, watcher in zip(watched, clients[WORKERS:-1], strict=False):
                tasks.start_soon(watcher.guarded, partial(watcher.join, cid, follow=True))
            await anyio.sleep(delay)  # the kill point: the one thing chosen by time ...
            for _ in range(BURST):
                tasks.start_soon(clients[-1].guarded, clients[-1].burst)
            await anyio.sleep(burst_after)  # ... a moment after a burst of new requests
            world.killed = True
            server.kill()
    this_round = [s for s in world.sent.values() if s.round == world.round]
    world.stats.append(
        f"round {world.round}: killed after {delay:.2f}s + {burst_after:.3f}s, "
        f"{sum(s.acked for s in this_round)}/{len(this_round)} messages acknowledged"
    )


# -- the checks after a restart ---------------------------------------------------------
async def read_log(
    http: httpx2.AsyncClient, server: Served, cid: str
) -> list[tuple[Envelope, str]]:
    events: list[tuple[Envelope, str]] = []
    url = f"{server.api}/conversations/{cid}/stream"
    async with http.stream("GET", url, params={"after": 0}) as response:
        await read_sse(response, lambda e, raw: events.append((e, raw)))
    return events


def outline(events: list[tuple[Envelope, str]]) -> str:
    """A log in brief: seq, event name and run (and the message ids of queue events)."""
    parts = []
    for envelope, _ in events[-40:]:
        data, name = envelope["data"], envelope["event"]
        payload = data.get("payload") or {}
        if name == "thread_started":
            extra = data["metadata"]["message_id"]
        elif name == "message_queued":
            extra = payload["message_id"]
        elif name == "queue_updated":
            extra = "|".join(",".join(m["id"] for m in payload[lane]) for lane in LANES)
        else:
            extra = data.get("task_id") or ""
        parts.append(f"{envelope['seq']}:{name}({extra})")
    return ("... " if len(events) > 40 else "") + " ".join(parts)


class Checks:
    """Invariant violations of one verification, all reported together."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.failures: list[str] = []

    def __call__(self, ok: bool, invariant: str, evidence: str) -> bool:
        if not ok:
            self.failures.append(f"- {invariant}: {evidence}")
        return ok

    def raise_any(self) -> None:
        count = len(self.failures)
        shown = "\n".join(self.failures[:20]) + ("\n..." if count > 20 else "")
        assert not count, self.world.tag(f"{count} invariant violation(s):\n{shown}")


def check_log(world: World, check: Checks, cid: str, events: list[tuple[Envelope, str]]) -> int:
    """Seqs, seen events, runs. Returns how many runs recovery ended since the last check."""
    seqs = [e["seq"] for e, _ in events]
    check(seqs == list(range(1, len(seqs) + 1)), "seqs 1..N gapless", f"{cid}: {seqs}")
    raw_at = {e["seq"]: raw for e, raw in events}
    for seq, (raw, who) in sorted(world.seen.get(cid, {}).items()):
        check(
            raw_at.get(seq) == raw,
            "a crash never takes back an event a client saw",
            f"{cid} seq {seq} seen by {who}: {raw}; after the restart: {raw_at.get(seq)}",
        )
    sent = [
        f"{s.message_id} ({s.how or 'unanswered'})" for s in world.sent.values() if s.cid == cid
    ]
    if not check(
        bool(events),
        "a conversation exists with its conversation_started or not at all",
        f"{cid} exists with an empty log; sent to it: {sent}",
    ):
        return 0
    check(
        events[0][0]["event"] == "conversation_started",
        "conversation_started is a conversation's first event",
        f"{cid} starts with {events[0][1]}; sent to it: {sent}",
    )

    def at(i: int) -> str:
        return f"{cid} seq {i + 1}: {events[i][1]}"

    runs = "every run ends exactly once, runs never overlap"
    recovery = "a run cut by the kill ends with system_failed(run_lost) + task_failed + done"
    open_run: str | None = None
    started: set[str] = set()
    ended: dict[str, int] = {}
    lost: dict[str, int] = {}
    for i, (envelope, _) in enumerate(events):
        name, task = envelope["event"], envelope["data"].get("task_id")
        payload = envelope["data"].get("payload") or {}
        if name == "task_started":
            check(open_run is None, runs, f"{task} starts while {open_run} runs: {at(i)}")
            check(task not in started and task not in ended, runs, f"started again: {at(i)}")
            started.add(task)
            open_run = task
        elif name == "done":
            if not check(
                task not in ended, runs, f"ended twice: {at(ended.get(task, i))}; {at(i)}"
            ):
                continue
            ended[task] = i
            if open_run == task:
                open_run = None
            else:
                # a run recorded as active whose first events never committed
                check(
                    open_run is None and task not in started,
                    runs,
                    f"done of {task} while {open_run} runs: {at(i)}",
                )
            stop = payload.get("stop_reason")
            if stop == "error":
                before = [e for e, _ in events[max(0, i - 2) : i]]
                check(
                    [e["event"] for e in before] == ["system_failed", "task_failed"]
                    and all(e["data"].get("task_id") == task for e in before)
                    and (before[0]["data"].get("payload") or {}).get("code") == "run_lost",
                    recovery,
                    f"a failed run not ended by recovery: {at(i)}",
                )
            else:
                check(stop == "completed", runs, f"unexpected stop reason: {at(i)}")
        elif name == "system_failed":
            check(payload.get("code") == "run_lost", recovery, f"unexpected failure: {at(i)}")
            check(task not in lost, recovery, f"recovered twice: {at(lost.get(task, i))}; {at(i)}")
            lost[task] = i
            following = [e["event"] for e, _ in events[i + 1 : i + 3]]
            check(following == ["task_failed", "done"], recovery, f"ending {following}: {at(i)}")
    check(open_run is None, runs, f"{cid}: run {open_run} never ended after the restart")
    for task, i in lost.items():
        later = [j for j, (e, _) in enumerate(events) if j > i and e["data"].get("task_id") == task]
        check(later == [i + 1, i + 2], recovery, f"{cid}: events of {task} after its end: {later}")
    previous = world.verified_len.get(cid, 0)
    world.verified_len[cid] = len(events)
    return sum(1 for i in lost.values() if i >= previous)


async def verify(
    world: World, http: httpx2.AsyncClient, server: Served, *, retry: bool, final: bool = False
) -> None:
    """Every invariant of the module docstring, on the restarted (or drained) server."""
    check = Checks(world)
    places: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    recovered = 0
    existing: set[str] = set()
    logs: dict[str, list[tuple[Envelope, str]]] = {}
    queues: dict[str, dict[str, list[str]]] = {}
    for cid in sorted(world.known | world.maybe):
        response = await http.get(f"{server.api}/conversations/{cid}")
        if response.status_code == 404:
            check(
                cid not in world.known and not world.seen.get(cid),
                "a conversation a client saw is never lost",
                f"{cid} is gone; events seen: {len(world.seen.get(cid, {}))}",
            )
            continue
        assert response.status_code == 200, world.tag(f"{cid}: {response.text}")
        existing.add(cid)
        world.known.add(cid)
        status = response.json()
        check(
            status["status"] == "idle" and status["active_run_id"] is None,
            "after recovery every conversation is idle",
            f"{cid}: {status['status']}, run {status['active_run_id']}",
        )
        events = logs[cid] = await read_log(http, server, cid)
        recovered += check_log(world, check, cid, events)
        for envelope, raw in events:
            world.record(cid, envelope, raw, f"verification of round {world.round}")
            if envelope["event"] == "thread_started":
                message_id = envelope["data"]["metadata"]["message_id"]
                places.setdefault(message_id, []).append(f"{cid} log seq {envelope['seq']}")
                owner[message_id] = cid
        queues[cid] = {lane: [m["id"] for m in status["queue"][lane]] for lane in LANES}
        for lane in LANES:
            for message_id in queues[cid][lane]:
                places.setdefault(message_id, []).append(f"{cid} queue {lane}")
                owner[message_id] = cid
        if final:
            check(
                not queues[cid]["steering"],
                "a new prompt takes the kept steering messages",
                f"{cid}: {queues[cid]}",
            )

    def context(sent: Sent) -> str:
        return f"{sent.cid}'s queue {queues.get(sent.cid)}, log: {outline(logs.get(sent.cid, []))}"

    # every message id: never twice; if acknowledged, exactly once, where it was sent
    once = "every acknowledged message id is delivered or queued exactly once"
    for message_id, where in places.items():
        sent = world.sent.get(message_id)
        if not check(sent is not None, once, f"unknown message id {message_id} at {where}"):
            continue
        assert sent is not None
        check(len(where) == 1, once, f"{sent.via} {message_id} ({sent.how}) twice: {where}")
        check(owner[message_id] == sent.cid, once, f"{message_id} sent to {sent.cid}: {where}")
    for sent in world.sent.values():
        if sent.acked:
            check(
                sent.message_id in places,
                once,
                f"{sent.via} {sent.message_id} of round {sent.round} ({sent.how}) lost; "
                + context(sent),
            )
    # the dedup window survived: acknowledged ids are duplicates
    for sent in world.sent.values():
        if sent.acked and (final or sent.round == world.round):
            response = await http.post(
                f"{server.api}/conversations/{sent.cid}/messages",
                json={"content": sent.content, "mode": "follow_up", "id": sent.message_id},
            )
            assert response.status_code == 202, world.tag(response.text)
            check(
                response.json()["duplicate"] is True,
                "re-sending an acknowledged id answers duplicate",
                f"{sent.via} {sent.message_id} ({sent.how}): {response.json()}",
            )
    # a client whose answer the kill swallowed sends again: a duplicate exactly when kept
    retried = 0
    for sent in world.sent.values():
        if sent.acked or sent.dead:
            continue
        if sent.cid not in existing:
            sent.dead = True  # its conversation was never created: nothing to find
            continue
        if not retry:
            continue
        response = await http.post(
            f"{server.api}/conversations/{sent.cid}/messages",
            json={"content": sent.content, "mode": "follow_up", "id": sent.message_id},
        )
        assert response.status_code == 202, world.tag(response.text)
        duplicate = response.json()["duplicate"]
        check(
            duplicate is (sent.message_id in places),
            "an unanswered message sent again is a duplicate exactly when it was kept",
            f"{sent.via} {sent.message_id}: duplicate={duplicate}, found at "
            f"{places.get(sent.message_id)}; " + context(sent),
        )
        sent.acked, sent.how = True, f"retry after the kill (duplicate={duplicate})"
        retried += 1
    world.stats.append(
        f"  {'after the drain' if final else 'after the restart'}: {len(existing)} "
        f"conversations, {recovered} runs ended by recovery, "
        f"{retried} unanswered messages re-sent"
    )
    check.raise_any()


async def wait_all_idle(world: World, http: httpx2.AsyncClient, server: Served) -> None:
    """Join each running conversation until its runs are done (streams, no sleeps)."""
    for cid in sorted(world.known):
        with anyio.fail_after(WAIT):
            while True:
                status = (await http.get(f"{server.api}/conversations/{cid}")).json()
                if status["status"] == "idle":
                    break
                async with http.stream("GET", f"{server.api}/conversations/{cid}/stream") as r:
                    await read_sse(r, partial(world.record, cid, who="wait idle"))


async def drain(world: World, http: httpx2.AsyncClient, server: Served) -> None:
    """A new prompt on each conversation with a kept queue: it takes the kept steers
    (and, per the runtime, the follow-ups once it would stop)."""
    for cid in sorted(world.known):
        status = (await http.get(f"{server.api}/conversations/{cid}")).json()
        if not (status["queue"]["steering"] or status["queue"]["follow_up"]):
            continue
        message_id = f"drain-{cid}"
        sent = world.new_message(message_id, cid, f"drain {cid}", "prompt")
        body = {"query": sent.content, "conversation_id": cid, "message_id": message_id}
        names: list[str] = []

        def on_event(
            envelope: Envelope, raw: str, c: str = cid, s: Sent = sent, names: list[str] = names
        ) -> None:
            s.acked, s.how = True, "drain prompt"
            names.append(envelope["event"])
            world.record(c, envelope, raw, f"drain {c}")

        with anyio.fail_after(WAIT):
            async with http.stream("POST", f"{server.api}/agents/stream", json=body) as r:
                await read_sse(r, on_event)
        assert names and names[-1] == "done", world.tag(f"{cid}: drain stream {names}")
    await wait_all_idle(world, http, server)


# -- the test ----------------------------------------------------------------------------
async def test_sigkill_at_random_points_loses_nothing(served: list[Served], tmp_path: Path) -> None:
    seed = int(os.environ.get("KILL_DURABILITY_SEED") or random.randrange(2**32))
    print(f"kill durability seed: {seed} (KILL_DURABILITY_SEED={seed} to repeat)")
    world = World(seed, random.Random(seed))
    db = tmp_path / "db.sqlite"
    (tmp_path / "steerline.toml").write_text(CONFIG)
    began = time.monotonic()

    async def start() -> Served:
        started = time.monotonic()
        server = Served(db, tmp_path)
        served.append(server)
        await server.wait_ready()
        world.stats.append(f"  server ready in {time.monotonic() - started:.2f}s")
        return server

    try:
        server = await start()
        for number in range(KILLS):
            world.round = number
            await load_then_kill(world, server)
            server = await start()
            async with client() as http:
                await verify(world, http, server, retry=True)
        world.round = KILLS
        async with client() as http:
            await wait_all_idle(world, http, server)
            await drain(world, http, server)
            await verify(world, http, server, retry=False, final=True)
    except BaseException as exc:
        exc.add_note(f"kill durability seed: {seed}")
        raise
    acked = sum(s.acked for s in world.sent.values())
    world.stats.append(
        f"seed {seed}: {acked} messages acknowledged, "
        f"{sum(len(v) for v in world.seen.values())} events checked, "
        f"{time.monotonic() - began:.1f}s"
    )
    print("\n".join(world.stats))
