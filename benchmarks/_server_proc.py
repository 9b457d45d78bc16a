"""Shared helpers of the server benchmarks: servers in subprocesses, SSE counting.

Each server runs in its own process (its own core and GIL), bound to
127.0.0.1 on a free port; :func:`running` kills it in ``finally``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
STEERLINE = VENV_BIN / "steerline"

START_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Server:
    url: str
    pid: int

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far (all its threads)."""
        return cpu_seconds(self.pid)


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """From ``/proc/PID/stat`` (Linux); NaN elsewhere. Resolution: one clock tick (10 ms)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return float("nan")
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


@contextlib.contextmanager
def running(argv: list[str], port: int, *, cwd: Path, log_path: Path) -> Iterator[Server]:
    """Start ``argv`` (a server listening on ``port``), yield it, kill it after."""
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"server exited with {proc.returncode}: {log_path.read_text()[-2000:]}"
                    )
                try:
                    if httpx2.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                        break
                except httpx2.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start: {log_path.read_text()[-2000:]}")
                time.sleep(0.05)
            yield Server(url, proc.pid)
        finally:
            stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a graceful uvicorn shutdown), then SIGKILL of its process group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def steerline_argv(port: int, store: str) -> list[str]:
    return [str(STEERLINE), "serve", "--port", str(port), "--store", store]


class SseCounter:
    """Counts ``data:`` lines, ``: resume`` hints and bytes of a raw SSE byte stream."""

    DATA = b"\ndata:"
    HINT = b"\n: resume"

    def __init__(self) -> None:
        self.events = 0
        self.hints = 0
        self.bytes = 0
        self.last = b""
        self._tail = b"\n"  # the stream starts at a line boundary

    def feed(self, chunk: bytes) -> None:
        self.bytes += len(chunk)
        # Keep len(marker) - 1 bytes of the previous text for each marker, so a
        # marker split across chunks is counted once and never twice.
        tail = self._tail
        self.events += (tail[-(len(self.DATA) - 1) :] + chunk).count(self.DATA)
        self.hints += (tail[-(len(self.HINT) - 1) :] + chunk).count(self.HINT)
        self._tail = (tail + chunk)[-600:]
        self.last = self._tail
