"""What an idle SSE viewer costs steerline's transport alone, without a server.

Run: ``.venv/bin/python benchmarks/viewer_memory.py``.

In process, uvloop, no socket: 2 000 viewers of one idle conversation of a
memory store, each a ``LogStreamResponse`` (the transport of ``GET …/stream``:
a ``LogTail``, its waiter, a disconnect watcher task) called as an ASGI app
with a ``receive`` that never returns and a ``send`` that drops the bytes.
Baseline, same harness: a raw ASGI app that sends the headers and a
``retry:`` line and waits for the disconnect (the table's raw idle endpoint).
Python heap per viewer with ``tracemalloc`` (deterministic, unlike RSS), and
the top allocation sites of the transport.

The table's RSS figure compares a whole server per viewer (uvicorn's
connection and request objects included) with the raw endpoint's; this
isolates the part that is steerline's own state per viewer.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop

from steerline.log.base import ConversationRecord
from steerline.log.memory import MemoryEventLog
from steerline.transports.http_stream import LogStreamResponse
from steerline.transports.tail import LogTail, StreamPlan, StreamRegistry

VIEWERS = 2_000
App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


async def raw_idle(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"retry: 1000\n", "more_body": True})
    await receive()


async def per_viewer(kind: str) -> tuple[float, list[tracemalloc.Statistic]]:
    log = MemoryEventLog()
    await log.open()
    await log.create_conversation(ConversationRecord(id="c1"))
    registry = StreamRegistry()
    forever: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def receive() -> dict[str, Any]:
        await forever
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        pass

    tasks = []
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(VIEWERS):
        app: App = raw_idle
        if kind == "steerline":
            tail = LogTail(log, "c1", StreamPlan(after=0), registry=registry)
            app = LogStreamResponse(tail, "sse")
        tasks.append(asyncio.ensure_future(app({"type": "http"}, receive, send)))
    for _ in range(5):  # every viewer reaches its wait
        await asyncio.sleep(0)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    top = tracemalloc.take_snapshot().statistics("lineno")[:8]
    tracemalloc.stop()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return (after - before) / VIEWERS, top


def main() -> None:
    raw, _ = uvloop.run(per_viewer("raw"))
    ours, top = uvloop.run(per_viewer("steerline"))
    print(f"{VIEWERS} idle viewers, Python heap per viewer (tracemalloc)")
    print(f"  raw ASGI idle app:        {raw / 1024:.2f} KiB")
    print(f"  steerline transport:      {ours / 1024:.2f} KiB")
    print("  largest sites of the transport, per viewer:")
    for stat in top:
        frame = stat.traceback[0]
        where = f"{frame.filename.rsplit('site-packages/', 1)[-1]}:{frame.lineno}"
        print(f"    {stat.size / VIEWERS:6.0f} B  {where}")


if __name__ == "__main__":
    main()
