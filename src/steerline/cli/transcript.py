"""The terminal chat's model: what a conversation looks like, as styled lines.

It knows nothing of terminals or of where events come from. A session feeds
it through a small vocabulary (``user_message``, ``delta``, ``tool_started``,
``queue_changed``, ``run_ended`` ...): the in-process session translates the
agent's native events (:func:`steerline.cli.session.apply_event`), a remote
one will translate wire events. The view asks it for three things:

* :meth:`Transcript.take_committed`: finished lines, each handed out exactly
  once, in order; the view prints them above the input, into the terminal's
  scrollback, where nothing redraws them again;
* :meth:`Transcript.live_lines`: the line still being streamed (the text
  after the last newline of the open block), redrawn with the input;
* :meth:`Transcript.status_line` and :meth:`Transcript.queue_lines`: the state
  (idle / waiting / streaming / thinking / tool running, elapsed seconds) and
  the pending queue.

Lines are lists of ``(style, text)`` fragments, with ``class:`` style names
that the view maps to colours. Every character streamed is kept, in order,
whatever the chunking (``test_transcript.py``); control characters are shown
as ``^X`` so that nothing an agent writes can drive the terminal.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from prompt_toolkit.utils import get_cwidth

Fragment = tuple[str, str]
Line = list[Fragment]
BlockKind = Literal["text", "thinking"]
Who = Literal["prompt", "steer", "follow_up"]
Phase = Literal["idle", "waiting", "thinking", "streaming", "calling", "tool"]

BLOCK_STYLE: dict[BlockKind, str] = {"text": "class:text", "thinking": "class:reasoning"}
WHO_LABEL: dict[Who, str] = {"prompt": "you", "steer": "steer", "follow_up": "follow-up"}
TOOL_RESULT_LINES = 4
"""A tool result longer than this many lines is cut (the model still has all of it)."""
PREVIEW_CHARS = 200
ARGS_CHARS = 300
KEPT_QUEUE_HINT = "Enter on an empty input sends the kept queue"
HANG = "class:hang"
"""In a line's first fragment's style: the rows it wraps into are indented by
that fragment's width (a label such as ``you> ``)."""
MIN_HANGING_WIDTH = 20


def printable(text: str) -> str:
    """``text`` with every control character but newline shown as ``^X``.

    Tabs become four spaces (a terminal would move to a tab stop that the live
    line, drawn by prompt_toolkit, does not know about); carriage returns are
    dropped.
    """
    if not _CONTROL.search(text):
        return text
    return _CONTROL.sub(_show_control, text)


def _show_control(match: re.Match[str]) -> str:
    char = match.group()
    if char == "\t":
        return "    "
    if char == "\r":
        return ""
    code = ord(char)
    return f"^{chr(code ^ 0x40)}" if code < 0x20 or code == 0x7F else f"<{code:02x}>"


_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")
"""C0 controls but newline, DEL, C1 controls: what can start a terminal escape."""


def one_line(text: str, limit: int = PREVIEW_CHARS) -> str:
    """A single-line preview: newlines shown as ``⏎``, cut at ``limit`` characters."""
    flat = printable(text).replace("\n", " ⏎ ").strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def line_text(line: Line) -> str:
    """The plain text of a line (its fragments joined)."""
    return "".join(text for _, text in line)


def wrap_rows(text: str, width: int) -> list[str]:
    """``text`` cut into rows of at most ``width`` columns, at spaces where it can.

    Joined, the rows are ``text`` again, exactly: the spaces where a row breaks
    stay at its end (:func:`wrap_line` hides those beyond the width). A word
    longer than a row is cut; a double-width character never straddles two.
    """
    if width < 1:
        return [text]
    rows: list[str] = []
    start, end = 0, len(text)
    while True:
        column, index, after_space = 0, start, -1
        while index < end:
            w = get_cwidth(text[index])
            if column + w > width:
                break
            column += w
            index += 1
            if text[index - 1] == " ":
                after_space = index
        if index >= end:
            rows.append(text[start:])
            return rows
        if text[index] == " ":  # break at these spaces; they end this row
            while index < end and text[index] == " ":
                index += 1
            if index >= end:
                rows.append(text[start:])
                return rows
            cut = index
        elif after_space > start:
            cut = after_space
        else:
            cut = max(index, start + 1)  # a word longer than the row, or one wide char
        rows.append(text[start:cut])
        start = cut


