"""``steerline chat`` in a real terminal (a pty read by pyte), with real keys.

Against an OpenAI-compatible provider on loopback streaming one token every
50 ms (``chat --config``), and against the offline demo agent. Every wait
polls the screen against a deadline.
"""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from .paced_stub import FOREVER, PacedStub
from .terminal import Terminal

STEERLINE = str(Path(sys.executable).parent / "steerline")
ENTER, ALT_ENTER, ALT_I, ESC = "\r", "\x1b\r", "\x1bi", "\x1b"
CTRL_J, CTRL_C, CTRL_D = "\n", "\x03", "\x04"
SHIFT_ENTER_CSI_U = "\x1b[13;2u"  # Shift+Enter from terminals that report modified keys
KEPT_HINT = "Enter on an empty input sends the kept queue"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEERLINE_")}
    env["STUB_LLM_KEY"] = "sk-stub"
    return env


@pytest.fixture(scope="module")
def stub() -> Iterator[PacedStub]:
    with PacedStub(delay=0.05) as server:
        yield server


@pytest.fixture(scope="module")
def stub_chat(stub: PacedStub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Terminal]:
    """One chat process for the provider tests (starting one imports the SDKs: seconds)."""
    where = tmp_path_factory.mktemp("stub-chat")
    config = where / "steerline.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [agents.local]
            provider = "openai"
            model = "stub-model"
            base_url = "{stub.base_url}"
            api_key_env = "STUB_LLM_KEY"
            """
        )
    )
    argv = [STEERLINE, "chat", "--config", str(config), "--agent", "local"]
    terminal = Terminal(argv, cwd=where, env=_env())
    try:
        terminal.wait_for("● idle", timeout=30)
        yield terminal
    finally:
        terminal.close()


@pytest.fixture
def stub_term(stub_chat: Terminal) -> Terminal:
    stub_chat.wait_for("● idle")
    stub_chat.wait_for(lambda t: t.input_line() == ">")
    return stub_chat


@pytest.fixture
def demo_chat(tmp_path: Path) -> Iterator[Terminal]:
    terminal = Terminal([STEERLINE, "chat"], cwd=tmp_path, env=_env())
    try:
        terminal.wait_for("● idle")
        yield terminal
    finally:
        terminal.close()


def test_a_reply_streamed_at_50ms_a_token_stays_whole_on_screen(
    stub: PacedStub, stub_term: Terminal
) -> None:
    # five lines, the last one longer than the terminal is wide
    tokens = [f"word{i:02d}" + ("\n" if i % 8 == 7 and i < 32 else " ") for i in range(48)]
    tokens.append("the end.")
    reply = "".join(tokens)
    stub.push(tokens)
    term = stub_term
    assert "agent local (openai stub-model, in-process)" in term.text()
    term.send("tell me a story" + ENTER)
    term.wait_for("word03")
    term.wait_for("✎ streaming")
    # typing while the reply streams: the input stays editable, the reply intact
    term.send("draft")
    term.wait_for(lambda t: t.input_line() == "> draft")
    term.wait_for("■ completed")
    lines = term.lines()
    for line in reply.split("\n")[:-1]:
        assert lines.count(line.rstrip()) == 1, term.text()
    last = reply.split("\n")[-1]  # longer than the terminal: wrapped at spaces, whole
    assert term.words().count(" ".join(last.split())) == 1, term.text()
    assert term.text().count("you> tell me a story") == 1
    assert term.input_line() == "> draft"
    assert stub.requests[-1]["messages"][-1] == {"role": "user", "content": "tell me a story"}
    term.send(CTRL_C)  # clears the input
    term.wait_for(lambda t: t.input_line() == ">")


def test_esc_aborts_the_provider_stream_and_keeps_the_queue(
    stub: PacedStub, stub_term: Terminal
) -> None:
    stub.push(FOREVER, ["ok, ", "later ", "it is."])
    term = stub_term
    requests = len(stub.requests)
    stub.disconnected.clear()
    term.send("go on forever" + ENTER)
    term.wait_for("tick2")
    term.send("later please" + ALT_ENTER)
    term.wait_for("⏎ follow-up: later please")
    term.wait_for("queued: 1 follow-up")
    term.send(ESC)
    term.wait_for("■ aborted")
    assert stub.disconnected.wait(10), "the provider's HTTP stream was not closed"
    term.wait_for("queue kept: 1 follow-up")
    term.wait_for(KEPT_HINT)
    term.wait_for("● idle")
    assert "follow-up> later please" not in term.text()  # kept, not consumed
    # Enter on an empty input sends the kept queue
    term.send(ENTER)
    term.wait_for("follow-up> later please")
    term.wait_for("ok, later it is.")
    term.wait_for("● idle")
    assert KEPT_HINT not in term.text()
    assert len(stub.requests) == requests + 2


def test_ctrl_c_on_an_empty_input_quits(stub_term: Terminal) -> None:
    stub_term.send(CTRL_C)
    assert stub_term.wait_exit() == 0


def test_newline_key_then_enter_while_running_steers(demo_chat: Terminal) -> None:
    term = demo_chat
    term.send("hello" + CTRL_J + '/call sleep {"seconds": 2}' + SHIFT_ENTER_CSI_U + "world")
    term.wait_for(lambda t: "  world" in t.lines())
    term.send(ENTER)
    term.wait_for("you> hello")
    lines = term.lines()
    at = lines.index("you> hello")
    # each on its own line, sent as one message
    assert lines[at + 1 : at + 3] == ['     /call sleep {"seconds": 2}', "     world"]
    term.wait_for("⚙ tool running: sleep")
    term.send("change of plan" + ENTER)
    term.wait_for("↪ steer: change of plan")
    term.wait_for("steer> change of plan")
    term.wait_for("Echo: change of plan")
    term.wait_for("■ completed")
    text = term.text()
    assert text.index("Echo: hello\nworld") < text.index('⚙ sleep {"seconds": 2}')
    assert text.index("✓ sleep: slept 2s") < text.index("steer> change of plan")  # after_tool


def test_alt_enter_queues_a_follow_up_and_alt_i_interrupts(demo_chat: Terminal) -> None:
    term = demo_chat
    term.send('/call sleep {"seconds": 30}' + CTRL_J + "busy" + ENTER)
    term.wait_for("⚙ tool running: sleep")
    term.send("and then?" + ALT_ENTER)
    term.wait_for("⏎ follow-up: and then?")
    term.send("stop now" + ALT_I)
    term.wait_for("✗ sleep: Cancelled due to queued user message.")
    term.wait_for("steer> stop now")
    term.wait_for("Echo: stop now")
    term.wait_for("follow-up> and then?")
    term.wait_for("Echo: and then?")
    term.wait_for("■ completed")
    text = term.text()
    assert text.index("steer> stop now") < text.index("follow-up> and then?")
    term.send(CTRL_D)
    assert term.wait_exit() == 0


def test_the_demo_reply_streams_with_reasoning_and_survives_quitting(demo_chat: Terminal) -> None:
    term = demo_chat
    words = " ".join(f"w{i}" for i in range(40))
    thought = "a b c d e f g h i j k l m n o p q r s t"
    term.send("/delay 50" + CTRL_J + "/think " + thought + CTRL_J + words + ENTER)
    term.wait_for("✻ thinking")
    term.wait_for("Echo: w0 w1")
    term.send(CTRL_D)  # quit while it streams: aborted, and what streamed stays
    assert term.wait_exit() == 0
    term.wait_for("■ aborted")
    assert thought in term.words()
    assert f"Echo: {words}" not in term.words()  # the reply was cut
