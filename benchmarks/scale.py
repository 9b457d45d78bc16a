"""Scale-out on Redis (issue 13): one vs two ``steerline serve`` processes on one Redis.

Run::

    .venv/bin/python benchmarks/scale.py [--quick]

One ``redis-server`` (AOF on, ``appendfsync everysec``, no RDB snapshots) on a
free loopback port, and two server processes A and B on it
(``steerline serve --store redis://...?lease_ttl=10``, with a
``steerline.toml`` that raises the per-tenant limits as ``table.py`` does).
Both processes run during every measurement; "1 process" sends everything to
A (B idles), "2 processes" splits the clients between A and B. Figures:

1. **runs/s**: N short runs (``POST /api/v1/agents/stream`` ``{"query": "hi"}``,
   each a new conversation, read to its ``done``) from 8 keep-alive clients;
   with 2 processes client i talks to A if i is even, else to B. Each new
   conversation is run by the process that got its request (it takes the
   lease), so nothing is forwarded: this is the scale-out of independent runs.
2. **wire events/s**: 4 runs of a 20 000-word demo prompt (``/delay 0``: one
   ``message_chunk`` per word, no pause) in parallel, each on a blocking
   raw socket in a thread of its own; total events / wall time. 1 process:
   all 4 on A; 2 processes: 2 on A, 2 on B. Also one run alone on A, read by
   its POST and at the same time by a follow stream on B (B reads the run
   from the shared Redis Stream log).
3. **steer latency**: a run on A busy in the demo ``sleep`` tool (60 s); then
   ``POST …/messages {"mode": "steer"}`` to A (the lease holder) and to B
   (which queues and logs it in Redis with the INTAKE script, no lease, and
   wakes A, which takes it from the log), alternating, 10 ms apart, on one keep-alive connection
   each; sample = request sent → whole 202 response received. Rounds of 10
   steers each way on a new conversation (the queue stays short), the first
   steer of each way per round is a warm-up (not counted). ``GET /healthz`` on
   the same connections, interleaved, is the HTTP floor. Measured on fresh
   servers first, and again after runs/s has left ~1 000 live conversations
   on each process (the Redis reader's cost grows with the leases it holds).

Every measurement records the CPU time used meanwhile by this process
(``time.process_time``, the clients), by each server (``/proc/PID/stat``
utime + stime, all threads), by Redis (``INFO cpu`` used_cpu_user +
used_cpu_sys) and by everything else on the machine (``/proc/stat`` busy time
minus those: other sessions' tests), shown as cores (CPU seconds / wall
seconds): on a 2-core machine, what is left for a second server process is
what bounds the ratio. The details add the Redis commands that took its CPU
(``INFO commandstats``). Pairs alternate which side goes first; the table
shows the median of each side and the median of the per-pair ratios. Server
logs are scanned for tracebacks, ERROR/WARNING lines and 5xx responses; those,
streams cut short and failed figures are listed as anomalies. Progress goes to
stderr, the table and the details to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import check_run, k, load, machine
from _server_proc import (
    Server,
    _die_with_parent,
    free_port,
    kill_all,
    running,
    steerline_argv,
)
from clients import (
    DATA,
    HOST,
    READ_SIZE,
    Conn,
    Exchange,
    StreamResult,
    _request,
    http_stream,
    percentile,
    request_bytes,
)

API = "/api/v1"
LEASE_TTL = 10
CLIENTS = 8
PARALLEL_RUNS = 4
TICKS = os.sysconf("SC_CLK_TCK")
CPU_ROW = "  CPU cores meanwhile: client / A / B / Redis / others"
SLEEP_RUN = '/call sleep {"seconds": 60}'

CONFIG = """\
# written by benchmarks/scale.py: limits high enough that no benchmark is refused
[server.limits]
requests_per_minute = 1000000000
max_streams_per_tenant = 1000000
max_running_per_tenant = 1000000
max_queued_messages = 10000
max_message_bytes = 1048576
max_body_bytes = 2097152
"""


# -- Redis -----------------------------------------------------------------------------
@dataclass
class Redis:
    port: int
    pid: int
    log_path: Path

    def info(self, section: str) -> dict[str, str]:
        """``INFO section`` over a raw RESP exchange."""
        request = f"*2\r\n$4\r\nINFO\r\n${len(section)}\r\n{section}\r\n".encode()
        with socket.create_connection((HOST, self.port), timeout=5) as sock:
            sock.sendall(request)
            data = b""
            while b"\r\n" not in data:
                data += sock.recv(65536)
            head, _, rest = data.partition(b"\r\n")
            if not head.startswith(b"$"):
                raise RuntimeError(f"redis INFO: unexpected reply {data[:200]!r}")
            size = int(head[1:])
            while len(rest) < size + 2:
                rest += sock.recv(65536)
        out: dict[str, str] = {}
        for line in rest[:size].decode().splitlines():
            name, sep, value = line.partition(":")
            if sep:
                out[name] = value
        return out

    def cpu_seconds(self) -> float:
        info = self.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def command_stats(self) -> dict[str, tuple[int, int]]:
        """Per command: (calls, µs of Redis CPU) so far (``INFO commandstats``)."""
        stats: dict[str, tuple[int, int]] = {}
        for name, value in self.info("commandstats").items():
            fields = dict(part.split("=", 1) for part in value.split(","))
            stats[name.removeprefix("cmdstat_")] = (int(fields["calls"]), int(fields["usec"]))
        return stats


def top_commands(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]], per: int, top: int = 5
) -> str:
    """The Redis commands that took most of its CPU between two ``command_stats``:
    calls per unit of ``per`` (runs, events, ...) and µs per call."""
    spent = []
    for name, (calls, usec) in after.items():
        calls0, usec0 = before.get(name, (0, 0))
        if calls > calls0:
            spent.append((usec - usec0, name, calls - calls0))
    spent.sort(reverse=True)

    def rate(calls: int) -> str:
        return f"{calls / per:.2f} calls" if calls >= per / 10 else f"1 call per {per / calls:,.0f}"

    return ", ".join(
        f"{name} {rate(calls)}, {usec / calls:.0f} µs each" for usec, name, calls in spent[:top]
    )


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


_redis: list[subprocess.Popen[bytes]] = []


@contextlib.contextmanager
def redis_server(directory: Path) -> Iterator[Redis]:
    """``redis-server`` as ``tests/redis_server.py`` runs it (AOF everysec, no RDB,
    noeviction), killed with this process should it die first."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = directory / "redis.log"
    argv = [binary, "--port", str(port), "--bind", HOST, "--dir", str(directory)]
    argv += ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
    argv += ["--maxmemory-policy", "noeviction", "--protected-mode", "no"]
    argv += ["--daemonize", "no", "--logfile", str(log_path)]
    proc = subprocess.Popen(
        argv,
        cwd=directory,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    _redis.append(proc)
    try:
        deadline = time.monotonic() + 10
        while not _answers_ping(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.02)
        yield Redis(port, proc.pid, log_path)
    finally:
        if proc.poll() is None:
            proc.terminate()  # redis fsyncs its AOF and exits
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# -- CPU meters ------------------------------------------------------------------------
def machine_busy_seconds() -> float:
    """CPU time spent by everything on this machine so far (``/proc/stat``, not idle
    or iowait)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ticks = [int(v) for v in fields]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / TICKS  # minus idle, iowait


@dataclass
class Usage:
    """CPU used during one measurement, in cores (CPU seconds / wall seconds)."""

    wall: float
    client: float
    servers: dict[str, float]
    redis: float
    others: float
    """Everything else on the machine (other users' processes, the kernel)."""

    def __str__(self) -> str:
        servers = " / ".join(f"{v:.2f}" for v in self.servers.values())
        return f"{self.client:.2f} / {servers} / {self.redis:.2f} / {self.others:.2f}"


class Meter:
    def __init__(self, servers: dict[str, Server], redis: Redis) -> None:
        self.servers = servers
        self.redis = redis

    def _read(self) -> tuple[float, float, dict[str, float], float, float]:
        return (
            time.perf_counter(),
            time.process_time(),
            {name: s.cpu_seconds() for name, s in self.servers.items()},
            self.redis.cpu_seconds(),
            machine_busy_seconds(),
        )

    @contextlib.contextmanager
    def measure(self, out: list[Usage]) -> Iterator[None]:
        wall0, client0, servers0, redis0, busy0 = self._read()
        yield
        wall1, client1, servers1, redis1, busy1 = self._read()
        wall = wall1 - wall0
        client = (client1 - client0) / wall
        servers = {name: (servers1[name] - servers0[name]) / wall for name in servers0}
        redis = (redis1 - redis0) / wall
        others = (busy1 - busy0) / wall - client - sum(servers.values()) - redis
        out.append(Usage(wall, client, servers, redis, max(0.0, others)))


def median_usage(usages: list[Usage]) -> Usage:
    names = list(usages[0].servers)
    return Usage(
        statistics.median(u.wall for u in usages),
        statistics.median(u.client for u in usages),
        {name: statistics.median(u.servers[name] for u in usages) for name in names},
        statistics.median(u.redis for u in usages),
        statistics.median(u.others for u in usages),
    )


# -- pairs of samples ----------------------------------------------------------------------
@dataclass
class Pairs:
    """Interleaved samples, 1 process / 2 processes; ratios are two / one."""

    one: list[float] = field(default_factory=list)
    two: list[float] = field(default_factory=list)

    def add(self, one: float, two: float) -> None:
        self.one.append(one)
        self.two.append(two)

    @property
    def ratio(self) -> float:
        return statistics.median(
            b / a if a else math.inf for a, b in zip(self.one, self.two, strict=True)
        )

    def samples(self, fmt: Callable[[float], str]) -> str:
        return ", ".join(f"{fmt(a)}/{fmt(b)}" for a, b in zip(self.one, self.two, strict=True))


@dataclass
class Bench:
    quick: bool
    a: Server
    b: Server
    meter: Meter
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)
    steer_rows: list[tuple[str, str, str, str]] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    anomalies: list[str] = field(default_factory=list)
    conversations: list[int] = field(default_factory=lambda: [0, 0])
    """Conversations made through A and B so far (each holds at most 1 000 live)."""

    def made(self, per_port: list[int]) -> None:
        for i, count in enumerate(per_port):
            self.conversations[i] += count

    def note(self, line: str) -> None:
        self.details.append(line)
        print(f"  {line}", file=sys.stderr, flush=True)

    def anomaly(self, line: str) -> None:
        self.anomalies.append(line)
        print(f"  ANOMALY: {line}", file=sys.stderr, flush=True)


# -- checks ----------------------------------------------------------------------------
def post_run(port: int, query: str, conversation: str | None = None) -> StreamResult:
    body: dict[str, str] = {"query": query}
    if conversation is not None:
        body["conversation_id"] = conversation
    return http_stream(port, "POST", f"{API}/agents/stream", json.dumps(body).encode())


def last_seq(result: StreamResult) -> int:
    ids = [line for line in result.tail.split(b"\n") if line.startswith(b"id: ")]
    if not ids:
        raise RuntimeError(f"no event id in the stream: ...{result.tail[-300:]!r}")
    return int(ids[-1][4:])


# -- 1. runs/s -------------------------------------------------------------------------
async def runs_round(
    ports: list[int], total: int, events: int, query: str = "hi"
) -> tuple[float, list[int]]:
    """``total`` new-conversation runs by CLIENTS keep-alive connections, client i on
    ``ports[i % len(ports)]``; (runs/s, runs per port)."""
    conns = [await Exchange.open(ports[i % len(ports)]) for i in range(CLIENTS)]
    request = request_bytes("POST", f"{API}/agents/stream", json.dumps({"query": query}).encode())
    left = total
    done = [0] * CLIENTS

    async def client(i: int, conn: Exchange) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            response = await conn.exchange(request)
            if not response.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"runs: POST answered {response[:300]!r}")
            if (
                response.count(DATA) != events
                or b'"stop_reason":"completed"' not in response[-600:]
            ):
                raise RuntimeError(
                    f"runs: a stream is not {events} events ending completed: "
                    f"...{response[-300:]!r}"
                )
            done[i] += 1

    try:
        start = time.perf_counter()
        await asyncio.gather(*(client(i, c) for i, c in enumerate(conns)))
        elapsed = time.perf_counter() - start
    finally:
        for conn in conns:
            conn.close()
    return total / elapsed, [sum(done[i :: len(ports)]) for i in range(len(ports))]


