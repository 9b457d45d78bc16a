"""How fast an ``immediate`` steer reaches the model: steer() -> model stream closed.

Run: ``.venv/bin/python benchmarks/runtime_steer_latency.py [--quick] [--uvloop]``.

In process, no server. One long run of an ``Agent`` with
``steering_policy="immediate"`` over a ``ScriptedModel`` that streams long
replies (2 000 word tokens, pre-built parts, ``token_delay=0.001``), so a
model stream is always open. Each cycle:

1. wait (an event callback, no sleeps) until the current stream has produced
   ``TOKENS_IN`` ``message_update`` events;
2. ``t = perf_counter()``; ``agent.steer(...)``;
3. wait for the next model stream to open (``model.stream_opened``);
4. sample = ``closed_at`` of the previous stream - ``t``.

``closed_at`` is taken by the scripted stream's ``finally``, so the sample is
the time for the steer to be queued, the run's cancel scope to be cancelled,
the event loop to wake the run's task and the cancellation to unwind into the
model's generator. 1 000 steers (``--quick``: 100); p50 / p99 / max in ms.
Goal: p99 < 2 ms. ``--text-reply`` gives the scripted reply as ``text=``
instead of pre-built parts, to show the cost of the scripted model freeing
a cut reply's part list.

Baseline, same run, same method: a task loops ``anyio.sleep(0.001)`` inside a
bare ``anyio.CancelScope``; after ``TOKENS_IN`` iterations it signals, the
driver takes ``t``, calls ``scope.cancel()`` and waits for the task to open
its next scope; sample = the loop's ``finally`` time - ``t``. This is the
floor the event loop itself sets; read the agent's figures as a ratio to it,
since absolute microseconds drift on a noisy machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field

import anyio

from steerline import Agent
from steerline.core.events import AgentEvent, MessageStart, MessageUpdate
from steerline.core.messages import AssistantMessage
from steerline.models.base import TextPart
from steerline.models.scripted import ScriptedModel, ScriptedReply

TOKEN_DELAY = 0.001
TOKENS_IN = 3
"""How many ``message_update`` events of a stream to wait for before steering."""
REPLY_TOKENS = 2_000
"""Long enough (> 2 s at 1 ms/token) that no reply ends between two steers."""
GOAL_P99_MS = 2.0


@dataclass(slots=True)
class Gate:
    """Set ``ready`` once the current stream has produced ``TOKENS_IN`` updates."""

    ready: anyio.Event = field(default_factory=anyio.Event)
    current: AssistantMessage | None = None
    count: int = 0

    def on_event(self, event: AgentEvent) -> None:
        if isinstance(event, MessageStart) and isinstance(event.message, AssistantMessage):
            self.current, self.count = event.message, 0
        elif isinstance(event, MessageUpdate) and event.message is self.current:
            self.count += 1
            if self.count == TOKENS_IN:
                self.ready.set()


def ms(values: list[float]) -> tuple[float, float, float]:
    """p50, p99, max of ``values`` (seconds), in milliseconds."""
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1e3, p99 * 1e3, ordered[-1] * 1e3


async def agent_latencies(n: int, *, text_reply: bool) -> list[float]:
    if text_reply:
        reply = ScriptedReply(text="word " * REPLY_TOKENS)
    else:
        # Pre-built parts: ScriptedModel copies the list per stream but does not create
        # (or, when the stream is cut, free) REPLY_TOKENS part objects per stream; freeing
        # them is ~20 ns a part and would show up in every sample (see README).
        reply = ScriptedReply(parts=[TextPart("word ") for _ in range(REPLY_TOKENS)])
    model = ScriptedModel(token_delay=TOKEN_DELAY, default=reply)
    agent = Agent(model=model, steering_policy="immediate")
    gate = Gate()
    agent.subscribe(gate.on_event)
    samples: list[float] = []

    async with anyio.create_task_group() as tg:

        async def run() -> None:
            result = await agent.prompt("start")
            if len(samples) < n:
                raise RuntimeError(f"the run ended early: {result.stop_reason}")

        tg.start_soon(run)
        for i in range(n):
            await gate.ready.wait()
            gate.ready = anyio.Event()
            opened = model.stream_opened  # the event of the *next* stream
            previous = model.streams[-1]
            t = time.perf_counter()
            agent.steer(f"steer {i}")
            await opened.wait()
            if previous.completed or previous.closed_at is None:
                raise RuntimeError("a reply ended before it was steered; raise REPLY_TOKENS")
            samples.append(previous.closed_at - t)
        agent.abort()
    return samples


async def baseline_latencies(n: int) -> list[float]:
    """The same cycle around a bare ``CancelScope`` + ``anyio.sleep`` loop."""
    ready = anyio.Event()
    opened = anyio.Event()
    scope_box: list[anyio.CancelScope] = []
    closed: list[float] = []
    samples: list[float] = []

    async def loop() -> None:
        nonlocal opened, ready
        while True:
            with anyio.CancelScope() as scope:
                scope_box.append(scope)
                opened.set()
                opened = anyio.Event()
                count = 0
                try:
                    while True:
                        await anyio.sleep(TOKEN_DELAY)
                        count += 1
                        if count == TOKENS_IN:
                            ready.set()
                finally:
                    closed.append(time.perf_counter())

    async with anyio.create_task_group() as tg:
        tg.start_soon(loop)
        for _ in range(n):
            await ready.wait()
            ready = anyio.Event()
            next_opened = opened
            t = time.perf_counter()
            scope_box[-1].cancel()
            await next_opened.wait()
            samples.append(closed[-1] - t)
        tg.cancel_scope.cancel()
    return samples


def report(name: str, samples: list[float]) -> tuple[float, float, float]:
    p50, p99, top = ms(samples)
    print(f"{name} p50 ms: {p50:.3f}")
    print(f"{name} p99 ms: {p99:.3f}")
    print(f"{name} max ms: {top:.3f}")
    return p50, p99, top


async def main(n: int, text_reply: bool) -> None:
    start = time.perf_counter()
    base = await baseline_latencies(n)
    steer = await agent_latencies(n, text_reply=text_reply)
    elapsed = time.perf_counter() - start
    print(f"steers: {n}")
    b50, b99, _ = report("baseline cancel scope", base)
    s50, s99, _ = report("agent steer", steer)
    print(f"agent/baseline p50 ratio: {s50 / b50:.2f}")
    print(f"agent/baseline p99 ratio: {s99 / b99:.2f}")
    met = "met" if s99 < GOAL_P99_MS else "NOT met"
    print(f"goal p99 < {GOAL_P99_MS:g} ms: {met}")
    print(f"wall time s: {elapsed:.1f}")


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 steers instead of 1 000")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop instead of asyncio")
    parser.add_argument(
        "--text-reply",
        action="store_true",
        help="scripted reply as text= (parts built, and freed on a cut, per stream)",
    )
    args = parser.parse_args(argv)
    n = 100 if args.quick else 1_000
    backend_options: dict[str, object] = {"use_uvloop": True} if args.uvloop else {}
    anyio.run(main, n, args.text_reply, backend_options=backend_options)


if __name__ == "__main__":
    cli(sys.argv[1:])
