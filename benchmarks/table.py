"""The performance table of issue 12: every figure beside its bare baseline, in one run.

Run::

    .venv/bin/python benchmarks/table.py [--quick] [--only sse,ws,steer,viewers,rss,runs,replay]
                                         [--viewers N] [--profile DIR]

Servers are subprocesses on free loopback ports: ``steerline serve`` (with a
``steerline.toml`` that raises the per-tenant rate, stream and run limits)
and ``baselines.py`` (raw ASGI apps on uvicorn with the same loop and
protocols). Clients (``clients.py``) run in this process. Each figure is
measured in interleaved pairs (steerline, baseline, steerline, baseline, ...),
and the table gives the median of each side and the median of the per-pair
ratios. Below the table: every sample, client and server CPU, and how each
figure is measured. ``--profile DIR`` runs ``py-spy record`` on every
steerline server and prints its flat profile per figure (this perturbs the
figures: py-spy takes CPU of the same two cores).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import gc
import json
import math
import os
import re
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import check_run, k, load, machine, num, pct
from _server_proc import (
    VENV_BIN,
    Server,
    free_port,
    kill_all,
    running,
    steerline_argv,
)
from clients import (
    Conn,
    Exchange,
    StreamResult,
    http_stream,
    open_viewers,
    percentile,
    request_bytes,
    ws_stream,
)

HERE = Path(__file__).resolve().parent
API = "/api/v1"
FIGURES = ("sse", "ws", "steer", "viewers", "rss", "runs", "replay")

CONFIG = """\
# written by benchmarks/table.py: limits high enough that no benchmark is refused
[server.limits]
requests_per_minute = 1000000000
max_streams_per_tenant = 1000000
max_running_per_tenant = 1000000
"""

T = TypeVar("T")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a client coroutine on a fresh uvloop loop (the cheapest client loop)."""
    return uvloop.run(coro)


# -- pairs of samples ----------------------------------------------------------------------
@dataclass
class Pairs:
    """Interleaved samples of steerline and its baseline; ratios are steerline / baseline."""

    steerline: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)

    def add(self, steerline: float, baseline: float) -> None:
        self.steerline.append(steerline)
        self.baseline.append(baseline)

    @property
    def s(self) -> float:
        return statistics.median(self.steerline)

    @property
    def b(self) -> float:
        return statistics.median(self.baseline)

    @property
    def ratio(self) -> float:
        return statistics.median(
            s / b if b else math.inf for s, b in zip(self.steerline, self.baseline, strict=True)
        )

    def samples(self, fmt: Callable[[float], str] = num) -> str:
        pairs = zip(self.steerline, self.baseline, strict=True)
        return ", ".join(f"{fmt(s)}/{fmt(b)}" for s, b in pairs)


@dataclass
class Row:
    figure: str
    steerline: str
    baseline: str
    ratio: str
    goal: str
    met: str


def verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


# -- the run's context ---------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.quick: bool = args.quick
        self.viewers: int = args.viewers or (200 if args.quick else 1000)
        self.profile_dir: Path | None = args.profile
        self.tmp = tmp
        self.config = tmp / "steerline.toml"
        self.config.write_text(CONFIG)
        self.rows: dict[str, list[Row]] = {}
        self.details: dict[str, list[str]] = {}
        self._count = 0

    def note(self, figure: str, line: str) -> None:
        self.details.setdefault(figure, []).append(line)
        print(f"  [{figure}] {line}", file=sys.stderr, flush=True)

    def _name(self, label: str) -> str:
        self._count += 1
        return f"{self._count:02d}-{label}"

    @contextlib.contextmanager
    def steerline(
        self,
        store: str,
        label: str,
        *,
        db: Path | None = None,
        times: Path | None = None,
        profile: str | None = None,
    ) -> Iterator[Server]:
        """``steerline serve`` on ``memory`` or ``sqlite`` (a new file unless ``db``);
        ``times``: through ``_timed_serve.py`` (the demo model logs its words)."""
        name = self._name(label)
        port = free_port()
        # an absolute path: sqlite:////tmp/...
        url = f"sqlite:///{db or self.tmp / f'{name}.db'}" if store == "sqlite" else "memory://"
        argv = steerline_argv(port, url, self.config)
        env = None
        if times is not None:
            argv = [sys.executable, str(HERE / "_timed_serve.py"), *argv[1:]]
            env = {"BENCH_TIMES_FILE": str(times)}
        log_path = self.tmp / f"{name}.log"
        with (
            running(argv, port, cwd=self.tmp, log_path=log_path, env=env) as server,
            self.profiled(server, profile or label),
        ):
            yield server

    @contextlib.contextmanager
    def baseline(self, label: str = "bare") -> Iterator[Server]:
        name = self._name(label)
        port = free_port()
        argv = [sys.executable, str(HERE / "baselines.py"), "--port", str(port)]
        with running(argv, port, cwd=self.tmp, log_path=self.tmp / f"{name}.log") as server:
            yield server

    @contextlib.contextmanager
    def profiled(self, server: Server, label: str) -> Iterator[None]:
        """With ``--profile``: py-spy samples ``server`` meanwhile; its flat profile
        (self time, top 15) goes to the details of the figure ``label`` starts with."""
        if self.profile_dir is None:
            yield
            return
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        out = self.profile_dir / f"{self._name(label)}.txt"
        pyspy = VENV_BIN / "py-spy"
        argv = [str(pyspy), "record", "--pid", str(server.pid), "--format", "raw"]
        argv += ["--nonblocking", "--rate", "200", "--output", str(out)]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            yield
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                _, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            figure = label.split("-")[0]
            if out.exists():
                for line in flat_profile(out):
                    self.note(figure, f"profile {label}: {line}")
            else:
                self.note(figure, f"profile {label}: py-spy wrote nothing: {err[-300:]!r}")


