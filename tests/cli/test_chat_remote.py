"""``steerline chat --url`` in a real terminal against a real ``steerline serve``.

The chat reads the conversation's log through the SDK, so what another
client does (a steer sent over HTTP, as the web page sends it) shows up in
the terminal; ``--conversation`` attaches to an existing one with its history.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx2
import pytest

from tests.server.harness import Served

from .terminal import Terminal
from .test_chat_terminal import ALT_ENTER, CTRL_C, CTRL_D, CTRL_J, ENTER, ESC, KEPT_HINT, STEERLINE

ALT_UP = "\x1b\x1b[A"


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("STEERLINE_")}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    where = tmp_path_factory.mktemp("chat-remote")
    served = Served(where / "store.db", where)
    try:
        anyio.run(served.wait_ready)
        yield served
    finally:
        served.kill()


def _chat(server: Served, where: Path, *extra: str) -> Terminal:
    argv = [STEERLINE, "chat", "--url", server.url, *extra]
    terminal = Terminal(argv, cwd=where, env=_env())
    terminal.wait_for("● idle", timeout=30)
    return terminal


def _conversation_of(term: Terminal) -> str:
    for line in term.lines():
        if "· conversation " in line:
            return line.rsplit("· conversation ", 1)[1].split()[0]
    raise AssertionError(term.text())


def test_remote_chat_steers_queues_aborts_and_shows_the_whole_reply(
    server: Served, tmp_path: Path
) -> None:
    term = _chat(server, tmp_path)
    try:
        assert server.url in term.text()
        term.send('/call sleep {"seconds": 3}' + CTRL_J + "busy" + ENTER)
        term.wait_for("you> /call sleep")
        term.wait_for("⚙ tool running: sleep")
        # Alt+Enter: a follow-up, shown from the server's queue_updated
        term.send("and then?" + ALT_ENTER)
        term.wait_for("⏎ follow-up: and then?")
        # Enter while running: a steer, which interrupts after the tool (after_tool)
        term.send("/delay 20" + CTRL_J + "change of plan, one two three four five" + ENTER)
        term.wait_for("steer> /delay 20")
        term.wait_for("Echo: change of plan, one two three four five")
        term.wait_for("follow-up> and then?")
        term.wait_for("Echo: and then?")
        term.wait_for("■ completed")
        text = term.text()
        assert text.count("Echo: change of plan, one two three four five") == 1
        assert text.index("steer> /delay 20") < text.index("follow-up> and then?")

        # Esc aborts; the queue is kept and shown, Enter on an empty input sends it
        term.send('/call sleep {"seconds": 30}' + CTRL_J + "again" + ENTER)
        term.wait_for(lambda t: t.text().count("⚙ tool running: sleep") == 1)
        term.send("kept for later" + ALT_ENTER)
        term.wait_for("⏎ follow-up: kept for later")
        term.send(ESC)
        term.wait_for("■ aborted")
        term.wait_for("queue kept: 1 follow-up")
        term.wait_for(KEPT_HINT)
        term.send(ENTER)
        term.wait_for("follow-up> kept for later")
        term.wait_for("Echo: kept for later")
        term.wait_for(lambda t: t.text().count("■ completed") == 2)
        term.send(CTRL_D)
        assert term.wait_exit() == 0
    finally:
        term.close()


def test_a_steer_from_another_client_and_alt_up_and_attaching(
    server: Served, tmp_path: Path
) -> None:
    term = _chat(server, tmp_path)
    try:
        term.send('/call sleep {"seconds": 30}' + CTRL_J + "working" + ENTER)
        term.wait_for("⚙ tool running: sleep")
        conversation = _conversation_of(term)
        # another client (the web page sends exactly this) queues a steer
        with httpx2.Client(base_url=server.api, timeout=10) as http:
            answer = http.post(
                f"/conversations/{conversation}/messages",
                json={"content": "from the page", "mode": "follow_up"},
            )
            assert answer.status_code == 202, answer.text
        term.wait_for("⏎ follow-up: from the page")
        # Alt+Up pulls the queued message back into the editor (whole text)
        term.send(ALT_UP)
        term.wait_for(lambda t: t.input_line() == "> from the page")
        term.wait_for(lambda t: "⏎ follow-up: from the page" not in t.text())
        term.send(ESC)  # Esc with text in the editor still aborts the run
        term.wait_for("■ aborted")
        # the screen is redrawn around the abort's lines: wait for the input
        # line to settle (the text must still be there, not retyped)
        term.wait_for(lambda t: t.input_line() == "> from the page")
        term.send(CTRL_C + CTRL_D)  # clear the input, then quit
        assert term.wait_exit() == 0
    finally:
        term.close()

    # --conversation: the history first, then live
    again = _chat(server, tmp_path, "--conversation", conversation)
    try:
        again.wait_for("you> /call sleep")
        again.wait_for("■ aborted")
        # a replayed run shows no duration (the wire has no times: it said 0.0s)
        assert "■ aborted" in [line.rstrip() for line in again.lines()], again.text()
        again.send("welcome back" + ENTER)
        again.wait_for("Echo: welcome back")
        timed = re.compile(r"■ completed · \d+\.\ds")
        again.wait_for(lambda t: any(timed.fullmatch(line.rstrip()) for line in t.lines()))
        again.send(CTRL_D)
        assert again.wait_exit() == 0
    finally:
        again.close()


def test_chat_url_refuses_an_unknown_conversation_or_server(server: Served, tmp_path: Path) -> None:

    unknown = subprocess.run(
        [STEERLINE, "chat", "--url", server.url, "--conversation", "nope"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    assert unknown.returncode == 2
    assert "conversation_not_found" in unknown.stderr or "not found" in unknown.stderr.lower()
    down = subprocess.run(
        [STEERLINE, "chat", "--url", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
    )
    assert down.returncode == 2 and "127.0.0.1:9" in down.stderr
    alone = subprocess.run(
        [STEERLINE, "chat", "--conversation", "x"], capture_output=True, text=True, env=_env()
    )
    assert alone.returncode == 2 and "--url" in alone.stderr


def test_the_status_line_says_reconnecting_while_the_server_is_away(tmp_path: Path) -> None:
    """The follow stream blocks while the SDK reconnects; the status line says so
    (the page shows Reconnecting…) and clears once the restarted server answers."""
    first = Served(tmp_path / "store.db", tmp_path)
    servers = [first]
    anyio.run(first.wait_ready)
    term = _chat(first, tmp_path)
    try:
        term.send("hello" + ENTER)
        term.wait_for("■ completed")
        assert "⟳" not in term.text()
        first.kill()
        term.wait_for("⟳ reconnecting to the server")
        second = Served(tmp_path / "store.db", tmp_path, port=first.port)
        servers.append(second)
        anyio.run(second.wait_ready)
        term.wait_for(lambda t: "⟳" not in t.text(), timeout=30)
        term.send("again" + ENTER)
        term.wait_for("Echo: again")
        term.send(CTRL_D)
        assert term.wait_exit() == 0
    finally:
        term.close()
        for served in servers:
            served.kill()
