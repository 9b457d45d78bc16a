"""Native events per second through the agent loop, with and without subscribers.

Run: ``.venv/bin/python benchmarks/runtime_event_throughput.py [--quick] [--uvloop]``.

In process, no server. A ``ScriptedModel`` with ``token_delay=0`` (it still
yields to the event loop after every part, as a real stream would) replies
with 2 000 word tokens, pre-built as parts so the figure is the loop's cost,
not the scripted model's tokenizer. Each measurement is ``RUNS`` sequential
``agent.prompt()`` runs (20; ``--quick``: 3) on a fresh ``Agent``; each run is
one turn of ~2 010 native events (one ``message_update`` per token plus the
run/turn/message start and end events). Events are counted with
``agent.event_count``; events/s = events / wall time.

Cases:

* ``none``: nobody subscribed;
* ``callback``: one ``agent.subscribe`` callback that counts events;
* ``iterator``: one consumer task reading ``agent.events()`` (an async
  iterator) and counting; the clock stops once it has read every event.

Cases are interleaved, 3 rounds, best events/s of each kept; ratios are to
``none``. A ``model alone`` line gives the rate of iterating the scripted
stream with no agent at all (one event-loop checkpoint per part), the floor
under every case.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Awaitable, Callable

import anyio

from steerline import Agent
from steerline.core.events import AgentEvent
from steerline.models.base import ModelRequest, TextPart
from steerline.models.scripted import ScriptedModel, ScriptedReply

REPLY_TOKENS = 2_000
ROUNDS = 3
REPLY = ScriptedReply(parts=[TextPart("word ") for _ in range(REPLY_TOKENS)])


def new_agent() -> Agent:
    return Agent(model=ScriptedModel(token_delay=0.0, default=REPLY))


async def prompts(agent: Agent, runs: int) -> None:
    for i in range(runs):
        result = await agent.prompt(f"go {i}")
        if result.stop_reason != "completed":
            raise RuntimeError(f"run ended with {result.stop_reason}")


async def case_none(runs: int) -> tuple[int, float]:
    agent = new_agent()
    start = time.perf_counter()
    await prompts(agent, runs)
    return agent.event_count, time.perf_counter() - start


async def case_callback(runs: int) -> tuple[int, float]:
    agent = new_agent()
    seen = 0

    def on_event(event: AgentEvent) -> None:
        nonlocal seen
        seen += 1

    agent.subscribe(on_event)
    start = time.perf_counter()
    await prompts(agent, runs)
    elapsed = time.perf_counter() - start
    if seen != agent.event_count:
        raise RuntimeError(f"callback saw {seen} of {agent.event_count} events")
    return agent.event_count, elapsed


async def case_iterator(runs: int) -> tuple[int, float]:
    agent = new_agent()
    seen = 0
    stream = agent.events()

    async def consume() -> None:
        nonlocal seen
        async for _event in stream:
            seen += 1

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        await prompts(agent, runs)
        stream.close()  # the consumer drains what is buffered, then stops
    elapsed = time.perf_counter() - start
    if seen != agent.event_count:
        raise RuntimeError(f"iterator saw {seen} of {agent.event_count} events")
    return agent.event_count, elapsed


async def model_alone(runs: int) -> tuple[int, float]:
    model = ScriptedModel(token_delay=0.0, default=REPLY)
    request = ModelRequest(system_prompt="", messages=[], tools=[])
    parts = 0
    start = time.perf_counter()
    for _ in range(runs):
        async for _part in model.stream(request):
            parts += 1
    return parts, time.perf_counter() - start


CASES: dict[str, Callable[[int], Awaitable[tuple[int, float]]]] = {
    "none": case_none,
    "callback": case_callback,
    "iterator": case_iterator,
}


async def main(runs: int) -> None:
    best: dict[str, float] = {}
    events: dict[str, int] = {}
    for _ in range(ROUNDS):
        for name, case in CASES.items():
            count, elapsed = await case(runs)
            events[name] = count
            best[name] = max(best.get(name, 0.0), count / elapsed)
    floor = 0.0
    for _ in range(ROUNDS):
        count, elapsed = await model_alone(runs)
        floor = max(floor, count / elapsed)

    print(f"runs per measurement: {runs} x {REPLY_TOKENS} tokens ({events['none']} events)")
    for name in CASES:
        rate = best[name]
        print(f"{name} events/s (best of {ROUNDS}): {rate:,.0f} ({1e6 / rate:.1f} us/event)")
    for name in ("callback", "iterator"):
        print(f"{name}/none ratio: {best[name] / best['none']:.2f}")
    print(f"model alone parts/s (best of {ROUNDS}): {floor:,.0f} ({1e6 / floor:.1f} us/part)")
    print(f"none/model-alone ratio: {best['none'] / floor:.2f}")


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 runs per measurement, not 20")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop instead of asyncio")
    args = parser.parse_args(argv)
    runs = 3 if args.quick else 20
    backend_options: dict[str, object] = {"use_uvloop": True} if args.uvloop else {}
    anyio.run(main, runs, backend_options=backend_options)


if __name__ == "__main__":
    cli(sys.argv[1:])