def flat_profile(path: Path, top: int = 15) -> list[str]:
    """Self samples per function from py-spy's raw (collapsed) output."""
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        leaf = stack.rsplit(";", 1)[-1]
        leaf = re.sub(r":\d+\)$", ")", leaf)
        leaf = re.sub(r"\(.*/(site-packages|src)/", "(", leaf)
        own[leaf] += int(count)
        total += int(count)
    if not total:
        return ["no samples"]
    lines = [f"{total} samples; self time, top {top}:"]
    lines += [f"{n / total:6.1%}  {leaf}" for leaf, n in own.most_common(top)]
    return lines


# -- helpers -------------------------------------------------------------------------------
CHUNK_BLOCK = re.compile(rb'id: \d+\ndata: (\{"event":"message_chunk".*?\})\n\n')
LAST_ID = re.compile(rb"id: (\d+)\n")


def chunk_sizes(tail: bytes) -> tuple[int, int]:
    """(SSE block, envelope) bytes of the last whole ``message_chunk`` in ``tail``."""
    found = list(CHUNK_BLOCK.finditer(tail))
    if not found:
        raise RuntimeError(f"no message_chunk in the stream's tail: ...{tail[-300:]!r}")
    match = found[-1]
    return len(match.group(0)), len(match.group(1))


def last_id(tail: bytes) -> int:
    ids = LAST_ID.findall(tail)
    if not ids:
        raise RuntimeError(f"no event id in the stream: ...{tail[-300:]!r}")
    return int(ids[-1])


def post_json(port: int, path: str, body: object) -> StreamResult:
    return http_stream(port, "POST", path, json.dumps(body).encode())


def new_conversation(port: int, conversation: str) -> StreamResult:
    """Create ``conversation`` with one short demo run; its stream's result."""
    result = post_json(
        port, f"{API}/agents/stream", {"query": "hello there", "conversation_id": conversation}
    )
    check_run(result, f"creating {conversation}")
    return result


def words(prefix: str, n: int) -> str:
    return " ".join(f"{prefix}{i}" for i in range(n))


# -- 1. SSE events/s -----------------------------------------------------------------------
def fig_sse(bench: Bench) -> None:
    n_words = 5_000 if bench.quick else 20_000
    rounds = 3 if bench.quick else 5
    body = json.dumps({"query": " ".join("ab" for _ in range(n_words))}).encode()
    path = f"{API}/agents/stream"
    with (
        bench.steerline("memory", "sse-memory") as mem,
        bench.steerline("sqlite", "sse-sqlite") as sql,
        bench.baseline() as bare,
    ):
        warm = http_stream(mem.port, "POST", path, body)
        check_run(warm, "sse warm-up (memory)")
        n = warm.events
        block, _ = chunk_sizes(warm.tail)
        check_run(http_stream(sql.port, "POST", path, body), "sse warm-up (sqlite)", n)
        bare_path = f"/sse?n={n}&size={block}"
        if http_stream(bare.port, "GET", bare_path).events != n:
            raise RuntimeError("the bare SSE endpoint sent a wrong number of events")
        bench.note("sse", f"{n} events per stream ({n_words} words), message_chunk {block} B")

        rate = {"memory": Pairs(), "sqlite": Pairs()}
        busy = {"memory": Pairs(), "sqlite": Pairs()}
        cpu = {"memory": 0.0, "sqlite": 0.0, "bare": 0.0}
        bare_runs = 0
        for _ in range(rounds):
            for store, server in (("memory", mem), ("sqlite", sql)):
                before = server.cpu_seconds()
                result = http_stream(server.port, "POST", path, body)
                cpu[store] += server.cpu_seconds() - before
                check_run(result, f"sse {store}", n)
                before = bare.cpu_seconds()
                base = http_stream(bare.port, "GET", bare_path)
                cpu["bare"] += bare.cpu_seconds() - before
                bare_runs += 1
                if base.events != n:
                    raise RuntimeError(f"bare SSE: {base.events} events, expected {n}")
                rate[store].add(result.rate, base.rate)
                busy[store].add(result.client_busy, base.client_busy)

    per_event = {name: cpu[name] / (n * rounds) * 1e6 for name in ("memory", "sqlite")}
    per_event["bare"] = cpu["bare"] / (n * bare_runs) * 1e6
    for store, goal in (("memory", 0.5), ("sqlite", 0.4)):
        pairs = rate[store]
        figure = (
            "SSE events/s to one raw-socket client, memory store"
            if store == "memory"
            else "same, sqlite store"
        )
        bench.rows.setdefault("sse", []).append(
            Row(
                figure,
                f"{k(pairs.s)} (client CPU {pct(busy[store].s)})",
                f"raw ASGI {k(pairs.b)} (client CPU {pct(busy[store].b)})",
                f"{pairs.ratio:.2f}",
                f"≥ {goal}",
                verdict(pairs.ratio >= goal),
            )
        )
        bench.note("sse", f"{store} / bare events/s per pair: {pairs.samples(k)}")
        bench.note("sse", f"{store} / bare client CPU per pair: {busy[store].samples(pct)}")
    m, s, b = per_event["memory"], per_event["sqlite"], per_event["bare"]
    bench.rows["sse"].append(
        Row(
            "server CPU per event, memory / sqlite",
            f"{m:.1f} / {s:.1f} µs",
            f"{b:.1f} µs",
            f"{m / b:.1f} / {s / b:.1f}",
            "—",
            "—",
        )
    )
    bench.note("sse", "server CPU: /proc/PID/stat utime+stime over all rounds / events sent")


