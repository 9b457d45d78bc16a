"""A real terminal for tests: a pty, a child process on it, and pyte reading the screen.

The child (``steerline chat``) gets a pty of a fixed size as stdin, stdout and
stderr; a thread reads everything it writes into a pyte screen, which answers
cursor position requests as a terminal does. Tests look at the screen with
:meth:`Terminal.wait_for`, which polls it against a deadline (no sleeps).

Like the terminals ``steerline chat`` is written for, it honours synchronized
updates (DEC mode 2026): what the child writes between ``ESC [?2026h`` and
``ESC [?2026l`` (an erase, the lines printed above, the redraw: three writes)
is shown at once at the end. pyte alone would show the steps in between, a
screen no user sees, and a test could catch one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pyte

_SYNC_MARK = re.compile(rb"\x1b\[\?2026([hl])")


class _Screen(pyte.Screen):  # type: ignore[misc]
    def __init__(self, columns: int, rows: int, reply: Callable[[str], None]) -> None:
        super().__init__(columns, rows)
        self._reply = reply

    def write_process_input(self, data: str) -> None:
        self._reply(data)  # answers to DSR/CPR (ESC [ 6 n)


class Terminal:
    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: dict[str, str],
        columns: int = 100,
        rows: int = 50,
    ) -> None:
        self.columns, self.rows = columns, rows
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        self.master = master
        self.screen = _Screen(columns, rows, self._answer)
        self.stream = pyte.ByteStream(self.screen)
        self.output = bytearray()
        self._shown: list[str] = [""] * rows
        """The screen as last shown: not updated inside a synchronized update."""
        self._in_sync = False
        self._scan = b""
        self._changed = threading.Condition()
        self.closed = False
        self.process = subprocess.Popen(
            list(argv),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env={**env, "TERM": "xterm-256color"},
            start_new_session=True,
        )
        os.close(slave)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    # -- the pty ----------------------------------------------------------------
    def _answer(self, data: str) -> None:
        with contextlib.suppress(OSError):
            os.write(self.master, data.encode())

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the child closed its side
                data = b""
            with self._changed:
                if not data:
                    self.closed = True
                    self._show()
                    return
                self.output += data
                # pyte gets every byte at once (its answers to cursor position
                # requests must see them); the screen is shown when no
                # synchronized update is open
                self.stream.feed(data)
                self._scan += data
                marks = _SYNC_MARK.findall(self._scan)
                if marks:
                    self._in_sync = marks[-1] == b"h"
                self._scan = self._scan[-7:]  # a mark split across two reads
                if not self._in_sync:
                    self._show()

    def _show(self) -> None:
        self._shown = [line.rstrip() for line in self.screen.display]
        self._changed.notify_all()

    def send(self, keys: str | bytes) -> None:
        os.write(self.master, keys.encode() if isinstance(keys, str) else keys)

    # -- the screen ---------------------------------------------------------------
    def lines(self) -> list[str]:
        with self._changed:
            return list(self._shown)

    def text(self) -> str:
        """The screen, one row per line, trailing spaces removed."""
        return "\n".join(self.lines()).rstrip("\n")

    def words(self) -> str:
        """The screen's words separated by single spaces (wrapped lines become whole)."""
        return " ".join(self.text().split())

    def input_line(self) -> str:
        """The last row that starts with the input prompt ``> ``."""
        rows = [row for row in self.lines() if row.startswith(">")]
        return rows[-1] if rows else ""

    def wait_for(self, condition: str | Callable[[Terminal], bool], timeout: float = 15.0) -> None:
        """Wait until ``condition`` (a text on the screen, or a predicate) holds."""

        def met() -> bool:
            if isinstance(condition, str):
                return condition in self.text() or " ".join(condition.split()) in self.words()
            return condition(self)

        deadline = time.monotonic() + timeout
        with self._changed:
            while not met():
                left = deadline - time.monotonic()
                if left <= 0 or (self.closed and not met()):
                    what = condition if isinstance(condition, str) else condition.__doc__
                    raise AssertionError(
                        f"not on screen after {timeout}s: {what!r}\n--- screen ---\n{self.text()}"
                    )
                # woken by new output; the timeout also re-checks time-based predicates
                self._changed.wait(min(left, 0.1))

    # -- the end ------------------------------------------------------------------
    def wait_exit(self, timeout: float = 15.0) -> int:
        return self.process.wait(timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                self.send("\x04")  # Ctrl+D on the (hopefully empty) input
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self._reader.join(5)
        with contextlib.suppress(OSError):
            os.close(self.master)
