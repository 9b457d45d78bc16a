"""``steerline`` console script: run the demo agent, serve, chat."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import anyio
import typer
from rich.console import Console

if TYPE_CHECKING:
    from steerline.config import SteerlineConfig

from steerline.cli.render import EventPrinter
from steerline.core.errors import SteerlineError
from steerline.core.events import (
    AgentEvent,
    ToolExecutionStart,
    TurnEnd,
    encode_event,
)
from steerline.demo import demo_agent
from steerline.runtime.agent import check_policy
from steerline.runtime.inbox import check_delivery_mode

app = typer.Typer(
    help="steerline: a runtime and server for interactive, steerable AI agents.",
    no_args_is_help=True,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        from steerline import __version__

        typer.echo(f"steerline {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """steerline: a runtime and server for interactive, steerable AI agents."""


@app.command()
def run(
    text: Annotated[str, typer.Argument(help="The prompt; demo directives like /call work.")],
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one native event per line as JSON.")
    ] = False,
    steer: Annotated[
        list[str] | None,
        typer.Option(
            "--steer",
            help="Steer with this text when the first tool starts (or the first turn ends).",
        ),
    ] = None,
    follow_up: Annotated[
        list[str] | None, typer.Option("--follow-up", help="Queue this follow-up message.")
    ] = None,
    policy: Annotated[str, typer.Option(help="immediate | after_tool | after_turn")] = "after_tool",
    steering_mode: Annotated[str, typer.Option(help="one-at-a-time | all")] = "one-at-a-time",
    follow_up_mode: Annotated[str, typer.Option(help="one-at-a-time | all")] = "one-at-a-time",
) -> None:
    """Run the offline demo agent in-process and print its events as they stream."""
    try:
        agent = demo_agent(
            steering_policy=check_policy(policy),
            steering_mode=check_delivery_mode(steering_mode),
            follow_up_mode=check_delivery_mode(follow_up_mode),
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if json_output:
        out = sys.stdout.buffer

        def show(event: AgentEvent) -> None:
            out.write(encode_event(event) + b"\n")
            out.flush()
    else:
        show = EventPrinter(Console(highlight=False))
    pending_steers = list(steer or [])

    def on_event(event: AgentEvent) -> None:
        try:
            show(event)
        except BrokenPipeError:  # the reader went away (`| head`): stop quietly
            agent.abort()
            return
        busy = isinstance(event, ToolExecutionStart | TurnEnd)
        if busy and pending_steers:
            for message in pending_steers:
                agent.steer(message)
            pending_steers.clear()

    agent.subscribe(on_event)

    async def main() -> int:
        for message in follow_up or []:
            agent.follow_up(message)
        async with anyio.create_task_group() as group:
            result_holder: list[str] = []

            async def prompt() -> None:
                result = await agent.prompt(text)
                result_holder.append(result.stop_reason)

            group.start_soon(prompt)
        return 0 if result_holder == ["completed"] else 1

    code = anyio.run(main)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        code = 0
    raise typer.Exit(code)


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="steerline.toml with server and agents.NAME tables "
        "(default: $STEERLINE_CONFIG, else ./steerline.toml if present).",
    ),
]


def _load_config(path: Path | None) -> SteerlineConfig:
    from steerline.config import load_config

    try:
        return load_config(path)
    except SteerlineError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind (default 8000).")] = None,
    store: Annotated[
        str | None,
        typer.Option(
            help=(
                "memory://, sqlite:///relative.db, sqlite:////abs.db or "
                "redis://[:password@]host:6379/0 to share one Redis with other "
                "servers (default sqlite:///steerline.db)"
            )
        ),
    ] = None,
    insecure: Annotated[
        bool, typer.Option(help="Allow a non-loopback bind without API keys.")
    ] = False,
) -> None:
    """Run the HTTP server (SSE, NDJSON, WebSocket) with the demo and configured agents."""
    from steerline.cli.serve import serve as run_server
    from steerline.server.from_config import settings_from_config
    from steerline.server.settings import InsecureBindError

    loaded = _load_config(config)
    try:
        settings = settings_from_config(
            loaded, host=host, port=port, store=store, insecure=insecure or None
        )
        run_server(settings, loaded)
    except (InsecureBindError, SteerlineError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def chat(
    config: ConfigOption = None,
    agent: Annotated[
        str | None, typer.Option(help="Agent name from the config (default: the default agent).")
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(
            help="A steerline server (http://host:port) to chat through, instead of in-process."
        ),
    ] = None,
    conversation: Annotated[
        str | None,
        typer.Option(help="With --url: attach to this conversation (its history, then live)."),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="STEERLINE_API_KEY", help="With --url: the server's API key, if it has keys."
        ),
    ] = None,
) -> None:
    """Chat with an agent in the terminal (keys: docs/chat.md).

    Enter sends (steers while running), Alt+Enter queues a follow-up, Esc
    aborts and keeps the queue, Ctrl+J inserts a newline, Ctrl+D quits.
    """
    if url is None and conversation is not None:
        typer.echo("error: --conversation needs --url (an in-process chat starts empty)", err=True)
        raise typer.Exit(2)
    if url is not None:
        if config is not None:
            typer.echo("error: --config is for in-process chats; the server has its own", err=True)
            raise typer.Exit(2)
        _chat_remote(url, agent=agent, conversation=conversation, api_key=api_key)
        return
    from steerline.cli.chat import chat as run_chat

    loaded = _load_config(config)

    async def main() -> None:
        from steerline.config import check_agent

        try:
            chosen = loaded.agent(agent)
            typer.echo(await check_agent(chosen, within=5.0), err=True)
            built = chosen.build()
        except SteerlineError as exc:
            typer.echo(f"error: {exc.message}", err=True)
            raise typer.Exit(2) from None
        # after the checks: a wrong config says so even without a terminal
        _need_terminal()
        try:
            model = f"{chosen.provider} {chosen.model}" if chosen.model else chosen.provider
            await run_chat(built, title=f"agent {chosen.name} ({model}, in-process)")
        finally:
            await loaded.aclose()

    anyio.run(main)


def _need_terminal() -> None:
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        typer.echo("error: steerline chat needs a terminal (scripts: steerline run)", err=True)
        raise typer.Exit(2)


def _chat_remote(
    url: str, *, agent: str | None, conversation: str | None, api_key: str | None
) -> None:
    """``chat --url``: check the server (and the conversation) before taking the terminal."""
    from steerline.cli.chat import run_chat
    from steerline.cli.remote import RemoteSession
    from steerline.client import AsyncClient, ClientError

    async def main() -> None:
        client = AsyncClient(url, api_key=api_key)
        try:
            try:
                listed = await client.agents()
                if conversation is not None:
                    await client.conversation(conversation)
            except ClientError as exc:
                typer.echo(f"error: {url}: {exc}", err=True)
                raise typer.Exit(2) from None
            names = [entry.get("name") for entry in listed.get("agents", [])]
            if agent is not None and agent not in names:
                typer.echo(f"error: {url} has no agent {agent!r} (it has: {names})", err=True)
                raise typer.Exit(2)
            _need_terminal()
        except BaseException:
            await client.aclose()
            raise
        session = RemoteSession(client, url=url, conversation_id=conversation, agent_name=agent)
        await run_chat(session)

    anyio.run(main)


def main() -> None:
    app()