def wrap_line(line: Line, width: int) -> list[Line]:
    """A styled line as the rows :func:`wrap_rows` makes, each fitting ``width``.

    When the first fragment's style has :data:`HANG`, the rest of the line is
    wrapped beside it: the following rows start with as many spaces.
    """
    if line and HANG in line[0][0].split():
        head = line[0]
        hang = get_cwidth(head[1])
        if width - hang >= MIN_HANGING_WIDTH:
            body = wrap_line(line[1:], width - hang)
            return [[head if i == 0 else ("", " " * hang), *row] for i, row in enumerate(body)]
    text = line_text(line)
    rows = wrap_rows(text, width)
    if len(rows) == 1 and get_cwidth(text) <= width:
        return [line]
    bounds: list[tuple[int, int, str]] = []
    position = 0
    for style, piece in line:
        bounds.append((position, position + len(piece), style))
        position += len(piece)
    out: list[Line] = []
    offset = 0
    for row in rows:
        excess = get_cwidth(row) - width
        shown = len(row)
        if excess > 0:  # only break spaces can overflow: hide them
            shown -= min(excess, len(row) - len(row.rstrip(" ")))
        a, b = offset, offset + shown
        out.append([(st, text[max(a, s) : min(b, e)]) for s, e, st in bounds if s < b and e > a])
        offset += len(row)
    return out


@dataclass(slots=True)
class QueueItem:
    id: str
    lane: Literal["steering", "follow_up"]
    text: str


@dataclass(slots=True)
class _RunningTool:
    name: str
    started: float