def fig_runs(bench: Bench) -> None:
    total = 200 if bench.quick else 1000
    rounds = 2 if bench.quick else 3
    a, b = bench.a.port, bench.b.port
    sample = post_run(a, "hi")
    check_run(sample, "runs warm-up")
    events = sample.events
    check_run(post_run(b, "hi"), "runs warm-up on B", events)
    # The steady state of a server that has run a while: each process holds
    # max_live_conversations (1 000) conversations, so every new one unloads another.
    warm = 200 if bench.quick else 1100
    for half in ("first", "second"):
        fill, per = uvloop.run(runs_round([a, b], warm, events))
        bench.made(per)
        bench.note(f"runs warm-up, {half} {warm} runs (half on A, half on B): {fill:.0f}/s")
    redis = bench.meter.redis
    stats0 = redis.command_stats()
    rate = Pairs()
    usage: dict[str, list[Usage]] = {"one": [], "two": []}
    for r in range(rounds):
        # alternate which goes first: runs/s drifts as the conversations pile up
        for side in ("one", "two") if r % 2 == 0 else ("two", "one"):
            with bench.meter.measure(usage[side]):
                if side == "one":
                    one, per = uvloop.run(runs_round([a], total, events))
                else:
                    two, per = uvloop.run(runs_round([a, b], total, events))
                    on_a = per[0]
                bench.made(per)
        rate.add(one, two)
        bench.note(
            f"runs round {r}: 1 process {one:.0f}/s (CPU {usage['one'][-1]}), "
            f"2 processes {two:.0f}/s, {on_a} of {total} on A (CPU {usage['two'][-1]})"
        )
    bench.note(
        "runs: Redis commands by CPU (per run, µs per call): "
        + top_commands(stats0, redis.command_stats(), 2 * rounds * total)
    )
    one_u, two_u = median_usage(usage["one"]), median_usage(usage["two"])
    bench.rows.append(
        (
            f"runs/s: {total:,} short runs (`hi`, {events} events, a new conversation each), "
            f"{CLIENTS} clients",
            f"{statistics.median(rate.one):.0f}",
            f"{statistics.median(rate.two):.0f}",
            f"{rate.ratio:.2f}",
        )
    )
    bench.rows.append((CPU_ROW, str(one_u), str(two_u), ""))
    bench.note(f"runs/s per pair (1 process/2 processes): {rate.samples(lambda v: f'{v:.0f}')}")


