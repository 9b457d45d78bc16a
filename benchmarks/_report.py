"""What ``table.py`` and ``scale.py`` print alike: number formats, the machine
line and the check that a streamed run ended as it should."""

from __future__ import annotations

import contextlib
import math
import os
import platform
from pathlib import Path

from clients import StreamResult


def k(value: float) -> str:
    """Events/s: ``29.7 k``, ``140 k``."""
    if value >= 100_000:
        return f"{value / 1000:.0f} k"
    if value >= 1000:
        return f"{value / 1000:.1f} k"
    return f"{value:.0f}"


def num(value: float) -> str:
    if math.isinf(value):
        return "inf"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def pct(value: float) -> str:
    return f"{value * 100:.0f} %"


def machine() -> str:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores ({model}), Python {platform.python_version()}"


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def check_run(result: StreamResult, what: str, events: int | None = None) -> None:
    """A steerline run's stream: 200, no resume hint, ends with a completed ``done``."""
    if result.status != 200:
        raise RuntimeError(f"{what}: HTTP {result.status}: {result.tail[-500:]!r}")
    if result.hints:
        raise RuntimeError(f"{what}: the server ended the stream with a resume hint")
    if b'"event":"done"' not in result.tail[-1000:]:
        raise RuntimeError(f"{what}: the stream did not end with done: ...{result.tail[-300:]!r}")
    if b'"stop_reason":"completed"' not in result.tail[-1000:]:
        raise RuntimeError(f"{what}: the run did not complete: ...{result.tail[-300:]!r}")
    if events is not None and result.events != events:
        raise RuntimeError(f"{what}: {result.events} events, expected {events}")
