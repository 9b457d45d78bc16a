"""A first user's friction points (issue 9): one clear line, never a traceback."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import steerline
from tests.server.harness import steerline_script


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [steerline_script(), *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_version() -> None:
    result = subprocess.run(
        [steerline_script(), "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stdout.strip() == f"steerline {steerline.__version__}"


def test_a_busy_port_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = run("serve", "--port", str(port), "--store", "memory://", cwd=tmp_path)
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_bad_store_path_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    result = run(
        "serve", "--port", str(port), "--store", "sqlite:////no/such/dir/x.db", cwd=tmp_path
    )
    assert result.returncode == 2
    assert "/no/such/dir/x.db" in result.stderr and "No such file or directory" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
