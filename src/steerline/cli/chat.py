"""``steerline chat``: the terminal chat's view, a prompt_toolkit ``Application``.

The screen has two parts. Finished lines (a user message, a line of the reply,
a tool call and its result) are printed *above* the application, into the
terminal's scrollback, once each: nothing redraws them afterwards, so nothing
can wipe them. Below them the application draws, and redraws as often as it
likes: the line being streamed, the pending queue, a status line and the
input, which stays editable whatever the agent does.

Printing above happens in ``before_render``: the application is erased, the
new lines are written where it was, and the same render draws it again below
them (inside a synchronized update, for terminals that know DEC mode 2026).
The model of what is shown is :class:`~steerline.cli.transcript.Transcript`;
what drives it is a :class:`~steerline.cli.session.ChatSession`.

Keys (docs/chat.md): Enter sends (steers while running; starts a run when
idle; on an empty input sends the kept queue), Alt+Enter queues a follow-up,
Alt+I steers and interrupts at once, Esc aborts (the queue is kept), Ctrl+J
inserts a newline (and Shift+Enter, from terminals that tell it apart),
Alt+Up pulls the queue back into the editor, Ctrl+C clears the input, Ctrl+C
or Ctrl+D on an empty input quits.
"""

from __future__ import annotations

from typing import Any

import anyio
from prompt_toolkit.application import Application
from prompt_toolkit.buffer import Buffer
from prompt_toolkit.filters import Condition
from prompt_toolkit.formatted_text import FormattedText, StyleAndTextTuples
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.input import Input
from prompt_toolkit.input.ansi_escape_sequences import ANSI_SEQUENCES
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.keys import Keys
from prompt_toolkit.layout import (
    BufferControl,
    ConditionalContainer,
    FormattedTextControl,
    HSplit,
    Layout,
    Window,
)
from prompt_toolkit.layout.dimension import Dimension
from prompt_toolkit.output import Output
from prompt_toolkit.renderer import CPR_Support
from prompt_toolkit.renderer import print_formatted_text as render_fragments
from prompt_toolkit.shortcuts import print_formatted_text
from prompt_toolkit.styles import Style
from prompt_toolkit.utils import get_cwidth

from steerline.cli.session import ChatSession, LocalSession
from steerline.cli.transcript import Line, Transcript, wrap_line
from steerline.runtime.agent import Agent

STYLE = Style.from_dict(
    {
        "text": "",
        "reasoning": "italic #8a8a8a",
        "user": "bold",
        "who.prompt": "bold ansicyan",
        "who.steer": "bold ansiyellow",
        "who.follow_up": "bold ansimagenta",
        "tool": "ansiyellow",
        "tool.args": "#8a8a8a",
        "tool.progress": "#8a8a8a",
        "tool.ok": "ansigreen",
        "tool.error": "ansired",
        "tool.skipped": "#8a8a8a",
        "tool.result": "",
        "tool.more": "#8a8a8a italic",
        "end.ok": "#8a8a8a",
        "end.bad": "ansired",
        "notice": "#8a8a8a italic",
        "notice.error": "ansired",
        "banner": "bold",
        "queue.head": "ansiyellow",
        "queue.hint": "#8a8a8a",
        "queue.lane": "#8a8a8a",
        "queue.item": "",
        "rule": "#585858",
        "status.idle": "ansigreen",
        "status.busy": "ansicyan bold",
        "status.tool": "ansiyellow bold",
        "status.offline": "ansired bold",
        "status.detail": "#8a8a8a",
        "hints": "#8a8a8a",
        "prompt": "bold ansicyan",
    }
)

ESCAPE_DELAY = 0.05
"""Seconds to wait after a lone Esc byte for the rest of a key (Alt+Enter is
Esc then Enter): short, so that Esc alone aborts at once."""
REFRESH = 0.1
"""Seconds between redraws of the status line's elapsed time."""
SYNC_BEGIN, SYNC_END = "\x1b[?2026h", "\x1b[?2026l"
"""Synchronized update (DEC mode 2026): the erase, the printed lines and the
redraw reach the screen at once; terminals without it ignore both."""

HELP = (
    "Enter send (steers while running) · Alt+Enter follow-up · Alt+I interrupt\n"
    "Esc abort (keeps the queue) · Ctrl+J newline · Alt+↑ edit queue · Ctrl+D quit"
)