# -- 2. WebSocket events/s -----------------------------------------------------------------
def fig_ws(bench: Bench) -> None:
    n_words = 5_000 if bench.quick else 20_000
    rounds = 3 if bench.quick else 5
    text = " ".join("ab" for _ in range(n_words))

    def prompt() -> bytes:
        return json.dumps({"type": "prompt", "request_id": "r1", "content": text}).encode()

    def steerline_ws(server: Server, conversation: str) -> Any:
        new_conversation(server.port, conversation)
        result = ws_stream(server.port, f"{API}/conversations/{conversation}/ws", prompt())
        if b'"stop_reason":"completed"' not in result.last:
            raise RuntimeError(f"WS run did not complete: {result.last[-300:]!r}")
        return result

    with bench.steerline("memory", "ws-memory") as mem, bench.baseline() as bare:
        sized = new_conversation(mem.port, "ws-size")
        _, envelope = chunk_sizes(sized.tail)
        n = steerline_ws(mem, "ws-warm").frames
        spec = json.dumps({"n": n, "size": envelope}).encode()
        if ws_stream(bare.port, "/ws", spec).frames != n:
            raise RuntimeError("the bare WebSocket sent a wrong number of frames")
        bench.note("ws", f"{n} envelopes per run ({n_words} words), message_chunk {envelope} B")
        rate, busy = Pairs(), Pairs()
        for r in range(rounds):
            result = steerline_ws(mem, f"ws-{r}")
            if result.frames != n:
                raise RuntimeError(f"WS: {result.frames} envelopes, expected {n}")
            base = ws_stream(bare.port, "/ws", spec)
            if base.frames != n:
                raise RuntimeError(f"bare WS: {base.frames} frames, expected {n}")
            rate.add(result.rate, base.rate)
            busy.add(result.client_busy, base.client_busy)
    bench.rows["ws"] = [
        Row(
            "WebSocket events/s, memory (one frame per event)",
            f"{k(rate.s)} (client CPU {pct(busy.s)})",
            f"Starlette WS {k(rate.b)} (client CPU {pct(busy.b)})",
            f"{rate.ratio:.2f}",
            "≥ 0.6",
            verdict(rate.ratio >= 0.6),
        )
    ]
    bench.note("ws", f"events/s per pair: {rate.samples(k)}")
    bench.note("ws", f"client CPU per pair: {busy.samples(pct)}")


# -- 3. steer → interruption visible -------------------------------------------------------
STEER_DELAY_MS = 5
STEER_GAP_TOKENS = 3


class StreamWatch:
    """Reads a follow stream: counts ``message_chunk`` events since the awaited marker
    (the steer's ``thread_started``) and stamps when that marker arrives."""

    def __init__(self) -> None:
        self.want: bytes | None = None
        self.seen = 0.0
        self.chunks = 0
        self.found = asyncio.Event()
        self.flowing = asyncio.Event()
        self.ended = False

    def expect(self, marker: bytes) -> None:
        self.want, self.seen, self.chunks = marker, 0.0, 0
        self.found.clear()
        self.flowing.clear()

    def feed(self, data: bytes) -> None:
        now = time.perf_counter()
        if self.want is not None:
            at = data.find(self.want)
            if at < 0:
                return  # still the interrupted answer: its chunks do not count
            self.seen, self.want = now, None
            self.found.set()
            data = data[at:]
        self.chunks += data.count(b'"event":"message_chunk"')
        if self.chunks >= STEER_GAP_TOKENS:
            self.flowing.set()
        if b'"event":"done"' in data:
            self.ended = True
            self.flowing.set()
            self.found.set()


