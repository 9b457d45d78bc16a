"""``steerline chat``: a terminal chat with an in-process agent.

Enter steers (or starts a run when the agent is idle), Alt+Enter queues a
follow-up, Ctrl+C aborts the running turn, Ctrl+D quits. Events are printed
above the input line (prompt_toolkit's ``patch_stdout``) so typing is never
interrupted by the agent's output.
"""

from __future__ import annotations

import anyio
from prompt_toolkit import PromptSession
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.patch_stdout import patch_stdout
from rich.console import Console

from steerline.cli.render import EventPrinter
from steerline.core.errors import SteerlineError
from steerline.runtime.agent import Agent

HELP = "Enter: steer (or start)   Alt+Enter: follow-up   Ctrl+C: abort   Ctrl+D: quit"


class _Lane:
    """Which lane the line being submitted goes to (Alt+Enter sets follow-up)."""

    def __init__(self) -> None:
        self.follow_up = False

    def bindings(self) -> KeyBindings:
        bindings = KeyBindings()

        @bindings.add("escape", "enter")
        def _follow_up(event: KeyPressEvent) -> None:
            self.follow_up = True
            event.current_buffer.validate_and_handle()

        return bindings


async def chat(agent: Agent) -> None:
    console = Console(highlight=False)
    agent.subscribe(EventPrinter(console))
    lane = _Lane()
    session: PromptSession[str] = PromptSession(key_bindings=lane.bindings())
    console.print(f"[dim]{HELP}[/]")
    async with anyio.create_task_group() as group:

        async def run(text: str) -> None:
            try:
                await agent.prompt(text)
            except SteerlineError as exc:
                console.print(f"[red]{exc.message}[/]")

        with patch_stdout(raw=True):
            while True:
                lane.follow_up = False
                try:
                    text = (await session.prompt_async("> ")).strip()
                except KeyboardInterrupt:
                    agent.abort()
                    continue
                except EOFError:
                    break
                if not text:
                    continue
                try:
                    if not agent.is_running:
                        group.start_soon(run, text)
                    elif lane.follow_up:
                        agent.follow_up(text)
                    else:
                        agent.steer(text)
                except SteerlineError as exc:
                    console.print(f"[red]{exc.message}[/]")
        agent.abort()
        group.cancel_scope.cancel()