# -- 2. wire events/s ------------------------------------------------------------------
def follow_to_done(
    port: int, path: str, headers: dict[str, str], ready: threading.Event
) -> tuple[int, float, bytes]:
    """A follow stream on a blocking socket, read until its first ``done``;
    (events, perf_counter at the done, the stream's tail). ``ready`` is set once
    the response head arrived."""
    request = _request("GET", path, headers=headers, close=True)
    events = 0
    tail = b"\n"
    head = b""
    with socket.create_connection((HOST, port), timeout=120) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(request)
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(READ_SIZE)
            if not chunk:
                raise RuntimeError(f"follow {path}: closed before the head: {head!r}")
            head += chunk
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"follow {path}: {head[:300]!r}")
        ready.set()
        chunk = head[head.index(b"\r\n\r\n") + 4 :]
        while True:
            events += chunk.count(DATA) + (tail[-5:] + chunk[:5]).count(DATA)
            tail = (tail + chunk)[-4096:]
            if b'"event":"done"' in tail:
                return events, time.perf_counter(), tail
            chunk = sock.recv(READ_SIZE)
            if not chunk:
                raise RuntimeError(f"follow {path}: closed before done: ...{tail[-300:]!r}")
            if len(chunk) < 16 * 1024:
                time.sleep(0.0002)


