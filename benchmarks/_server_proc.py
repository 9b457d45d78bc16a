"""Shared helpers of the server benchmarks: servers in subprocesses, their CPU and memory.

Each server runs in its own process (its own GIL), bound to 127.0.0.1 on a
free port; :func:`running` kills it in ``finally``, and the kernel kills it
too should the benchmark process die first (``PR_SET_PDEATHSIG``), so a
crashed or killed benchmark leaves no server behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx2

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
STEERLINE = VENV_BIN / "steerline"

START_TIMEOUT = 30.0

_live: set[subprocess.Popen[bytes]] = set()
"""Servers started by :func:`running` and not stopped yet (for :func:`kill_all`)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Server:
    url: str
    port: int
    pid: int
    log_path: Path

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far (all its threads)."""
        return cpu_seconds(self.pid)

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """From ``/proc/PID/stat`` (Linux); NaN elsewhere. Resolution: one clock tick (10 ms)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return float("nan")
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (``VmRSS`` of ``/proc/PID/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment without ``STEERLINE_*`` variables (a caller's settings must not
    leak into a benchmarked server), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEERLINE_")}
    env.update(extra or {})
    return env


@contextlib.contextmanager
def running(
    argv: list[str],
    port: int,
    *,
    cwd: Path,
    log_path: Path,
    env: Mapping[str, str] | None = None,
) -> Iterator[Server]:
    """Start ``argv`` (a server listening on ``port``), yield it once ``/healthz``
    answers 200, stop it after (also on errors)."""
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=clean_env(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        _live.add(proc)
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"server {argv[:3]} exited with {proc.returncode}:\n"
                        f"{log_path.read_text(errors='replace')[-2000:]}"
                    )
                try:
                    if httpx2.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                        break
                except httpx2.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"server {argv[:3]} did not answer /healthz within {START_TIMEOUT:.0f} s:\n"
                        f"{log_path.read_text(errors='replace')[-2000:]}"
                    )
                time.sleep(0.05)
            yield Server(url, port, proc.pid, log_path)
        finally:
            stop(proc)
            _live.discard(proc)


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


def kill_all() -> None:
    """SIGKILL every server still running (a signal handler's last resort)."""
    for proc in list(_live):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            proc.wait(timeout=5)
        _live.discard(proc)


def steerline_argv(port: int, store: str, config: Path | None = None) -> list[str]:
    argv = [str(STEERLINE), "serve", "--port", str(port), "--store", store]
    if config is not None:
        argv += ["--config", str(config)]
    return argv