async def steer_round(port: int, conversation: str, after: int, steers: int) -> dict[str, list]:
    text = f"/delay {STEER_DELAY_MS}\n" + words("s", 100)
    stream, post = await Conn.open(port), await Conn.open(port)
    watch = StreamWatch()
    reading: asyncio.Task[bytes] | None = None
    try:
        stream.send(
            "GET",
            f"{API}/conversations/{conversation}/stream?follow=true",
            headers={"Last-Event-ID": str(after)},
        )
        status, head = await stream.head()
        if status != 200:
            raise RuntimeError(f"steer: stream answered {status}")
        reading = asyncio.create_task(stream.body(head, watch.feed))
        messages = f"{API}/conversations/{conversation}/messages"
        answer = await post.request(
            "POST", messages, json.dumps({"content": text, "mode": "follow_up"}).encode()
        )
        if answer.status != 202:
            raise RuntimeError(f"steer: starting the run: {answer.status} {answer.body!r}")
        visible: list[float] = []
        acked: list[float] = []
        for i in range(steers):
            async with asyncio.timeout(10):
                await watch.flowing.wait()
            if watch.ended:
                raise RuntimeError(f"steer: the run ended after {i} steers")
            message_id = f"{conversation}-{i}"
            watch.expect(f'"message_id":"{message_id}"'.encode())
            body = json.dumps({"content": text, "mode": "interrupt", "id": message_id}).encode()
            start = time.perf_counter()
            post.send("POST", messages, body)
            status, head = await post.head()
            reply = await post.body(head)
            acked.append(time.perf_counter() - start)
            if status != 202:
                raise RuntimeError(f"steer: POST messages answered {status}: {reply[:300]!r}")
            async with asyncio.timeout(10):
                await watch.found.wait()
            if watch.ended and not watch.seen:
                raise RuntimeError("steer: the run ended instead of taking the steer")
            visible.append(watch.seen - start)
        await post.request("POST", f"{API}/conversations/{conversation}/abort", b"{}")
        return {"visible": visible, "acked": acked}
    finally:
        if reading is not None:
            reading.cancel()
        await stream.close()
        await post.close()


async def bare_steer_round(port: int, steers: int) -> list[float]:
    text = f"/delay {STEER_DELAY_MS}\n" + words("s", 100)
    post = await Conn.open(port)
    samples: list[float] = []
    try:
        for i in range(steers):
            # the gap steerline's loop has between steers (a few tokens)
            await asyncio.sleep(STEER_GAP_TOKENS * STEER_DELAY_MS / 1000)
            body = json.dumps({"content": text, "mode": "interrupt", "id": f"b-{i}"}).encode()
            start = time.perf_counter()
            post.send("POST", "/steer", body)
            first = await post.first_byte()
            samples.append(time.perf_counter() - start)
            status, head = await post.head(first)
            await post.body(head)
            if status != 202:
                raise RuntimeError(f"bare steer: {status}")
        return samples
    finally:
        await post.close()


def fig_steer(bench: Bench) -> None:
    steers = 60 if bench.quick else 200
    rounds = 2 if bench.quick else 3
    p99, p50, acks = Pairs(), Pairs(), []
    busy = Pairs()
    with bench.steerline("sqlite", "steer-sqlite") as srv, bench.baseline() as bare:
        created = new_conversation(srv.port, "steer-warm")
        run_async(steer_round(srv.port, "steer-warm", last_id(created.tail), 10))
        run_async(bare_steer_round(bare.port, 10))
        for r in range(rounds):
            conversation = f"steer-{r}"
            created = new_conversation(srv.port, conversation)
            cpu0 = time.process_time()
            start = time.perf_counter()
            result = run_async(steer_round(srv.port, conversation, last_id(created.tail), steers))
            s_busy = (time.process_time() - cpu0) / (time.perf_counter() - start)
            cpu0, start = time.process_time(), time.perf_counter()
            base = run_async(bare_steer_round(bare.port, steers))
            b_busy = (time.process_time() - cpu0) / (time.perf_counter() - start)
            visible = [x * 1000 for x in result["visible"]]
            base_ms = [x * 1000 for x in base]
            p99.add(percentile(visible, 99), percentile(base_ms, 99))
            p50.add(percentile(visible, 50), percentile(base_ms, 50))
            acks.append(percentile([x * 1000 for x in result["acked"]], 99))
            busy.add(s_busy, b_busy)
            bench.note(
                "steer",
                f"round {r}: steer→visible ms p50/p99/max "
                f"{p50.steerline[-1]:.2f}/{p99.steerline[-1]:.2f}/{max(visible):.2f}; "
                f"first/last tenth median {statistics.median(visible[: steers // 10]):.2f}/"
                f"{statistics.median(visible[-(steers // 10) :]):.2f}; "
                f"bare POST→byte p50/p99/max {p50.baseline[-1]:.2f}/{p99.baseline[-1]:.2f}/"
                f"{max(base_ms):.2f}",
            )
    bench.rows["steer"] = [
        Row(
            "steer over HTTP → interruption on the stream, p99 (p50), sqlite",
            f"{p99.s:.1f} ms ({p50.s:.1f})",
            f"POST → byte {p99.b:.2f} ms ({p50.b:.2f})",
            f"{p99.ratio:.1f}",
            "≤ 3",
            verdict(p99.ratio <= 3),
        )
    ]
    bench.note(
        "steer", f"{steers} steers per round, {rounds} rounds; p99 ms per pair: {p99.samples()}"
    )
    bench.note(
        "steer",
        f"steerline POST …/messages → 202, p99 ms per round: {', '.join(f'{a:.2f}' for a in acks)}",
    )
    bench.note("steer", f"client CPU per pair: {busy.samples(pct)}")