def parallel_streams(
    bench: Bench, servers: list[Server], query: str, events: int, what: str
) -> float:
    """PARALLEL_RUNS runs at once, run i on ``servers[i % len(servers)]``; total
    events/s, or NaN if the server cut a stream with a resume hint (an anomaly: these
    clients read as fast as they can)."""
    names = {bench.a.port: "A", bench.b.port: "B"}
    with ThreadPoolExecutor(PARALLEL_RUNS) as pool:
        start = time.perf_counter()
        futures = [
            pool.submit(post_run, servers[i % len(servers)].port, query)
            for i in range(PARALLEL_RUNS)
        ]
        results = [f.result() for f in futures]
        elapsed = time.perf_counter() - start
    cut = False
    for i, result in enumerate(results):
        server = names[servers[i % len(servers)].port]
        if result.hints:
            cut = True
            hint = result.tail[result.tail.rfind(b": resume") :].strip()
            bench.anomaly(
                f"{what}, run {i} on {server}: the server cut the POST stream with a resume "
                f"hint ({hint.decode(errors='replace')!r}) after {result.events:,} of "
                f"{events:,} events, {result.elapsed:.2f} s in (the client read all the "
                f"time; client CPU {result.cpu / result.elapsed:.0%})"
            )
            continue
        check_run(result, f"{what}, run {i} on {server}", events)
    return math.nan if cut else sum(r.events for r in results) / elapsed


