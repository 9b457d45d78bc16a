"""What steerline costs with no HTTP at all: the floors under two table figures.

Run: ``.venv/bin/python benchmarks/floors.py [--quick]``.

In process, uvloop, the default service settings and the demo agent of
``steerline serve``, no server and no socket. Each figure is what the service
itself does for one request of the table's figure, so it is the best any
HTTP layer (FastAPI or a raw ASGI route) could reach:

* **runs/s**: 8 workers share 1 000 runs (``--quick`` 300); each run is the
  ``POST /agents/stream`` of table figure 6 without HTTP: a new
  conversation (``get_or_create``), ``submit("ab ab ab ab ab")`` and the
  response's slice of the log read through a ``LogTail`` (the transport's
  reader) into SSE bytes that are dropped, until its ``done``. sqlite (a new
  file) and memory. Compare with the table's bare streaming POST: the goal
  ``runs/s >= 0.5 x bare`` needs this floor above half the bare figure.
* **steer**: one conversation, a run of ``/delay 5`` + 100 words (200
  tokens/s), a ``LogTail`` following it; 200 times (``--quick`` 60): wait for
  3 ``message_chunk`` of the current answer, ``submit(mode="interrupt")``,
  sample = submit called -> the tail received the ``thread_started`` carrying
  that message id. sqlite, then memory. Compare with the table's bare POST ->
  first byte p99: the goal ``<= 3 x bare`` needs this floor under 3 x it.

The CPU time of the whole process (``time.process_time``, all threads) per
run is printed beside runs/s.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import anyio
import uvloop

from steerline.log.base import EventLog, StoredEvent
from steerline.log.memory import MemoryEventLog
from steerline.log.sqlite import SqliteEventLog
from steerline.service.service import ConversationService
from steerline.transports.framing import sse_events
from steerline.transports.tail import LogTail, StreamPlan


class QuietSink:
    """Heartbeats and hints of a transport sink, dropped."""

    async def ping(self) -> None:
        pass

    async def hint(self, after: int) -> None:
        pass


class FramingSink(QuietSink):
    """Frames events as SSE (the bytes are dropped) and keeps the events."""

    def __init__(self) -> None:
        self.received: list[StoredEvent] = []

    async def events(self, batch: list[StoredEvent]) -> None:
        sse_events(batch)
        self.received.extend(batch)


async def one_run(service: ConversationService, log: EventLog) -> None:
    conv, created = await service.get_or_create("default", None, None)
    acceptance = await conv.submit("ab ab ab ab ab", fresh=created)
    plan = StreamPlan(
        after=acceptance.after, stop="first_done", start_run_id=acceptance.start_run_id
    )
    sink = FramingSink()
    await LogTail(log, conv.id, plan).run(sink)
    if sink.received[-1].event != "done" or len(sink.received) != 11:
        raise RuntimeError(f"run streamed {[e.event for e in sink.received]}")


async def runs_per_second(log: EventLog, runs: int, workers: int = 8) -> tuple[float, float]:
    async with ConversationService(log) as service:
        for _ in range(20):  # warm-up
            await one_run(service, log)
        remaining = runs
        cpu, start = time.process_time(), time.perf_counter()

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await one_run(service, log)

        async with anyio.create_task_group() as group:
            for _ in range(workers):
                group.start_soon(worker)
        wall = time.perf_counter() - start
        cpu = time.process_time() - cpu
    return runs / wall, cpu / runs * 1e3


async def steer_latencies(log: EventLog, steers: int) -> list[float]:
    samples: list[float] = []
    async with ConversationService(log) as service:
        conv, created = await service.get_or_create("default", None, None)
        words = " ".join(f"w{i}" for i in range(100))
        await conv.submit(f"/delay 5 {words}", fresh=created)
        chunks = 0
        ready, visible = anyio.Event(), anyio.Event()
        steer_id = ""
        sent_at = 0.0

        class Watch(QuietSink):
            async def events(self, batch: list[StoredEvent]) -> None:
                nonlocal chunks, ready
                sse_events(batch)
                for event in batch:
                    if event.event == "message_chunk":
                        chunks += 1
                        if chunks >= 3:
                            ready.set()
                    elif (
                        steer_id
                        and event.event == "thread_started"
                        and steer_id.encode() in event.envelope
                    ):
                        samples.append(time.perf_counter() - sent_at)
                        # steer again after 3 chunks of the new answer
                        chunks, ready = 0, anyio.Event()
                        visible.set()

        tail = LogTail(log, conv.id, StreamPlan(after=log.committed_seq(conv.id)))
        async with anyio.create_task_group() as group:
            group.start_soon(tail.run, Watch())
            for i in range(steers):
                with anyio.fail_after(30):
                    await ready.wait()
                visible = anyio.Event()
                steer_id = f"steer-{i}-x"
                sent_at = time.perf_counter()
                await conv.submit(f"/delay 5 {words}", mode="interrupt", message_id=steer_id)
                with anyio.fail_after(30):
                    await visible.wait()
            tail.interrupt()
            await conv.abort()
    return samples


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    runs = 300 if args.quick else 1000
    steers = 60 if args.quick else 200
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("sqlite", "memory"):
            log: EventLog = (
                SqliteEventLog(str(Path(tmp) / "runs.db")) if name == "sqlite" else MemoryEventLog()
            )
            rate, cpu_ms = uvloop.run(runs_per_second(log, runs))
            print(f"runs/s in process, {name}: {rate:,.0f} ({cpu_ms:.2f} ms CPU per run)")
        for name in ("sqlite", "memory"):
            log = (
                SqliteEventLog(str(Path(tmp) / "steer.db"))
                if name == "sqlite"
                else MemoryEventLog()
            )
            ms = [x * 1e3 for x in uvloop.run(steer_latencies(log, steers))]
            print(
                f"steer -> thread_started seen in process, {name}: p50 "
                f"{statistics.median(ms):.2f} ms, p99 {percentile(ms, 99):.2f} ms, "
                f"max {max(ms):.2f} ms ({len(ms)} steers)"
            )


if __name__ == "__main__":
    main()
