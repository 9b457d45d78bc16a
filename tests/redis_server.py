"""Test helper: a real ``redis-server`` process on a free loopback port.

Each ``RedisServer`` owns one directory (its AOF, its log) and one port, kept
across ``restart()`` so data written with ``appendonly`` comes back.

Where ``redis-server`` is missing, tests skip locally; in CI (``CI=true``) a
missing server is an error, so the Redis tests can never silently not run.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import pytest

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def redis_server_binary() -> str:
    """The path of ``redis-server``; skips the test (raises in CI) if it is not installed."""
    found = shutil.which("redis-server")
    if found is not None:
        return found
    if os.environ.get("CI", "").lower() == "true":
        raise RuntimeError(
            "redis-server is missing: CI must run the Redis tests "
            "(scripts/test installs Debian's redis-server when run as root)"
        )
    pytest.skip("redis-server not installed")


def _answers_ping(port: int) -> bool:
    """True once the server on ``port`` replies +PONG (not while it loads its AOF)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            reply = b""
            while b"\r\n" not in reply:
                chunk = sock.recv(64)
                if not chunk:
                    return False
                reply += chunk
            return reply.startswith(b"+PONG")
    except OSError:
        return False


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class RedisServer:
    """One ``redis-server`` on 127.0.0.1, its data and log in ``directory``."""

    def __init__(
        self,
        directory: Path,
        *,
        appendonly: bool = True,
        maxmemory_policy: str = "noeviction",
        cluster: bool = False,
    ) -> None:
        self.binary = redis_server_binary()
        self.directory = Path(directory).resolve()
        self.appendonly = appendonly
        self.maxmemory_policy = maxmemory_policy
        self.cluster = cluster
        """Start as a Redis Cluster node (joined by the test that starts it)."""
        self._bus_port = free_port() if cluster else 0
        """The node-to-node port (by default the port + 10,000: too high for a free port)."""
        self._port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def bus_port(self) -> int:
        """A cluster node's node-to-node port."""
        return self._bus_port

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self._port}/0"

    @property
    def log(self) -> Path:
        return self.directory / "redis.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __repr__(self) -> str:
        return f"RedisServer({self.url}, dir={self.directory})"

    def args(self) -> list[str]:
        return [
            self.binary,
            "--port",
            str(self._port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--maxmemory-policy",
            self.maxmemory_policy,
            "--protected-mode",
            "no",
            "--daemonize",
            "no",
            "--logfile",
            str(self.log),
            *(
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-port",
                    str(self._bus_port),
                ]
                if self.cluster
                else []
            ),
        ]

    def start(self) -> None:
        """Spawn the server and return once it answers PING (within 10 s)."""
        if self.running:
            raise RuntimeError(f"{self!r} is already running")
        self.directory.mkdir(parents=True, exist_ok=True)
        # errors before redis opens its logfile (bad arguments) go to stderr
        stderr_path = self.directory / "redis.stderr"
        with stderr_path.open("ab") as stderr:
            self.process = subprocess.Popen(
                self.args(),
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers_ping(self._port):
            exited = self.process.poll()
            if exited is not None or time.monotonic() > deadline:
                if exited is None:
                    self.kill()
                reason = (
                    f"exited with {exited}"
                    if exited is not None
                    else f"did not answer PING within {START_TIMEOUT:.0f} s"
                )
                raise RuntimeError(
                    f"redis-server on port {self._port} {reason}\n"
                    f"--- {self.log} ---\n{_tail(self.log)}\n"
                    f"--- {stderr_path} ---\n{_tail(stderr_path)}"
                )
            time.sleep(0.02)  # polling a starting process, not synchronising the test

    def stop(self) -> None:
        """SIGTERM and wait: redis fsyncs its AOF before it exits."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL and wait: with ``appendfsync everysec`` up to a second of writes is lost."""
        self._end(signal.SIGKILL)

    def restart(self) -> None:
        """Stop, then start again on the same port and directory (AOF data comes back)."""
        self.stop()
        self.start()

    def _end(self, sig: signal.Signals) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise RuntimeError(
                    f"redis-server on port {self._port} did not exit on {sig.name}\n"
                    f"{_tail(self.log)}"
                ) from None

    def __enter__(self) -> RedisServer:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