# -- 4. live viewers -----------------------------------------------------------------------
VIEW_DELAY_MS = 10
WORD_LINE = re.compile(r"^(\S+)\tw(\d+)$")


def production_times(path: Path) -> dict[int, float]:
    times: dict[int, float] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            match = WORD_LINE.match(line)
            if match:
                times.setdefault(int(match.group(2)), float(match.group(1)))
    return times


@dataclass
class ViewRound:
    produced_rate: float
    p50: float
    p99: float
    missing: int
    dropped: int
    client_busy: float
    server_busy: float
    counted_rate: float
    """Words received by the first viewer / the production window (a cross-check)."""


async def _control(port: int, action: Callable[[Conn], Coroutine[Any, Any, None]]) -> None:
    """Run one control request (start or stop a run) on a connection of its own."""
    control = await Conn.open(port)
    try:
        await action(control)
    finally:
        await control.close()


async def view_round(
    server: Server,
    *,
    path: str,
    headers: dict[str, str] | None,
    viewers: int,
    n_words: int,
    window: float,
    drain: float,
    start: Callable[[Conn], Coroutine[Any, Any, None]],
    stop: Callable[[Conn], Coroutine[Any, Any, None]],
    times: Path,
) -> ViewRound:
    opened = await open_viewers(server.port, path, viewers, n_words, headers)
    # The client's collector would pause every viewer's clock for hundreds of ms
    # with 1,000 sockets (both sides alike, but it hides the server's latency).
    gc.disable()
    try:
        cpu0, server0, wall0 = time.process_time(), server.cpu_seconds(), time.perf_counter()
        await _control(server.port, start)
        await asyncio.sleep(window)
        # a fresh connection: an idle one for `window` s races the server's
        # keep-alive timeout (uvicorn: 5 s)
        await _control(server.port, stop)
        pending = [v.finished for v in opened.items]
        await asyncio.wait(pending, timeout=drain)
        wall = time.perf_counter() - wall0
        client_busy = (time.process_time() - cpu0) / wall
        server_busy = (server.cpu_seconds() - server0) / wall
    finally:
        gc.enable()
        opened.close()
    produced = production_times(times)
    if len(produced) < 2:
        raise RuntimeError(
            f"viewers: {len(produced)} production times in {times}: did the demo model's "
            "DemoModel.stream (wrapped by _timed_serve.py) or the ticker run?"
        )
    first, last = min(produced.values()), max(produced.values())
    latencies: list[float] = []
    missing = 0
    for viewer in opened.items:
        arrivals = viewer.arrivals
        for word, at in produced.items():
            got = arrivals[word]
            if got != got:  # NaN: never arrived before the drain timeout
                missing += 1
                latencies.append(math.inf)
            else:
                latencies.append((got - at) * 1000)
    one = opened.items[0].arrivals
    counted = sum(1 for word in produced if one[word] == one[word])
    return ViewRound(
        produced_rate=(len(produced) - 1) / (last - first),
        p50=percentile(latencies, 50),
        p99=percentile(latencies, 99),
        missing=missing,
        dropped=sum(1 for v in opened.items if v.dropped),
        client_busy=client_busy,
        server_busy=server_busy,
        counted_rate=counted / (last - first) if last > first else math.nan,
    )