class Transcript:
    """UI state and transcript of one chat, fed by a session, read by a view."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.on_change: Callable[[], None] = lambda: None
        """Called after every change (the view invalidates its screen)."""
        self._committed: list[Line] = []
        self._block: BlockKind | None = None
        self._partial: list[str] = []
        """Chunks streamed after the last newline of the open block."""
        self.running = False
        self.run_id = ""
        self._run_started = 0.0
        self._phase: Phase = "idle"
        self._phase_started = 0.0
        self._calling = ""
        self._tools: dict[str, _RunningTool] = {}
        self.steering: list[QueueItem] = []
        self.follow_up: list[QueueItem] = []
        self.last_stop: str = ""
        """How the last run ended (``completed``, ``aborted``, ``error``)."""
        self.link: Callable[[], str | None] = lambda: None
        """What is wrong with the connection to the server, if anything (``chat
        --url`` sets it: "reconnecting to the server"); shown first on the status line."""

    # -- reading (the view) ---------------------------------------------------
    def take_committed(self) -> list[Line]:
        """The finished lines not handed out yet (each line exactly once)."""
        lines, self._committed = self._committed, []
        return lines

    @property
    def has_committed(self) -> bool:
        return bool(self._committed)

    def live_lines(self) -> list[Line]:
        """The unfinished line of the open block (empty when nothing is open)."""
        if self._block is None or not self._partial:
            return []
        return [[(BLOCK_STYLE[self._block], "".join(self._partial))]]

    @property
    def queued(self) -> list[QueueItem]:
        return [*self.steering, *self.follow_up]

    @property
    def phase(self) -> Phase:
        if not self.running:
            return "idle"
        if self._tools:
            return "tool"
        return self._phase

    def status_line(self) -> Line:
        """``● idle`` / ``◌ waiting 0.4s`` / ``✎ streaming 2.1s`` / ``⚙ sleep 1.3s`` ...,
        after ``⟳ reconnecting to the server`` while the connection is lost."""
        problem = self.link()
        if problem is None:
            return self._phase_line()
        return [("class:status.offline", f"⟳ {problem}"), ("", " · "), *self._phase_line()]

    def _phase_line(self) -> Line:
        now = self.clock()
        phase = self.phase
        if phase == "idle":
            line: Line = [("class:status.idle", "● idle")]
            if self.last_stop and self.last_stop != "completed":
                line.append(("class:status.detail", f" · last run {self.last_stop}"))
            return line
        run = f" {now - self._run_started:.1f}s"
        if phase == "tool":
            oldest = min(self._tools.values(), key=lambda tool: tool.started)
            names = ", ".join(sorted({tool.name for tool in self._tools.values()}))
            return [
                ("class:status.tool", f"⚙ tool running: {printable(names)}"),
                ("class:status.detail", f" {now - oldest.started:.1f}s · run{run}"),
            ]
        label = {
            "waiting": "◌ waiting for the model",
            "thinking": "✻ thinking",
            "streaming": "✎ streaming",
            "calling": f"⚙ calling {printable(self._calling)}",
        }[phase]
        return [("class:status.busy", label), ("class:status.detail", run)]

    def queue_lines(self) -> list[Line]:
        """The pending queue: the counts, one line per message (5 at most), and
        while idle the hint that Enter on an empty input sends it."""
        items = self.queued
        if not items:
            return []
        counts = []
        if self.steering:
            counts.append(f"{len(self.steering)} steering")
        if self.follow_up:
            counts.append(f"{len(self.follow_up)} follow-up")
        word = "queued" if self.running else "queue kept"
        lines: list[Line] = [[("class:queue.head", f"{word}: {', '.join(counts)}")]]
        for item in items[:5]:
            mark = "↪ steer" if item.lane == "steering" else "⏎ follow-up"
            preview = one_line(item.text)
            lines.append([("class:queue.lane", f"  {mark}: "), ("class:queue.item", preview)])
        if len(items) > 5:
            lines.append([("class:queue.lane", f"  … {len(items) - 5} more")])
        if not self.running:
            lines.append([("class:queue.hint", f"  {KEPT_QUEUE_HINT} · Alt+↑ edits it")])
        return lines

    # -- writing (the session) ------------------------------------------------
    def run_started(self, run_id: str = "") -> None:
        self._close_block()
        self.running = True
        self.run_id = run_id
        self._run_started = self.clock()
        self._tools.clear()
        self._set_phase("waiting")
        self.on_change()

    def run_ended(
        self, stop_reason: str, error_message: str | None = None, *, timed: bool = True
    ) -> None:
        """The run ended; ``timed=False`` leaves its duration out (a run replayed
        from a log: its start and end arrive together, the time is unknown)."""
        self._close_block()
        now = self.clock()
        elapsed = f" · {now - self._run_started:.1f}s" if self.running and timed else ""
        self.running = False
        self.last_stop = stop_reason
        self._tools.clear()
        self._phase = "idle"
        if stop_reason == "completed":
            self._commit([("class:end.ok", f"■ completed{elapsed}")])
        else:
            line: Line = [("class:end.bad", f"■ {stop_reason}{elapsed}")]
            if error_message and stop_reason == "error":
                line.append(("class:end.bad", f": {one_line(error_message, 500)}"))
            self._commit(line)
        self.on_change()

    def user_message(self, who: Who, text: str) -> None:
        """A user message was delivered to the agent (prompt, steer or follow-up)."""
        self._close_block()
        if who == "prompt":
            self._commit([])  # a blank line before each new prompt
        label = f"{WHO_LABEL[who]}> "
        indent = " " * len(label)
        for index, row in enumerate(printable(text).split("\n")):
            prefix = (f"class:who.{who} {HANG}", label) if index == 0 else (HANG, indent)
            self._commit([prefix, ("class:user", row)])
        self._set_phase("waiting")
        self.on_change()

    def block_started(self, kind: BlockKind) -> None:
        if self._block != kind:
            self._close_block()
            self._block = kind
        self._set_phase("thinking" if kind == "thinking" else "streaming")
        self.on_change()

    def delta(self, kind: BlockKind, text: str) -> None:
        """Streamed text or reasoning; a delta of the other kind closes the open block."""
        if not text:
            return
        if self._block != kind:
            self.block_started(kind)
        style = BLOCK_STYLE[kind]
        rows = printable(text).split("\n")
        self._partial.append(rows[0])
        for row in rows[1:]:
            self._commit([(style, "".join(self._partial))])
            self._partial = [row] if row else []
        self.on_change()

    def block_ended(self) -> None:
        self._close_block()
        if self.running:
            self._set_phase("waiting")
        self.on_change()

    def message_ended(self, stop_reason: str | None) -> None:
        """The assistant message ended (its open block, if any, ends with it)."""
        self._close_block()
        if stop_reason == "steered":
            self._commit([("class:notice", "↪ interrupted by a steering message")])
        if self.running:
            self._set_phase("waiting")
        self.on_change()

    def tool_call_streaming(self, name: str) -> None:
        """The model is writing a call to ``name`` (before it runs)."""
        self._close_block()
        self._calling = name
        self._set_phase("calling")
        self.on_change()

    def tool_started(self, call_id: str, name: str, args: dict[str, Any]) -> None:
        self._close_block()
        self._tools[call_id] = _RunningTool(name=name, started=self.clock())
        shown = json.dumps(args, ensure_ascii=False)
        self._commit(
            [
                ("class:tool", f"⚙ {printable(name)} "),
                ("class:tool.args", one_line(shown, ARGS_CHARS)),
            ]
        )
        self.on_change()

    def tool_progress(self, call_id: str, name: str, text: str) -> None:
        self._close_block()
        self._commit([("class:tool.progress", f"  … {printable(name)}: {one_line(text)}")])
        self.on_change()

    def tool_ended(
        self, call_id: str, name: str, result: str, *, is_error: bool, skipped: bool
    ) -> None:
        self._close_block()
        self._tools.pop(call_id, None)
        if not self._tools and self.running:
            self._set_phase("waiting")
        if skipped:
            style, mark = "class:tool.skipped", "⤼ skipped"
        elif is_error:
            style, mark = "class:tool.error", "✗"
        else:
            style, mark = "class:tool.ok", "✓"
        rows = printable(result).strip("\n").split("\n") or [""]
        head = f"  {mark} {printable(name)}: "
        self._commit([(f"{style} {HANG}", head), ("class:tool.result", rows[0])])
        indent = " " * len(head)
        for row in rows[1:TOOL_RESULT_LINES]:
            self._commit([(HANG, indent), ("class:tool.result", row)])
        if len(rows) > TOOL_RESULT_LINES:
            more = len(rows) - TOOL_RESULT_LINES
            self._commit([(HANG, indent), ("class:tool.more", f"… {more} more lines")])
        self.on_change()

    def queue_changed(self, items: Iterable[QueueItem]) -> None:
        """The whole queue as it is now (both lanes, in delivery order)."""
        items = list(items)
        self.steering = [item for item in items if item.lane == "steering"]
        self.follow_up = [item for item in items if item.lane == "follow_up"]
        self.on_change()

    def notice(self, text: str, *, error: bool = False) -> None:
        """A line from the chat itself (an error from the agent, a hint)."""
        self._close_block()
        style = "class:notice.error" if error else "class:notice"
        for row in printable(text).split("\n"):
            self._commit([(style, row)])
        self.on_change()

    # -- the terminal's width -------------------------------------------------
    def spill(self, width: int, max_rows: int) -> None:
        """Commit the leading rows of a live line taller than ``max_rows``.

        A reply that streams a long paragraph without a newline would outgrow
        the screen; its first rows, cut where :func:`wrap_rows` cuts them (the
        view wraps printed and live lines alike), go to the scrollback and the
        live part keeps its last row.
        """
        if self._block is None or not self._partial or width < 1:
            return
        text = "".join(self._partial)
        if len(text) <= max_rows:  # a row holds one character at least
            return
        rows = wrap_rows(text, width)
        if len(rows) <= max_rows:
            return
        self._commit([(BLOCK_STYLE[self._block], "".join(rows[:-1]))])
        self._partial = [rows[-1]]

    # -- internals ------------------------------------------------------------
    def _commit(self, line: Line) -> None:
        self._committed.append(line)

    def _close_block(self) -> None:
        if self._block is not None and self._partial:
            self._commit([(BLOCK_STYLE[self._block], "".join(self._partial))])
        self._partial = []
        self._block = None

    def _set_phase(self, phase: Phase) -> None:
        if phase != self._phase:
            self._phase = phase
            self._phase_started = self.clock()
