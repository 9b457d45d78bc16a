"""Append throughput of the event-log backends: memory vs sqlite.

Run: ``.venv/bin/python benchmarks/bench_log.py [N]``. Each figure is one
line ``name: value``. Throughput covers the appends *and* the final flush,
so for sqlite it is the rate at which events become durable, not just the
rate at which ``append`` returns. Figures are only meaningful as ratios on
the same machine.

``.venv/bin/python benchmarks/bench_log.py replay [N] [ROUNDS]``: the store's
part of a replay after ``Last-Event-ID``: a file holding an N-event
conversation (default 10 000) is opened by a fresh ``SqliteEventLog`` per
round (cold: nothing in memory, as after a restart) and read from seq 0 the
way a stream does it (``read(after, 512)`` until empty), and, interleaved in
the same process, by a bare ``sqlite3`` connection doing ``SELECT seq,
envelope ... ORDER BY seq`` of the same rows. Medians of ROUNDS (default 15)
and the median per-pair ratio.

``.venv/bin/python benchmarks/bench_log.py flush [SECONDS]``: what an
acknowledgement waits for: a producer appends 4 events every 2 ms (and a
20 KB state blob every 20 events) while another task calls ``flush`` every
5 ms for SECONDS (default 8); p50 / p99 / max of the flush latency.
"""

from __future__ import annotations

import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
import anyio.lowlevel

from steerline.log.base import ConversationRecord, EventLog, LogSettings
from steerline.log.memory import MemoryEventLog
from steerline.log.sqlite import SqliteEventLog

PAD = b"x" * 200
ENVELOPE_SIZE = len(b'{"event":"message_chunk","data":{"i":12345,"text":"%s"},"seq":12345}' % PAD)


def envelope(i: int) -> bytes:
    return b'{"event":"message_chunk","data":{"i":%d,"text":"%s"}}' % (i, PAD)


async def run(log: EventLog, n: int, *, yield_every: int) -> tuple[float, float]:
    """Append ``n`` events, flush; return (events/s durable, µs per event in the append loop)."""
    await log.open()
    try:
        await log.create_conversation(ConversationRecord(id="bench"))
        envelopes = [envelope(i) for i in range(n)]
        append = log.append
        start = time.perf_counter()
        for i, body in enumerate(envelopes):
            append("bench", "message_chunk", body)
            if yield_every and i % yield_every == 0:
                # An agent awaits between events (model stream chunks):
                # let the loop run the commit callbacks as it would then.
                await anyio.lowlevel.checkpoint()
        appended = time.perf_counter()
        await log.flush()
        elapsed = time.perf_counter() - start
        assert log.committed_seq("bench") == n
        return n / elapsed, (appended - start) / n * 1e6
    finally:
        await log.close()


async def main(n: int) -> None:
    print(f"events: {n}")
    print(f"envelope bytes: {ENVELOPE_SIZE}")
    with tempfile.TemporaryDirectory() as tmp:
        for label, yield_every in (
            ("tight loop", 0),
            ("yield every 16", 16),
            ("yield every event", 1),
        ):
            mem, mem_us = await run(MemoryEventLog(), n, yield_every=yield_every)
            normal_log = SqliteEventLog(str(Path(tmp) / f"n{yield_every}.db"))
            normal, normal_us = await run(normal_log, n, yield_every=yield_every)
            full_log = SqliteEventLog(
                str(Path(tmp) / f"f{yield_every}.db"), LogSettings(synchronous="FULL")
            )
            full, full_us = await run(full_log, n, yield_every=yield_every)
            print(f"[{label}] memory events/s: {mem:,.0f}")
            print(f"[{label}] sqlite NORMAL events/s: {normal:,.0f}")
            print(f"[{label}] sqlite FULL events/s: {full:,.0f}")
            print(f"[{label}] memory / sqlite NORMAL ratio: {mem / normal:.2f}")
            print(f"[{label}] memory / sqlite FULL ratio: {mem / full:.2f}")
            print(f"[{label}] append loop µs/event memory: {mem_us:.2f}")
            print(f"[{label}] append loop µs/event sqlite NORMAL: {normal_us:.2f}")
            print(f"[{label}] append loop µs/event sqlite FULL: {full_us:.2f}")
            print(f"[{label}] sqlite NORMAL commits: {normal_log.commit_count}")
            print(f"[{label}] sqlite NORMAL events per commit: {n / normal_log.commit_count:.0f}")
            print(f"[{label}] sqlite FULL commits: {full_log.commit_count}")