def fig_viewers(bench: Bench) -> None:
    n = bench.viewers
    window = 3.0 if bench.quick else 5.0
    rounds = 1 if bench.quick else 3
    drain = 15.0 if bench.quick else 30.0
    target = 1000 / VIEW_DELAY_MS
    n_words = int(target * (window + 10))
    raise_nofile(2 * n + 200)
    times = bench.tmp / "view-times.txt"
    text = f"/delay {VIEW_DELAY_MS}\n" + words("w", n_words)
    produced, p99, busy = Pairs(), Pairs(), Pairs()
    with (
        bench.steerline("memory", "viewers-memory", times=times) as srv,
        bench.baseline() as bare,
    ):
        size, _ = chunk_sizes(new_conversation(srv.port, "view-size").tail)
        for r in range(rounds):
            conversation = f"view-{r}"
            after = last_id(new_conversation(srv.port, conversation).tail)
            times.write_text("")

            async def start_run(conn: Conn, conversation: str = conversation) -> None:
                body = json.dumps({"content": text, "mode": "follow_up"}).encode()
                answer = await conn.request(
                    "POST", f"{API}/conversations/{conversation}/messages", body
                )
                if answer.status != 202:
                    raise RuntimeError(f"viewers: starting the run: {answer.status}")

            async def abort_run(conn: Conn, conversation: str = conversation) -> None:
                answer = await conn.request(
                    "POST", f"{API}/conversations/{conversation}/abort", b"{}"
                )
                if answer.status != 200:
                    raise RuntimeError(f"viewers: abort: {answer.status} {answer.body!r}")

            s = run_async(
                view_round(
                    srv,
                    path=f"{API}/conversations/{conversation}/stream?follow=true",
                    headers={"Last-Event-ID": str(after)},
                    viewers=n,
                    n_words=n_words,
                    window=window,
                    drain=drain,
                    start=start_run,
                    stop=abort_run,
                    times=times,
                )
            )
            times.write_text("")
            channel = f"ch{r}"

            async def start_ticker(conn: Conn, channel: str = channel) -> None:
                query = f"ch={channel}&count={n_words}&period={VIEW_DELAY_MS / 1000}"
                query += f"&size={size}&times={times}"
                answer = await conn.request("POST", f"/tick?{query}", b"")
                if answer.status != 202:
                    raise RuntimeError(f"bare ticker: {answer.status}")

            async def stop_ticker(conn: Conn, channel: str = channel) -> None:
                await conn.request("POST", f"/stop?ch={channel}", b"")

            b = run_async(
                view_round(
                    bare,
                    path=f"/broadcast?ch={channel}",
                    headers=None,
                    viewers=n,
                    n_words=n_words,
                    window=window,
                    drain=drain,
                    start=start_ticker,
                    stop=stop_ticker,
                    times=times,
                )
            )
            produced.add(s.produced_rate / target, b.produced_rate / target)
            p99.add(s.p99, b.p99)
            busy.add(s.client_busy, b.client_busy)
            for name, one in (("steerline", s), ("bare", b)):
                bench.note(
                    "viewers",
                    f"round {r} {name}: produced {one.produced_rate:.1f}/s (first viewer "
                    f"received {one.counted_rate:.1f}/s), delivery p50/p99 "
                    f"{num(one.p50)}/{num(one.p99)} ms, never delivered {one.missing}, "
                    f"dropped viewers {one.dropped}, server CPU {pct(one.server_busy)}, "
                    f"client CPU {pct(one.client_busy)}",
                )
    ratio = statistics.median(produced.steerline)
    ok = ratio >= 0.9 and p99.ratio <= 1
    bench.rows["viewers"] = [
        Row(
            f"{n:,} live viewers of a 100 events/s run: events actually produced "
            "(viewer p99 delivery)",
            f"{produced.s * target:.0f} /s (p99 {num(p99.s)} ms; client CPU {pct(busy.s)})",
            f"broadcast baseline {produced.b * target:.0f} /s (p99 {num(p99.b)} ms; "
            f"client CPU {pct(busy.b)})",
            f"{ratio:.2f} of target; p99 x{num(p99.ratio)}",
            "≥ 0.9, p99 ≤ bare",
            verdict(ok),
        )
    ]


def raise_nofile(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise RuntimeError(f"RLIMIT_NOFILE hard limit {hard} < {needed} needed")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


# -- 5. RSS per idle viewer ----------------------------------------------------------------
async def idle_rss(server: Server, path: str, headers: dict[str, str] | None, count: int) -> float:
    """KiB of server RSS per idle stream: RSS after ``count`` streams minus before."""
    warm = await open_viewers(server.port, path, 20, headers=headers)
    await asyncio.sleep(0.3)
    warm.close()
    await asyncio.sleep(0.5)
    before = server.rss_kib()
    opened = await open_viewers(server.port, path, count, headers=headers)
    try:
        await asyncio.sleep(1.0)
        after = server.rss_kib()
        if any(v.finished.done() for v in opened.items):
            raise RuntimeError(f"rss: a stream of {path} ended while idle")
    finally:
        opened.close()
    return (after - before) / count


def fig_rss(bench: Bench) -> None:
    count = 200 if bench.quick else 500
    rounds = 1 if bench.quick else 3
    raise_nofile(count + 200)
    per = {"memory": Pairs(), "sqlite": Pairs()}
    starlette: list[float] = []
    for _ in range(rounds):
        for store in ("memory", "sqlite"):
            with bench.steerline(store, f"rss-{store}") as srv:
                after = last_id(new_conversation(srv.port, "idle").tail)
                path = f"{API}/conversations/idle/stream?follow=true"
                s = run_async(idle_rss(srv, path, {"Last-Event-ID": str(after)}, count))
            with bench.baseline() as bare:
                b = run_async(idle_rss(bare, "/idle", None, count))
            per[store].add(s, b)
        with bench.baseline() as bare:
            starlette.append(run_async(idle_rss(bare, "/idle-starlette", None, count)))
    m, q = per["memory"], per["sqlite"]
    ok = m.ratio <= 1.1 and q.ratio <= 1.1
    st = statistics.median(starlette)
    bench.rows["rss"] = [
        Row(
            "RSS per idle SSE viewer, memory / sqlite",
            f"{m.s:.1f} / {q.s:.1f} KiB",
            f"raw ASGI {statistics.median(m.baseline + q.baseline):.1f} KiB "
            f"(Starlette StreamingResponse {st:.1f})",
            f"{m.ratio:.2f} / {q.ratio:.2f} (to Starlette {m.s / st:.2f} / {q.s / st:.2f})",
            "≤ 1.1",
            verdict(ok),
        )
    ]
    for store, pairs in per.items():
        bench.note(
            "rss",
            f"{store} / raw ASGI KiB per viewer per pair ({count} streams): {pairs.samples()}",
        )
    bench.note(
        "rss", f"Starlette StreamingResponse KiB per viewer: {', '.join(map(num, starlette))}"
    )


# -- 6. runs/s -----------------------------------------------------------------------------
async def runs_round(
    port: int, path: str, body: bytes, total: int, clients: int, check: Callable[[bytes], None]
) -> tuple[float, float]:
    """``total`` requests by ``clients`` keep-alive connections; (runs/s, client CPU)."""
    conns = [await Exchange.open(port) for _ in range(clients)]
    request = request_bytes("POST", path, body)
    left = total

    async def client(conn: Exchange) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            response = await conn.exchange(request)
            if not response.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"runs: POST {path} answered {response[:300]!r}")
            check(response)

    try:
        cpu0, start = time.process_time(), time.perf_counter()
        await asyncio.gather(*(client(c) for c in conns))
        elapsed = time.perf_counter() - start
        return total / elapsed, (time.process_time() - cpu0) / elapsed
    finally:
        for conn in conns:
            conn.close()


