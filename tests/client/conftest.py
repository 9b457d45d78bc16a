"""Fixtures of the SDK tests: the server fixtures of tests/server (reused, not
copied) and one ``steerline serve`` process shared by a module's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from tests.server.conftest import make_server, server
from tests.server.harness import Served

__all__ = ["make_server", "serve_config", "server", "shared_served"]

SERVE_CONFIG = """\
[server.limits]
# a fast heartbeat, so a short stall timeout never fires on a healthy stream
ping_interval = 0.2
# the SSE retry: hint the SDK takes as its first reconnection delay
retry_ms = 20
requests_per_minute = 1000000
max_streams_per_tenant = 1000
"""


def serve_config(workdir: Path) -> None:
    """``steerline serve`` reads ``./steerline.toml``; Served runs it in ``workdir``."""
    (workdir / "steerline.toml").write_text(SERVE_CONFIG)


@pytest.fixture(scope="module")
def shared_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One ``steerline serve`` (sqlite) for the tests of a module."""
    workdir = tmp_path_factory.mktemp("serve")
    serve_config(workdir)
    process = Served(workdir / "db.sqlite", workdir)
    try:
        anyio.run(process.wait_ready)
        yield process
    finally:
        process.kill()
