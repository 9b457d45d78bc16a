"""Fixtures that start real servers (see harness.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from steerline.server.settings import ServerSettings
from steerline.service.agents import AgentRegistry
from tests.server.harness import RunningServer, Served, start_server


@pytest.fixture
def make_server() -> Iterator[Callable[..., RunningServer]]:
    servers: list[RunningServer] = []

    def make(
        settings: ServerSettings | None = None,
        registry: AgentRegistry | None = None,
        log_level: str = "warning",
    ) -> RunningServer:
        running = start_server(settings, registry, log_level)
        servers.append(running)
        return running

    yield make
    for running in servers:
        running.stop()


@pytest.fixture
def server(make_server: Callable[..., RunningServer]) -> RunningServer:
    return make_server()


@pytest.fixture
def served() -> Iterator[list[Served]]:
    processes: list[Served] = []
    yield processes
    for process in processes:
        process.kill()
