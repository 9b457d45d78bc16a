"""Render native events readably in a terminal.

Text streams as it arrives, reasoning is dimmed, tool calls are shown with
their arguments and results. Only the deltas are printed, so the output is
the same whether the model is fast or slow. Control characters from the
agent are shown as ``^X`` (:func:`~steerline.cli.transcript.printable`), so
they cannot drive the terminal. (``steerline chat`` renders through
:mod:`steerline.cli.transcript` instead.)
"""

from __future__ import annotations

import json

from rich.console import Console
from rich.markup import escape as _markup_escape

from steerline.cli.transcript import printable
from steerline.core.events import (
    AgentEnd,
    AgentEvent,
    MessageStart,
    MessageUpdate,
    QueueUpdate,
    ToolExecutionEnd,
    ToolExecutionStart,
    ToolExecutionUpdate,
)
from steerline.core.messages import UserMessage


def escape(text: str) -> str:
    """Agent text made safe for rich markup and for the terminal."""
    return _markup_escape(printable(text))


class EventPrinter:
    """Prints one event at a time; keeps just enough state to place newlines."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._mid_line = False

    def _newline(self) -> None:
        if self._mid_line:
            self.console.print()
            self._mid_line = False

    def _line(self, markup: str) -> None:
        self._newline()
        self.console.print(markup, highlight=False)

    def __call__(self, event: AgentEvent) -> None:
        if isinstance(event, MessageStart) and isinstance(event.message, UserMessage):
            label = {"prompt": "you", "steer": "steer", "follow_up": "follow-up"}
            who = label[event.message.delivery]
            self._line(f"[bold cyan]{who}>[/] {escape(event.message.text)}")
        elif isinstance(event, MessageUpdate):
            kind = event.delta.kind
            if kind == "text_start" or kind == "thinking_start":
                self._newline()
            elif kind == "text_delta":
                self.console.print(escape(event.delta.delta), end="", highlight=False)
                self._mid_line = True
            elif kind == "thinking_delta":
                self.console.print(f"[dim italic]{escape(event.delta.delta)}[/]", end="")
                self._mid_line = True
        elif isinstance(event, ToolExecutionStart):
            args = escape(json.dumps(event.args, ensure_ascii=False))
            self._line(f"[yellow]⚙ {escape(event.tool_name)}[/] {args}")
        elif isinstance(event, ToolExecutionUpdate):
            self._line(f"[dim]  … {escape(event.partial_result)}[/]")
        elif isinstance(event, ToolExecutionEnd):
            style = "red" if event.is_error else "green"
            mark = "⤼" if event.skipped else ("✗" if event.is_error else "✓")
            self._line(f"[{style}]  {mark} {escape(event.result)}[/]")
        elif isinstance(event, QueueUpdate) and (event.steering or event.follow_up):
            self._line(
                f"[dim]queued: {len(event.steering)} steering, {len(event.follow_up)} follow-up[/]"
            )
        elif isinstance(event, AgentEnd):
            style = "green" if event.stop_reason == "completed" else "red"
            detail = f": {escape(event.error_message)}" if event.error_message else ""
            self._line(f"[{style}]■ {event.stop_reason}{detail}[/]")