def fig_wire(bench: Bench) -> None:
    n_words = 5_000 if bench.quick else 20_000
    rounds = 2 if bench.quick else 3
    query = "/delay 0\n" + " ".join(f"w{i}" for i in range(n_words))
    a, b = bench.a.port, bench.b.port
    warm = post_run(a, query)
    check_run(warm, "wire warm-up")
    events = warm.events
    check_run(post_run(b, query), "wire warm-up on B", events)
    redis = bench.meter.redis
    stats0 = redis.command_stats()
    rate = Pairs()
    usage: dict[str, list[Usage]] = {"one": [], "two": []}
    for r in range(rounds):
        for side in ("one", "two") if r % 2 == 0 else ("two", "one"):
            with bench.meter.measure(usage[side]):
                if side == "one":
                    one = parallel_streams(
                        bench, [bench.a], query, events, f"wire round {r}, 1 process"
                    )
                else:
                    two = parallel_streams(
                        bench, [bench.a, bench.b], query, events, f"wire round {r}, 2 processes"
                    )
        if math.isnan(one) or math.isnan(two):
            bench.note(f"wire round {r}: a stream was cut (see the anomalies), pair not counted")
            continue
        rate.add(one, two)
        bench.note(
            f"wire round {r}: 1 process {k(one)}/s (CPU {usage['one'][-1]}), "
            f"2 processes {k(two)}/s (CPU {usage['two'][-1]})"
        )
    bench.note(
        "wire: Redis commands by CPU (per event, µs per call): "
        + top_commands(stats0, redis.command_stats(), 2 * rounds * PARALLEL_RUNS * events)
    )
    if not rate.one:
        raise RuntimeError("wire: every round had a stream cut with a resume hint")
    one_u, two_u = median_usage(usage["one"]), median_usage(usage["two"])
    bench.rows.append(
        (
            f"wire events/s: {PARALLEL_RUNS} runs of {n_words:,} words in parallel "
            f"({events:,} events each), total",
            k(statistics.median(rate.one)),
            k(statistics.median(rate.two)),
            f"{rate.ratio:.2f}",
        )
    )
    bench.rows.append((CPU_ROW, str(one_u), str(two_u), ""))
    bench.note(f"wire events/s per pair (1 process/2 processes): {rate.samples(k)}")

    # one run on A, read by its POST (on A) and by a follow stream on B
    own, cross = [], []
    usage_x: list[Usage] = []
    for r in range(rounds):
        conversation = f"wire-x-{r}-{uuid.uuid4().hex[:8]}"
        created = post_run(a, "hi", conversation)
        check_run(created, "wire: creating the conversation")
        after = last_seq(created)
        ready = threading.Event()
        with ThreadPoolExecutor(2) as pool, bench.meter.measure(usage_x):
            follow = pool.submit(
                follow_to_done,
                b,
                f"{API}/conversations/{conversation}/stream?follow=true",
                {"Last-Event-ID": str(after)},
                ready,
            )
            if not ready.wait(30):
                raise RuntimeError("wire: the follow stream on B got no response head")
            start = time.perf_counter()
            run = pool.submit(post_run, a, query, conversation).result()
            seen, done_at, tail = follow.result()
        check_run(run, "wire: the run on A")  # no conversation_started: 1 less
        if seen != run.events:
            bench.anomaly(
                f"wire round {r}: the follow stream on B saw {seen} events, "
                f"the POST on A {run.events}"
            )
        if b'"stop_reason":"completed"' not in tail[-1000:]:
            bench.anomaly(f"wire round {r}: B's done is not completed: ...{tail[-300:]!r}")
        own.append(run.rate)
        cross.append(seen / (done_at - start))
        bench.note(
            f"wire cross round {r}: read on A {k(own[-1])}/s, on B {k(cross[-1])}/s "
            f"(B's done {(done_at - start - run.elapsed) * 1000:+.0f} ms after A's EOF; "
            f"CPU {usage_x[-1]})"
        )
    bench.rows.append(
        (
            f"one run of {n_words:,} words on A: events/s read on A (POST) / on B "
            "(follow stream, from Redis) at once",
            f"{k(statistics.median(own))} / {k(statistics.median(cross))}",
            "",
            "",
        )
    )
    bench.rows.append((CPU_ROW, str(median_usage(usage_x)), "", ""))