def fig_runs(bench: Bench) -> None:
    total = 300 if bench.quick else 1000
    rounds = 2 if bench.quick else 3
    clients = 8
    body = json.dumps({"query": "ab ab ab ab ab"}).encode()
    path = f"{API}/agents/stream"
    rate, busy = Pairs(), Pairs()
    with bench.steerline("sqlite", "runs-sqlite") as srv, bench.baseline() as bare:
        sample = http_stream(srv.port, "POST", path, body)
        check_run(sample, "runs warm-up")
        n = sample.events
        size, _ = chunk_sizes(sample.tail)

        def check_steerline(data: bytes) -> None:
            if data.count(b"\ndata:") != n or b'"stop_reason":"completed"' not in data[-500:]:
                raise RuntimeError(
                    f"runs: a run's stream is not {n} events ending completed: ...{data[-300:]!r}"
                )

        def check_bare(data: bytes) -> None:
            if data.count(b"\ndata:") != n:
                raise RuntimeError("runs: the bare stream has a wrong number of events")

        bare_path = f"/run?n={n}&size={size}"
        run_async(runs_round(srv.port, path, body, 50, clients, check_steerline))
        run_async(runs_round(bare.port, bare_path, body, 50, clients, check_bare))
        bench.note("runs", f"{n} events per run ({size} B message_chunk), {clients} clients")
        server_ms, server_load = Pairs(), Pairs()
        for _ in range(rounds):
            s_cpu, start = srv.cpu_seconds(), time.perf_counter()
            s, s_busy = run_async(runs_round(srv.port, path, body, total, clients, check_steerline))
            s_wall, s_cpu = time.perf_counter() - start, srv.cpu_seconds() - s_cpu
            b_cpu, start = bare.cpu_seconds(), time.perf_counter()
            b, b_busy = run_async(
                runs_round(bare.port, bare_path, body, total, clients, check_bare)
            )
            b_wall, b_cpu = time.perf_counter() - start, bare.cpu_seconds() - b_cpu
            rate.add(s, b)
            busy.add(s_busy, b_busy)
            server_ms.add(s_cpu / total * 1e3, b_cpu / total * 1e3)
            server_load.add(s_cpu / s_wall, b_cpu / b_wall)
    bench.rows["runs"] = [
        Row(
            f"runs/s, {total:,} short runs, {clients} clients, sqlite",
            f"{rate.s:,.0f} (client CPU {pct(busy.s)})",
            f"bare streaming POST {rate.b:,.0f} (client CPU {pct(busy.b)})",
            f"{rate.ratio:.2f}",
            "≥ 0.5",
            verdict(rate.ratio >= 0.5),
        )
    ]
    bench.note("runs", f"runs/s per pair: {rate.samples()}")
    bench.note(
        "runs",
        "server CPU per run, ms (/proc/PID/stat, all threads), per pair: "
        f"{server_ms.samples(lambda x: f'{x:.2f}')}; server CPU / wall per pair: "
        f"{server_load.samples(pct)}",
    )
    bench.note("runs", f"client CPU per pair: {busy.samples(pct)}")


# -- 7. replay after Last-Event-ID ---------------------------------------------------------
def bare_read(db: Path, conversation: str) -> tuple[float, int]:
    """A fresh sqlite3 connection selects the conversation's envelopes in seq order and
    frames them as SSE; (seconds, events)."""
    start = time.perf_counter()
    con = sqlite3.connect(db)
    try:
        rows = con.execute(
            "SELECT seq, envelope FROM events WHERE conversation_id = ? AND seq > ? ORDER BY seq",
            (conversation, 0),
        ).fetchall()
        body = b"".join([b"id: %d\ndata: %s\n\n" % (seq, envelope) for seq, envelope in rows])
    finally:
        con.close()
    elapsed = time.perf_counter() - start
    assert body
    return elapsed, len(rows)


