"""End-to-end SSE throughput of ``steerline serve`` against a bare sse-starlette endpoint.

Run: ``.venv/bin/python benchmarks/server_sse_throughput.py [--quick]``.

One client (httpx2, in this process) POSTs a long demo prompt to
``/api/v1/agents/stream``; the demo model streams one ``message_chunk`` per
word with no delay, so the server's whole path is measured: model → agent →
event log append (→ sqlite commit) → log tail → SSE framing → socket. The
client counts ``data:`` lines until the stream ends.

The baseline is a tiny Starlette app whose ``EventSourceResponse`` (sse-starlette)
yields the same number of pre-encoded ~260-byte events: the cost of moving
SSE events through uvicorn with nothing behind them.

Every server runs as its own subprocess (``steerline serve`` for steerline;
this file with ``--serve-baseline`` for the baseline, uvicorn with the same
defaults), so a server has its own core and the client cannot steal its
GIL. Rounds are interleaved (baseline, memory, sqlite) x 3 and the best
events/s of each is kept; ratios are to the baseline of the same run.
Goals: memory >= 0.8, sqlite >= 0.5.

Caveat: httpx2 hands the client one piece per HTTP chunk, and sse-starlette
writes one chunk per event, so against the baseline the single client uses
a whole core (about 130 000 events/s here) while the baseline server is at
~85 %: the baseline is partly client-bound, which flatters the events/s
ratios a little. The ``server CPU µs/event`` lines (from /proc, all threads
of the server process) compare the servers' own cost, whatever the client.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx2

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _server_proc import ROOT, SseCounter, free_port, running, steerline_argv

EVENT_BYTES = 260
REPEATS = 3
GOALS = {"memory": 0.8, "sqlite": 0.5}
TIMEOUT = httpx2.Timeout(60.0)


# -- the baseline server ---------------------------------------------------------------
def baseline_event(seq: int, size: int) -> bytes:
    """``id:``/``data:`` framing around a JSON envelope, ``size`` bytes in all."""
    head = b'id: %d\ndata: {"event":"message_chunk","data":{"content":"' % seq
    tail = b'"},"seq":%d}\n\n' % seq
    return head + b"x" * max(1, size - len(head) - len(tail)) + tail


def serve_baseline(port: int) -> None:
    import uvicorn
    from sse_starlette import EventSourceResponse
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    cache: dict[tuple[int, int], list[bytes]] = {}

    async def stream(request: Request) -> Response:
        n = int(request.query_params["n"])
        size = int(request.query_params.get("size", EVENT_BYTES))
        events = cache.get((n, size))
        if events is None:
            events = cache[(n, size)] = [baseline_event(i + 1, size) for i in range(n)]

        async def body() -> object:
            for event in events:
                yield event

        return EventSourceResponse(body(), ping=15)

    async def healthz(_request: Request) -> Response:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/stream", stream), Route("/healthz", healthz)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


# -- the client ------------------------------------------------------------------------
def read_stream(client: httpx2.Client, method: str, url: str, **kwargs: object) -> SseCounter:
    counter = SseCounter()
    with client.stream(method, url, **kwargs) as response:  # type: ignore[arg-type]
        response.raise_for_status()
        for chunk in response.iter_raw():
            counter.feed(chunk)
    return counter


def prompt(words: int) -> str:
    # Two-letter words keep 20 000 of them under the 64 KiB message limit.
    return " ".join("ab" for _ in range(words))


def steerline_run(client: httpx2.Client, url: str, text: str) -> tuple[float, SseCounter]:
    start = time.perf_counter()
    counter = read_stream(client, "POST", f"{url}/api/v1/agents/stream", json={"query": text})
    elapsed = time.perf_counter() - start
    if counter.hints or b'"event":"done"' not in counter.last:
        raise RuntimeError(f"stream did not end with done: ...{counter.last[-300:]!r}")
    if b'"stop_reason":"completed"' not in counter.last:
        raise RuntimeError(f"the run failed: ...{counter.last[-300:]!r}")
    return elapsed, counter


def baseline_run(client: httpx2.Client, url: str, n: int) -> tuple[float, SseCounter]:
    start = time.perf_counter()
    counter = read_stream(client, "GET", f"{url}/stream", params={"n": n, "size": EVENT_BYTES})
    elapsed = time.perf_counter() - start
    if counter.events != n:
        raise RuntimeError(f"baseline sent {counter.events} events, expected {n}")
    return elapsed, counter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 000 words instead of 20 000")
    parser.add_argument("--words", type=int, default=None)
    parser.add_argument("--serve-baseline", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baseline:
        serve_baseline(args.serve_baseline)
        return
    words = args.words or (5_000 if args.quick else 20_000)
    text = prompt(words)

    with tempfile.TemporaryDirectory(prefix="steerline-bench-") as tmp_name:
        tmp = Path(tmp_name)
        ports = {name: free_port() for name in ("baseline", "memory", "sqlite")}
        argv = {
            "baseline": [sys.executable, __file__, "--serve-baseline", str(ports["baseline"])],
            "memory": steerline_argv(ports["memory"], "memory://"),
            "sqlite": steerline_argv(ports["sqlite"], f"sqlite:///{tmp / 'bench.db'}"),
        }
        rates: dict[str, list[float]] = {name: [] for name in argv}
        wall: dict[str, float] = dict.fromkeys(argv, 0.0)
        cpu: dict[str, float] = dict.fromkeys(argv, 0.0)
        with (
            httpx2.Client(timeout=TIMEOUT) as client,
            running(argv["baseline"], ports["baseline"], cwd=ROOT, log_path=tmp / "b.log") as b,
            running(argv["memory"], ports["memory"], cwd=tmp, log_path=tmp / "m.log") as m,
            running(argv["sqlite"], ports["sqlite"], cwd=tmp, log_path=tmp / "s.log") as s,
        ):
            servers = {"baseline": b, "memory": m, "sqlite": s}
            # Warm-up: the full prompt once on memory gives the event count the
            # baseline must match; a short prompt warms the sqlite server.
            _, first = steerline_run(client, m.url, text)
            n = first.events
            steerline_run(client, s.url, prompt(200))
            baseline_run(client, b.url, n)
            print(f"words in prompt: {words}")
            print(f"events per stream: {n}")
            print(f"steerline bytes/event: {first.bytes / n:.0f}")
            print(f"baseline bytes/event: {EVENT_BYTES}")
            for _ in range(REPEATS):
                for name, server in servers.items():
                    cpu_before = server.cpu_seconds()
                    if name == "baseline":
                        elapsed, counter = baseline_run(client, server.url, n)
                    else:
                        elapsed, counter = steerline_run(client, server.url, text)
                    cpu[name] += server.cpu_seconds() - cpu_before
                    wall[name] += elapsed
                    if counter.events != n:
                        raise RuntimeError(f"{name}: {counter.events} events, expected {n}")
                    rates[name].append(n / elapsed)
        best = {name: max(values) for name, values in rates.items()}
        for name, values in rates.items():
            label = "baseline sse-starlette" if name == "baseline" else f"steerline {name}"
            print(f"{label} events/s (best of {REPEATS}): {best[name]:,.0f}")
            print(f"{label} events/s (all runs): {', '.join(f'{r:,.0f}' for r in values)}")
            # Server-side cost, independent of how fast the client reads: CPU
            # time of the server process (all threads) per event delivered,
            # and how busy the server's core was while streaming.
            per_event = cpu[name] / (n * REPEATS) * 1e6
            print(f"{label} server CPU µs/event: {per_event:.1f}")
            print(f"{label} server CPU busy while streaming: {cpu[name] / wall[name]:.0%}")
        for name, goal in GOALS.items():
            ratio = best[name] / best["baseline"]
            verdict = "met" if ratio >= goal else "NOT met"
            print(f"ratio {name} / baseline: {ratio:.2f} (goal >= {goal}: {verdict})")
        for name in GOALS:
            print(
                f"server CPU per event, baseline / {name}: "
                f"{cpu['baseline'] / cpu[name]:.2f} (1.0 = as cheap as the baseline)"
            )


if __name__ == "__main__":
    main()