# -- 3. steer latency ------------------------------------------------------------------
@dataclass
class SteerSamples:
    to_a: list[float] = field(default_factory=list)
    to_b: list[float] = field(default_factory=list)
    health_a: list[float] = field(default_factory=list)
    health_b: list[float] = field(default_factory=list)
    warm_a: list[float] = field(default_factory=list)
    warm_b: list[float] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)


async def timed(conn: Conn, method: str, path: str, body: bytes = b"") -> tuple[float, int, bytes]:
    start = time.perf_counter()
    response = await conn.request(method, path, body)
    return (time.perf_counter() - start) * 1000, response.status, response.body


async def steer_round(
    bench: Bench, conversation: str, steers: int, samples: SteerSamples, r: int
) -> None:
    a, b = bench.a.port, bench.b.port
    run = await Conn.open(a)
    body = json.dumps({"query": SLEEP_RUN, "conversation_id": conversation}).encode()
    run.send("POST", f"{API}/agents/stream", body)
    status, head = await run.head()
    if status != 200:
        raise RuntimeError(f"steer: the run's POST answered {status}")
    seen = bytearray()
    busy = asyncio.Event()

    def on_chunk(data: bytes) -> None:
        seen.extend(data)
        if b'"event":"tool_call_started"' in seen[-len(data) - 40 :]:
            busy.set()

    reading = asyncio.create_task(run.body(head, on_chunk))
    conn_a, conn_b = await Conn.open(a), await Conn.open(b)
    try:
        async with asyncio.timeout(15):
            await busy.wait()
        path = f"{API}/conversations/{conversation}/messages"
        for i in range(steers + 1):
            order = [(conn_a, "a"), (conn_b, "b")]
            if (i + r) % 2:
                order.reverse()
            for conn, side in order:
                message = {"content": "x", "mode": "steer", "id": f"s-{r}-{i}-{side}"}
                ms, status, reply = await timed(conn, "POST", path, json.dumps(message).encode())
                if status != 202:
                    bench.anomaly(f"steer to {side.upper()}: HTTP {status}: {reply[:300]!r}")
                    samples.statuses.append(f"{side}:{status}")
                    continue
                if b'"queued":true' not in reply.replace(b" ", b""):
                    bench.anomaly(f"steer to {side.upper()}: not queued: {reply[:300]!r}")
                if i == 0:
                    (samples.warm_a if side == "a" else samples.warm_b).append(ms)
                else:
                    (samples.to_a if side == "a" else samples.to_b).append(ms)
                await asyncio.sleep(0.01)
                ms, status, _ = await timed(conn, "GET", "/healthz")
                if status != 200:
                    bench.anomaly(f"GET /healthz on {side.upper()}: HTTP {status}")
                elif i:
                    (samples.health_a if side == "a" else samples.health_b).append(ms)
                await asyncio.sleep(0.01)
        if b'"event":"done"' in seen:
            bench.anomaly(f"steer round {r}: the sleeping run ended before the abort")
        # drop the queued steers, stop the run, and see its stream end
        queue = await conn_a.request("DELETE", f"{API}/conversations/{conversation}/queue")
        if queue.status != 200:
            bench.anomaly(f"steer round {r}: DELETE queue: HTTP {queue.status}: {queue.body!r}")
        stopped = await conn_a.request("POST", f"{API}/conversations/{conversation}/abort")
        if stopped.status not in (200, 202):
            bench.anomaly(f"steer round {r}: abort: HTTP {stopped.status}: {stopped.body!r}")
        async with asyncio.timeout(15):
            await reading
        if b'"event":"done"' not in seen[-2000:]:
            bench.anomaly(f"steer round {r}: the run's stream ended without done")
    finally:
        reading.cancel()
        for conn in (run, conn_a, conn_b):
            await conn.close()