def fig_replay(bench: Bench) -> None:
    rounds = 3 if bench.quick else 5
    n_words = 10_000 - 6  # + conversation_started, task_started, thread_started, "Echo:", ...
    db = bench.tmp / "replay.db"
    text = " ".join("ab" for _ in range(n_words))
    with bench.steerline("sqlite", "replay-fill", db=db) as srv:
        filled = post_json(
            srv.port, f"{API}/agents/stream", {"query": text, "conversation_id": "replay"}
        )
        check_run(filled, "replay: filling")
        new_conversation(srv.port, "warm")
    events = filled.events
    ms = Pairs()
    for r in range(rounds):
        with bench.steerline("sqlite", "replay", db=db, profile=f"replay-{r}") as srv:
            # first request of the new process on another conversation: the code is
            # warm, the replayed conversation is not loaded
            http_stream(
                srv.port, "GET", f"{API}/conversations/warm/stream", headers={"Last-Event-ID": "0"}
            )
            result = http_stream(
                srv.port,
                "GET",
                f"{API}/conversations/replay/stream",
                headers={"Last-Event-ID": "0"},
            )
            if result.status != 200 or result.events != events or result.hints:
                raise RuntimeError(
                    f"replay: {result.status}, {result.events} events "
                    f"({result.hints} hints), expected {events}"
                )
            seconds, rows = bare_read(db, "replay")
            if rows != events:
                raise RuntimeError(f"bare reader: {rows} rows, expected {events}")
            ms.add(result.elapsed * 1000, seconds * 1000)
    bench.rows["replay"] = [
        Row(
            f"replay {events:,} events after Last-Event-ID, sqlite",
            f"{ms.s:.1f} ms",
            f"bare reader of the same file {ms.b:.1f} ms",
            f"{ms.ratio:.2f}",
            "≤ 1.2",
            verdict(ms.ratio <= 1.2),
        )
    ]
    bench.note("replay", f"ms per pair (restarted server / bare reader): {ms.samples()}")


# -- main ----------------------------------------------------------------------------------
RUNNERS: dict[str, Callable[[Bench], None]] = {
    "sse": fig_sse,
    "ws": fig_ws,
    "steer": fig_steer,
    "viewers": fig_viewers,
    "rss": fig_rss,
    "runs": fig_runs,
    "replay": fig_replay,
}


def print_table(bench: Bench, started: str, load_before: str, elapsed: float) -> None:
    print(f"date: {started}; machine: {machine()}")
    print(f"load average before / after: {load_before} / {load()}; took {elapsed:.0f} s")
    print()
    print("| figure | steerline | bare baseline | ratio | goal | met? |")
    print("|---|---|---|---|---|---|")
    for name in FIGURES:
        for row in bench.rows.get(name, []):
            print(
                f"| {row.figure} | {row.steerline} | {row.baseline} | {row.ratio} | "
                f"{row.goal} | {row.met} |"
            )
    print()
    for name in FIGURES:
        for line in bench.details.get(name, []):
            print(f"- {name}: {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller figures (~90 s)")
    parser.add_argument(
        "--only", default=",".join(FIGURES), help=f"comma-separated figures: {','.join(FIGURES)}"
    )
    parser.add_argument(
        "--viewers", type=int, default=None, help="live viewers (default 1000, --quick 200)"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="py-spy flat profiles of the steerline servers into DIR",
    )
    args = parser.parse_args()
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(FIGURES))
    if unknown:
        parser.error(f"unknown figure(s) {', '.join(unknown)}; known: {', '.join(FIGURES)}")

    started = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    load_before = load()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="steerline-table-") as tmp:

        def interrupted(signum: int, _frame: object) -> None:
            # An exception raised here could land in a protocol callback that the
            # loop swallows; so: kill the servers, remove the files, exit now.
            kill_all()
            shutil.rmtree(tmp, ignore_errors=True)
            print(f"\ninterrupted by signal {signum}", file=sys.stderr, flush=True)
            os._exit(128 + signum)

        signal.signal(signal.SIGTERM, interrupted)
        signal.signal(signal.SIGINT, interrupted)
        bench = Bench(args, Path(tmp))
        failed: list[str] = []
        for name in FIGURES:
            if name not in chosen:
                continue
            print(f"[{name}] ...", file=sys.stderr, flush=True)
            begun = time.perf_counter()
            try:
                RUNNERS[name](bench)
            except Exception as exc:  # one broken figure must not hide the others
                failed.append(name)
                traceback.print_exc()
                bench.note(name, f"FAILED: {type(exc).__name__}: {exc}")
            print(f"[{name}] {time.perf_counter() - begun:.0f} s", file=sys.stderr, flush=True)
        print_table(bench, started, load_before, time.perf_counter() - t0)
    if failed:
        sys.exit(f"figures that failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