STREAM_BATCH = 512
"""What ``LogTail`` asks ``read`` for at a time (``stream.batch_limit``)."""


async def fill(path: str, n: int) -> None:
    log = SqliteEventLog(path)
    await log.open()
    try:
        await log.create_conversation(ConversationRecord(id="big"))
        await log.create_conversation(ConversationRecord(id="small"))
        log.append("small", "message_chunk", envelope(0))
        for i in range(n):
            log.append("big", "message_chunk", envelope(i), "run-1")
            if i % 1000 == 0:
                await anyio.lowlevel.checkpoint()
        await log.flush()
    finally:
        await log.close()


async def replay_store(path: str, n: int) -> float:
    """Seconds to read the n events of a cold conversation as a stream does."""
    log = SqliteEventLog(path)
    await log.open()
    try:
        # warm the code and a reader connection on another conversation
        await log.get_conversation("small")
        await log.read("small", 0, STREAM_BATCH)
        start = time.perf_counter()
        await log.get_conversation("big")
        after = max(0, await log.oldest_seq("big") - 1)
        count = 0
        while True:
            batch = await log.read("big", after, STREAM_BATCH)
            if not batch:
                break
            count += len(batch)
            after = batch[-1].seq
        elapsed = time.perf_counter() - start
        assert count == n, count
        return elapsed
    finally:
        await log.close()


def replay_bare(path: str, n: int) -> float:
    start = time.perf_counter()
    conn = sqlite3.connect(path)
    rows = conn.execute(
        "SELECT seq, envelope FROM events WHERE conversation_id = ? AND seq > 0 ORDER BY seq",
        ("big",),
    ).fetchall()
    conn.close()
    elapsed = time.perf_counter() - start
    assert len(rows) == n
    return elapsed


async def replay(n: int, rounds: int) -> None:
    print(f"replay events: {n}, rounds: {rounds}, read limit: {STREAM_BATCH}")
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "replay.db")
        await fill(path, n)
        store: list[float] = []
        bare: list[float] = []
        for _ in range(rounds):
            store.append(await replay_store(path, n))
            bare.append(replay_bare(path, n))
        ratios = [s / b for s, b in zip(store, bare, strict=True)]
        print(f"replay SqliteEventLog.read ms (median): {statistics.median(store) * 1e3:.2f}")
        print(f"replay bare sqlite3 select ms (median): {statistics.median(bare) * 1e3:.2f}")
        print(f"replay store / bare ratio (median of pairs): {statistics.median(ratios):.2f}")


async def flush_latency(seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        log = SqliteEventLog(str(Path(tmp) / "flush.db"))
        await log.open()
        await log.create_conversation(ConversationRecord(id="c"))
        latencies: list[float] = []
        stop = anyio.Event()

        async def producer() -> None:
            i = 0
            while not stop.is_set():
                for _ in range(4):
                    i += 1
                    log.append("c", "message_chunk", envelope(i), "run")
                if i % 20 == 0:
                    log.put_state("c", "context", b"y" * 20_000)
                await anyio.sleep(0.002)

        async with anyio.create_task_group() as tg:
            tg.start_soon(producer)
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                await anyio.sleep(0.005)
                start = time.perf_counter()
                await log.flush()
                latencies.append((time.perf_counter() - start) * 1e3)
            stop.set()
        await log.close()
    latencies.sort()
    n = len(latencies)
    print(f"flushes: {n}")
    print(f"flush latency ms p50: {latencies[n // 2]:.2f}")
    print(f"flush latency ms p99: {latencies[int(n * 0.99)]:.2f}")
    print(f"flush latency ms max: {latencies[-1]:.2f}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["flush"]:
        anyio.run(flush_latency, float(sys.argv[2]) if len(sys.argv) > 2 else 8.0)
    elif sys.argv[1:2] == ["replay"]:
        args = [int(a) for a in sys.argv[2:4]]
        anyio.run(replay, *(args + [10_000, 15][len(args) :]))
    else:
        anyio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 50_000)