def fig_steer(bench: Bench, when: str) -> None:
    rounds = 2 if bench.quick else 5
    steers = 10
    samples = SteerSamples()
    usage: list[Usage] = []
    stats0 = bench.meter.redis.command_stats()
    for r in range(rounds):
        conversation = f"steer-{r}-{uuid.uuid4().hex[:8]}"
        check_run(post_run(bench.a.port, "hi", conversation), "steer: creating")
        bench.made([1])
        with bench.meter.measure(usage):
            uvloop.run(steer_round(bench, conversation, steers, samples, r))
        bench.note(f"steer ({when}) round {r}: CPU {usage[-1]}")

    def stats(values: list[float]) -> tuple[str, str, str]:
        if not values:
            return "—", "—", "—"
        return (
            f"{percentile(values, 50):.2f} ms",
            f"{percentile(values, 99):.2f} ms",
            f"{max(values):.2f} ms",
        )

    n = len(samples.to_a)
    bench.note(
        f"steer ({when}): Redis commands by CPU (per steer, µs per call): "
        + top_commands(stats0, bench.meter.redis.command_stats(), 2 * rounds * (steers + 1))
    )
    bench.steer_rows += [
        (f"*{when}*", "", "", ""),
        (f"steer `POST …/messages` → 202 to A, the lease holder ({n})", *stats(samples.to_a)),
        (
            f"same to B, queued there without the lease ({len(samples.to_b)})",
            *stats(samples.to_b),
        ),
        ("`GET /healthz` on A (HTTP floor, same connections)", *stats(samples.health_a)),
        ("`GET /healthz` on B", *stats(samples.health_b)),
    ]
    bench.note(
        f"steer ({when}): {rounds} rounds of {steers} steers each way + 1 warm-up each way; "
        f"warm-up ms to A {', '.join(f'{v:.1f}' for v in samples.warm_a)}; "
        f"to B {', '.join(f'{v:.1f}' for v in samples.warm_b)}"
    )
    cores = median_usage(usage)
    bench.note(f"steer ({when}): CPU cores (client / A / B / Redis / others): {cores}")


# -- main ------------------------------------------------------------------------------
def fig_idle(bench: Bench) -> None:
    """CPU of the idle processes (lease renewals, the readers' blocked XREADs)."""
    usage: list[Usage] = []
    with bench.meter.measure(usage):
        time.sleep(5)
    a, b = bench.conversations
    bench.rows.append(
        (
            f"idle, 5 s, after {a:,} / {b:,} conversations made through A / B: "
            "CPU cores client / A / B / Redis / others",
            str(usage[0]),
            "",
            "",
        )
    )


FIGURES = ("steer", "runs", "wire")


def steps(chosen: list[str]) -> list[tuple[str, Callable[[Bench], None]]]:
    """The figures in order: steer latency on fresh servers and again after runs/s
    has left ~1 000 live conversations on each process (a cost that grows with them)."""
    out: list[tuple[str, Callable[[Bench], None]]] = []
    if "steer" in chosen:
        out.append(("steer", lambda bench: fig_steer(bench, "fresh servers")))
    if "runs" in chosen:
        out.append(("runs", fig_runs))
    if "wire" in chosen:
        out.append(("wire", fig_wire))
    if "steer" in chosen and "runs" in chosen:

        def again(bench: Bench) -> None:
            a, b = bench.conversations
            fig_steer(bench, f"after runs/s: {a:,} / {b:,} conversations made through A / B")

        out.append(("steer", again))
    out.append(("idle", fig_idle))
    return out


