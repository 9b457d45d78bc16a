"""Fixtures of the web page tests: Debian's Chromium driven by Playwright (no
browser is downloaded) against real ``steerline serve`` processes.

Playwright's sync API keeps an event loop of its own in the test's thread,
so anything asynchronous of the harness (``Served.wait_ready``) runs in a
thread of its own (:func:`ready`).
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.server.conftest import make_server, served
from tests.server.harness import Served

__all__ = ["make_server", "served"]  # the harness' fixtures, reused here

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def ready(server: Served) -> Served:
    """Wait until ``server`` answers ``/healthz`` (in a thread: see the module doc)."""
    failure: list[BaseException] = []

    def wait() -> None:
        try:
            anyio.run(server.wait_ready)
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=wait)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "steerline serve did not become ready"
    if failure:
        raise failure[0]
    return server


def start_served(
    processes: list[Served], workdir: Path, db: Path | None = None, port: int | None = None
) -> Served:
    """A ``steerline serve`` on ``db`` (sqlite), started in ``workdir`` (which may
    hold a ``steerline.toml``), registered for the ``served`` fixture to kill."""
    server = Served(db or workdir / "steerline.db", workdir, port=port)
    processes.append(server)
    return ready(server)


@pytest.fixture(scope="session")
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"no Chromium at {CHROMIUM}; scripts/test installs Debian's chromium")
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Any]:
    """One headless Chromium per test module (each test opens its own contexts)."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=15_000)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def page_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One ``steerline serve`` shared by a module's tests (each test has its own
    conversations)."""
    workdir = tmp_path_factory.mktemp("web-server")
    processes: list[Served] = []
    try:
        yield start_served(processes, workdir)
    finally:
        for process in processes:
            process.kill()