def teach_keys() -> None:
    """Let prompt_toolkit read the modified-Enter sequences some terminals send.

    With xterm's modifyOtherKeys or the kitty keyboard protocol a terminal
    tells Shift+Enter and Alt+Enter apart from Enter; prompt_toolkit reads
    Shift+Enter as plain Enter. Here Shift+Enter becomes Ctrl+J (newline)
    and Alt+Enter Esc+Enter (follow-up). Most terminals send ``\\r`` for
    Shift+Enter: then only Ctrl+J inserts a newline.
    """
    for shift_enter in ("\x1b[27;2;13~", "\x1b[13;2u"):
        ANSI_SEQUENCES[shift_enter] = Keys.ControlJ
    for alt_enter in ("\x1b[27;3;13~", "\x1b[13;3u"):
        ANSI_SEQUENCES[alt_enter] = (Keys.Escape, Keys.ControlM)


def _join(lines: list[Line]) -> StyleAndTextTuples:
    fragments: StyleAndTextTuples = []
    for index, line in enumerate(lines):
        if index:
            fragments.append(("", "\n"))
        fragments.extend(line)
    return fragments


class ChatView:
    """The prompt_toolkit application: streamed output above an always-editable input."""

    def __init__(
        self, session: ChatSession, *, input: Input | None = None, output: Output | None = None
    ) -> None:
        teach_keys()
        self.session = session
        self.transcript: Transcript = session.transcript
        self.buffer = Buffer(multiline=True, history=InMemoryHistory())
        self._synced = False
        self.app: Application[None] = Application(
            layout=Layout(self._container(), focused_element=self.buffer),
            key_bindings=self._bindings(),
            style=STYLE,
            full_screen=False,
            erase_when_done=True,
            mouse_support=False,
            refresh_interval=REFRESH,
            input=input,
            output=output,
        )
        # No cursor position request: its answer only tells how many rows are
        # below the cursor *when it was asked*, and an answer that arrives after
        # lines were printed above (a slow terminal, a loaded machine) makes the
        # application as tall as that stale count: the terminal scrolls the
        # banner and the history's first lines off the screen. The application
        # draws at its own height below the printed lines, reserved or not.
        self.app.renderer.cpr_support = CPR_Support.NOT_SUPPORTED
        self.app.ttimeoutlen = ESCAPE_DELAY
        self.app.timeoutlen = ESCAPE_DELAY
        self.app.before_render += self._print_committed
        self.app.after_render += self._end_sync
        self.transcript.on_change = self.app.invalidate

    # -- layout ---------------------------------------------------------------
    def _container(self) -> HSplit:
        transcript = self.transcript

        def live() -> StyleAndTextTuples:
            return _join(self._wrap(transcript.live_lines()))

        def queue() -> StyleAndTextTuples:
            return _join(transcript.queue_lines())

        def status() -> StyleAndTextTuples:
            line = [("", " "), *transcript.status_line()]
            used = sum(get_cwidth(text) for _, text in line)
            width = self.app.output.get_size().columns
            fragments: StyleAndTextTuples = []
            fragments.extend(line)
            for hint in self._hints():  # the longest that fits, right-aligned
                room = width - used - get_cwidth(hint) - 1
                if room >= 2:
                    fragments.append(("", " " * room))
                    fragments.append(("class:hints", hint))
                    break
            return fragments

        def prefix(line: int, wrap: int) -> StyleAndTextTuples:
            return [("class:prompt", "> " if line == 0 and wrap == 0 else "  ")]

        return HSplit(
            [
                ConditionalContainer(
                    Window(FormattedTextControl(live), wrap_lines=True, dont_extend_height=True),
                    filter=Condition(lambda: bool(transcript.live_lines())),
                ),
                ConditionalContainer(
                    Window(FormattedTextControl(queue), wrap_lines=False, dont_extend_height=True),
                    filter=Condition(lambda: bool(transcript.queued)),
                ),
                Window(char="─", height=1, style="class:rule"),
                Window(FormattedTextControl(status), height=1),
                Window(
                    BufferControl(self.buffer),
                    height=Dimension(min=1, max=10),
                    dont_extend_height=True,
                    wrap_lines=True,
                    get_line_prefix=prefix,
                ),
            ]
        )

    def _hints(self) -> list[str]:
        """Key hints for the state we are in, longest first."""
        if self.session.running:
            return [
                "Enter steer · Alt+Enter follow-up · Alt+I interrupt · Esc abort",
                "Enter steer · Alt+Enter follow-up · Esc abort",
                "Esc abort",
            ]
        if self.transcript.queued:
            return ["Enter send queue · Alt+↑ edit queue · Ctrl+D quit", "Enter send queue"]
        return ["Enter send · Alt+Enter queue · Ctrl+J newline · Ctrl+D quit", "Ctrl+D quit"]

    # -- printing above ---------------------------------------------------------
    def _print_committed(self, app: Application[Any]) -> None:
        size = app.output.get_size()
        # leave room for the queue, the status and a few lines of input
        self.transcript.spill(size.columns, max(2, size.rows - 12))
        lines = self.transcript.take_committed()
        if not lines:
            return
        output = app.output
        output.write_raw(SYNC_BEGIN)
        self._synced = True
        app.renderer.erase()
        fragments = _join(self._wrap(lines))
        fragments.append(("", "\n"))
        render_fragments(output, fragments, app.renderer.style, color_depth=app.color_depth)

    def _wrap(self, lines: list[Line]) -> list[Line]:
        """Lines cut at spaces to the terminal's width (printed and live alike)."""
        width = self.app.output.get_size().columns
        return [row for line in lines for row in wrap_line(line, width)]

    def _end_sync(self, app: Application[Any]) -> None:
        if self._synced:
            self._synced = False
            app.output.write_raw(SYNC_END)
            app.output.flush()

    def print_rest(self) -> None:
        """After the application has closed: print what was not printed yet."""
        self.transcript.block_ended()
        lines = self.transcript.take_committed()
        if lines:
            fragments = _join(self._wrap(lines))
            fragments.append(("", "\n"))
            print_formatted_text(FormattedText(fragments), style=STYLE, end="")

    # -- keys -----------------------------------------------------------------
    def _take_input(self) -> str:
        text = self.buffer.text.strip()
        if text:
            self.buffer.reset(append_to_history=True)
        return text

    def _bindings(self) -> KeyBindings:
        bindings = KeyBindings()
        session = self.session
        empty = Condition(lambda: not self.buffer.text)

        @bindings.add("enter")
        def _send(event: KeyPressEvent) -> None:
            text = self._take_input()
            if text:
                session.send(text)
            elif not session.running and session.has_queue:
                session.send_queue()

        @bindings.add("escape", "enter")
        def _follow_up(event: KeyPressEvent) -> None:
            text = self._take_input()
            if text:
                session.follow_up(text)

        @bindings.add("escape", "i")
        @bindings.add("escape", "I")
        def _interrupt(event: KeyPressEvent) -> None:
            text = self._take_input()
            if text:
                session.interrupt(text)

        @bindings.add("escape")
        def _abort(event: KeyPressEvent) -> None:
            if session.running:
                session.abort()

        @bindings.add("c-j")
        def _newline(event: KeyPressEvent) -> None:
            self.buffer.insert_text("\n")

        @bindings.add("escape", "up")
        async def _edit_queue(event: KeyPressEvent) -> None:
            texts = await session.take_queue()
            if texts:
                before = self.buffer.text
                joined = "\n".join(texts)
                self.buffer.text = f"{before}\n{joined}" if before else joined
                self.buffer.cursor_position = len(self.buffer.text)

        @bindings.add("c-c")
        def _clear_or_quit(event: KeyPressEvent) -> None:
            if self.buffer.text:
                self.buffer.reset()
            else:
                event.app.exit()

        @bindings.add("c-d", filter=empty)
        def _quit(event: KeyPressEvent) -> None:
            event.app.exit()

        return bindings

    async def run(self) -> None:
        await self.app.run_async()


def print_banner(session: ChatSession) -> None:
    print_formatted_text(
        FormattedText(
            [
                ("class:banner", f"steerline chat · {session.title}\n"),
                ("class:hints", f"{HELP}\n"),
            ]
        ),
        style=STYLE,
        end="",
    )


async def run_chat(
    session: ChatSession, *, input: Input | None = None, output: Output | None = None
) -> None:
    """Run the chat on ``session`` until the user quits; the session is closed after."""
    view = ChatView(session, input=input, output=output)
    print_banner(session)
    async with anyio.create_task_group() as group:
        await group.start(session.run)
        try:
            await view.run()
        finally:
            with anyio.CancelScope(shield=True):
                await session.aclose()
            group.cancel_scope.cancel()
    view.print_rest()


async def chat(agent: Agent, *, title: str = "") -> None:
    """Chat with an in-process ``agent`` in this terminal."""
    await run_chat(LocalSession(agent, title=title))
