"""Append throughput of the event-log backends: memory vs sqlite.

Run: ``.venv/bin/python benchmarks/bench_log.py [N]``. Each figure is one
line ``name: value``. Throughput covers the appends *and* the final flush,
so for sqlite it is the rate at which events become durable, not just the
rate at which ``append`` returns. Figures are only meaningful as ratios on
the same machine.
"""

from __future__ import annotations

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
        for label, yield_every in (("tight loop", 0), ("yield every 16", 16)):
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


if __name__ == "__main__":
    anyio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 50_000)
