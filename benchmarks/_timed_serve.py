"""``steerline serve`` whose demo model writes down when it produces each word.

Run as ``python benchmarks/_timed_serve.py serve --port ... --store ...`` with
``BENCH_TIMES_FILE=FILE``: exactly the ``steerline`` console script
(``steerline.cli.main:main``), except that ``DemoModel.stream`` is wrapped so
every text part it yields appends ``<time.monotonic()>\\t<word>`` lines to
FILE (one per word of the part, at the moment the model hands the part to the
agent). The live-viewers figure takes these as the events' production times:
``time.monotonic`` is CLOCK_MONOTONIC, one clock for every process of the
machine, so a viewer's arrival time minus this is the event's delivery
latency through the whole server (agent, log, fan-out, socket). Cost: one
line-buffered write per word, at 100 words/s.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import AsyncIterator
from typing import Any


def _install(path: str) -> None:
    from steerline.models import demo
    from steerline.models.base import TextPart

    original = demo.DemoModel.stream
    # O_APPEND: the benchmark may truncate the file between runs
    out = open(path, "a", buffering=1)  # noqa: SIM115 - open for the process's life

    async def stream(self: demo.DemoModel, request: Any) -> AsyncIterator[Any]:
        async for part in original(self, request):
            if isinstance(part, TextPart):
                now = repr(time.monotonic())
                out.write("".join(f"{now}\t{word}\n" for word in part.text.split()))
            yield part

    demo.DemoModel.stream = stream  # type: ignore[method-assign]


def main() -> None:
    path = os.environ.get("BENCH_TIMES_FILE")
    if not path:
        raise SystemExit("_timed_serve.py: set BENCH_TIMES_FILE to the file to write")
    _install(path)
    from steerline.cli.main import main as steerline_main

    sys.argv = ["steerline", *sys.argv[1:]]
    steerline_main()


if __name__ == "__main__":
    main()
