"""Time to replay a finished conversation after ``Last-Event-ID: 0``, end to end.

Run: ``.venv/bin/python benchmarks/server_resume.py [--quick]``.

For each backend (memory, sqlite in a temp file) a ``steerline serve``
subprocess gets one conversation of >= 10 000 events (a 10 000-word demo
prompt streamed to its end), then a client (httpx2, in this process) asks
``GET /api/v1/conversations/{id}/stream`` with ``Last-Event-ID: 0`` and times
the request until the server closes the stream (the plan is ``caught_up``:
the stream ends at the last committed event). Reported: the median of 5
replays (goal < 200 ms), and min/max. With sqlite the replay starts far
behind the in-memory hot tail (4 096 events), so it reads the file;
"sqlite restarted" replays the same file from a fresh server process.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx2

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _server_proc import SseCounter, free_port, running, steerline_argv

GOAL_MS = 200.0
CONVERSATION = "bench-resume"
TIMEOUT = httpx2.Timeout(60.0)


def fill(client: httpx2.Client, api: str, words: int) -> int:
    """Stream one demo run of ``words`` tokens into the conversation; return its last seq."""
    text = " ".join("ab" for _ in range(words))  # 2-letter words: under the 64 KiB limit
    body = {"query": text, "conversation_id": CONVERSATION}
    counter = SseCounter()
    with client.stream("POST", f"{api}/agents/stream", json=body) as response:
        response.raise_for_status()
        for chunk in response.iter_raw():
            counter.feed(chunk)
    if b'"stop_reason":"completed"' not in counter.last:
        raise RuntimeError(f"the filling run did not complete: ...{counter.last[-300:]!r}")
    return counter.events


def replay(client: httpx2.Client, api: str) -> tuple[float, SseCounter]:
    url = f"{api}/conversations/{CONVERSATION}/stream"
    counter = SseCounter()
    start = time.perf_counter()
    with client.stream("GET", url, headers={"Last-Event-ID": "0"}) as response:
        response.raise_for_status()
        for chunk in response.iter_raw():
            counter.feed(chunk)
    return time.perf_counter() - start, counter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 replays instead of 5")
    parser.add_argument("--words", type=int, default=10_000)
    args = parser.parse_args()
    repeats = 3 if args.quick else 5

    with tempfile.TemporaryDirectory(prefix="steerline-bench-") as tmp_name:
        tmp = Path(tmp_name)
        sqlite = f"sqlite:///{tmp / 'resume.db'}"
        # (label, store, fill first): "sqlite restarted" is a new server on the
        # file the previous one filled, so nothing of it is in memory.
        cases = (("memory", "memory://", True), ("sqlite", sqlite, True))
        cases += (("sqlite restarted", sqlite, False),)
        events = 0
        for name, store, fill_first in cases:
            port = free_port()
            log_path = tmp / f"{name.replace(' ', '-')}.log"
            with (
                httpx2.Client(timeout=TIMEOUT) as client,
                running(steerline_argv(port, store), port, cwd=tmp, log_path=log_path) as server,
            ):
                api = f"{server.url}/api/v1"
                if fill_first:
                    events = fill(client, api, args.words)
                times: list[float] = []
                for _ in range(repeats):
                    elapsed, counter = replay(client, api)
                    if counter.events != events or counter.hints:
                        raise RuntimeError(
                            f"{name}: replay sent {counter.events} events "
                            f"({counter.hints} resume hints), expected {events}"
                        )
                    times.append(elapsed * 1000)
            median = statistics.median(times)
            verdict = "met" if median < GOAL_MS else "NOT met"
            print(f"{name} events replayed: {events}")
            print(
                f"{name} replay ms (median of {repeats}): {median:.1f} "
                f"(goal < {GOAL_MS:.0f}: {verdict})"
            )
            print(f"{name} replay ms (min / max): {min(times):.1f} / {max(times):.1f}")
            print(f"{name} replay events/s (median): {events / median * 1000:,.0f}")


if __name__ == "__main__":
    main()