def redis_version() -> str:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    with contextlib.suppress(Exception):
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=5)
        for part in out.stdout.split():
            if part.startswith("v="):
                return part[2:]
    return "?"


def server_errors(server: Server, name: str) -> list[str]:
    """Tracebacks, 5xx responses and ERROR/WARNING lines of a server's log."""
    lines = []
    for line in server.log_path.read_text(errors="replace").splitlines():
        if (
            "Traceback" in line
            or "ERROR" in line
            or "WARNING" in line
            or '" 5' in line
            or "Exception" in line
        ):
            lines.append(f"{name}: {line.strip()[:300]}")
    return lines


def print_report(bench: Bench, started: str, load_before: str, elapsed: float) -> None:
    print(f"date: {started}; machine: {machine()}; redis-server {redis_version()}")
    print(f"load average before / after: {load_before} / {load()}; took {elapsed:.0f} s")
    print()
    print("| figure | 1 process | 2 processes | 2 / 1 |")
    print("|---|---|---|---|")
    for row in bench.rows:
        print("| " + " | ".join(row) + " |")
    if bench.steer_rows:
        print()
        print("| steer latency, run on A | p50 | p99 | max |")
        print("|---|---|---|---|")
        for row in bench.steer_rows:
            print("| " + " | ".join(row) + " |")
    print()
    for line in bench.details:
        print(f"- {line}")
    if bench.anomalies:
        print()
        print("anomalies:")
        for line in bench.anomalies:
            print(f"- {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller figures (< 1 min)")
    parser.add_argument(
        "--only", default=",".join(FIGURES), help=f"comma-separated figures: {','.join(FIGURES)}"
    )
    args = parser.parse_args()
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(FIGURES))
    if unknown:
        parser.error(f"unknown figure(s) {', '.join(unknown)}; known: {', '.join(FIGURES)}")

    started = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    load_before = load()
    t0 = time.perf_counter()
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="steerline-scale-") as tmp_name:
        tmp = Path(tmp_name)

        def interrupted(signum: int, _frame: object) -> None:
            kill_all()
            for proc in _redis:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            shutil.rmtree(tmp, ignore_errors=True)
            print(f"\ninterrupted by signal {signum}", file=sys.stderr, flush=True)
            os._exit(128 + signum)

        signal.signal(signal.SIGTERM, interrupted)
        signal.signal(signal.SIGINT, interrupted)
        config = tmp / "steerline.toml"
        config.write_text(CONFIG)
        with contextlib.ExitStack() as stack:
            redis = stack.enter_context(redis_server(tmp / "redis"))
            store = f"redis://{HOST}:{redis.port}/0?lease_ttl={LEASE_TTL}"
            servers: dict[str, Server] = {}
            for name in ("A", "B"):
                port = free_port()
                servers[name] = stack.enter_context(
                    running(
                        steerline_argv(port, store, config),
                        port,
                        cwd=tmp,
                        log_path=tmp / f"server-{name}.log",
                    )
                )
            bench = Bench(args.quick, servers["A"], servers["B"], Meter(servers, redis))
            bench.note(
                f"Redis {store} (AOF everysec), servers A :{bench.a.port}, B :{bench.b.port}"
            )
            for name, run in steps(chosen):
                print(f"[{name}] ...", file=sys.stderr, flush=True)
                begun = time.perf_counter()
                try:
                    run(bench)
                except Exception as exc:  # one broken figure must not hide the others
                    failed.append(name)
                    traceback.print_exc()
                    bench.anomaly(f"{name} FAILED: {type(exc).__name__}: {exc}")
                print(f"[{name}] {time.perf_counter() - begun:.0f} s", file=sys.stderr, flush=True)
            memory = redis.info("memory").get("used_memory_human", "?")
            bench.note(f"Redis used_memory at the end: {memory}")
            for name, server in servers.items():
                for line in server_errors(server, name):
                    bench.anomaly(f"server log {line}")
        print_report(bench, started, load_before, time.perf_counter() - t0)
    if failed:
        sys.exit(f"figures that failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
