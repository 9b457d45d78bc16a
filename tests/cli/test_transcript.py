"""The chat's transcript model, without a terminal: events in, lines out."""

from __future__ import annotations

import itertools

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prompt_toolkit.utils import get_cwidth

from steerline.cli.session import apply_event
from steerline.cli.transcript import (
    KEPT_QUEUE_HINT,
    Line,
    QueueItem,
    Transcript,
    line_text,
    printable,
    wrap_line,
    wrap_rows,
)
from steerline.models.demo import DemoModel
from steerline.runtime.agent import Agent
from steerline.tools.builtin import demo_tools


def _texts(lines: list[Line]) -> list[str]:
    return [line_text(line) for line in lines]


def _chunks(text: str, cuts: list[int]) -> list[str]:
    points = sorted({0, len(text), *(c % (len(text) + 1) for c in cuts)})
    return [text[a:b] for a, b in itertools.pairwise(points)]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# -- every delta kept, in order, whatever the chunking ----------------------------------

stream_text = st.text(alphabet=st.sampled_from(list("ab c\n\n界é🙂\t.")), min_size=0, max_size=200)


@settings(max_examples=300, deadline=None)
@given(text=stream_text, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=40))
def test_every_delta_is_kept_in_order_whatever_the_chunking(text: str, cuts: list[int]) -> None:
    transcript = Transcript()
    transcript.block_started("text")
    shown: list[str] = []
    for piece in _chunks(text, cuts):
        transcript.delta("text", piece)
        shown += _texts(transcript.take_committed())  # the view takes lines as they finish
        live = _texts(transcript.live_lines())
        assert len(live) <= 1 and "\n" not in "".join(live)
    transcript.block_ended()
    shown += _texts(transcript.take_committed())
    assert transcript.live_lines() == []
    expected = printable(text)
    if expected.endswith("\n"):
        expected = expected[:-1]  # the last newline ends the last line
    assert "\n".join(shown) == expected if text else shown == []


@settings(max_examples=200, deadline=None)
@given(
    text=stream_text,
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=40),
    width=st.integers(min_value=2, max_value=30),
    rows=st.integers(min_value=1, max_value=4),
)
def test_spilling_long_lines_to_the_scrollback_loses_nothing(
    text: str, cuts: list[int], width: int, rows: int
) -> None:
    """The view spills a live line taller than the screen: the text is still all there."""
    transcript = Transcript()
    committed: list[str] = []
    for piece in _chunks(text, cuts):
        transcript.delta("thinking", piece)
        transcript.spill(width, rows)
        for line in _texts(transcript.take_committed()):
            committed.append(line)
        for line in _texts(transcript.live_lines()):
            assert len(wrap_rows(line, width)) <= rows
    transcript.block_ended()
    committed += _texts(transcript.take_committed())
    assert "".join(committed).replace("\n", "") == printable(text).replace("\n", "")


def test_wrap_rows_cuts_at_spaces_and_keeps_every_character() -> None:
    assert wrap_rows("aaa bbb ccc", 5) == ["aaa ", "bbb ", "ccc"]
    assert wrap_rows("aaaa bbbb", 4) == ["aaaa ", "bbbb"]  # the break space ends the row
    assert wrap_rows("abcdefgh", 3) == ["abc", "def", "gh"]  # a word longer than a row
    assert wrap_rows("ab界c", 3) == ["ab", "界c"]  # a wide character never straddles
    assert wrap_rows("", 3) == [""]
    rows = wrap_line([("class:a", "hello "), ("class:b", "world wide web")], 8)
    assert rows == [[("class:a", "hello ")], [("class:b", "world ")], [("class:b", "wide web")]]
    assert wrap_line([("", "aaaa bbbb")], 4) == [[("", "aaaa")], [("", "bbbb")]]


def test_labelled_lines_wrap_beside_their_label() -> None:
    transcript = Transcript()
    transcript.user_message("steer", "one two three four five six seven eight nine ten")
    rows = [line_text(row) for line in transcript.take_committed() for row in wrap_line(line, 30)]
    assert rows == ["steer> one two three four five", "       six seven eight nine ", "       ten"]


@settings(max_examples=300, deadline=None)
@given(text=stream_text.map(lambda t: t.replace("\n", "")), width=st.integers(1, 12))
def test_wrapped_rows_fit_and_join_back(text: str, width: int) -> None:
    rows = wrap_rows(text, width)
    assert "".join(rows) == text
    for row in wrap_line([("", text)], width):
        shown = line_text(row)
        assert get_cwidth(shown) <= width or len(shown) == 1


def test_interleaved_reasoning_and_text_keep_their_styles_and_order() -> None:
    transcript = Transcript()
    transcript.delta("thinking", "let me th")
    transcript.delta("thinking", "ink\nmore")
    transcript.delta("text", "Answer: ")  # no thinking_end: the text closes the reasoning
    transcript.delta("text", "42")
    transcript.block_ended()
    lines = transcript.take_committed()
    assert _texts(lines) == ["let me think", "more", "Answer: 42"]
    assert [line[0][0] for line in lines] == ["class:reasoning"] * 2 + ["class:text"]


def test_control_characters_cannot_drive_the_terminal() -> None:
    transcript = Transcript()
    transcript.delta("text", "red \x1b[31mtext\x07\r\n\x9b2J tab\tend")
    transcript.block_ended()
    assert _texts(transcript.take_committed()) == ["red ^[[31mtext^G", "<9b>2J tab    end"]
    transcript.tool_started("c1", "ev\x1bil", {"k": "\x1b"})
    assert "\x1b" not in "".join(_texts(transcript.take_committed()))


def test_user_messages_tools_and_run_end() -> None:
    clock = Clock()
    transcript = Transcript(clock)
    transcript.run_started("run-1")
    transcript.user_message("prompt", "hello\n/call sleep {}")
    transcript.tool_started("c1", "sleep", {"seconds": 2})
    transcript.tool_started("c2", "clock", {})
    transcript.tool_ended("c2", "clock", "noon", is_error=False, skipped=False)
    transcript.tool_ended(
        "c1", "sleep", "Skipped due to queued user message.", is_error=True, skipped=True
    )
    transcript.user_message("steer", "stop")
    clock.now += 2.5
    transcript.run_ended("completed")
    assert _texts(transcript.take_committed()) == [
        "",
        "you> hello",
        "     /call sleep {}",
        '⚙ sleep {"seconds": 2}',
        "⚙ clock {}",
        "  ✓ clock: noon",
        "  ⤼ skipped sleep: Skipped due to queued user message.",
        "steer> stop",
        "■ completed · 2.5s",
    ]


def test_long_tool_results_are_cut() -> None:
    transcript = Transcript()
    transcript.tool_ended(
        "c", "cat", "\n".join(f"l{i}" for i in range(10)), is_error=False, skipped=False
    )
    assert _texts(transcript.take_committed()) == [
        "  ✓ cat: l0",
        "         l1",
        "         l2",
        "         l3",
        "         … 6 more lines",
    ]


def test_status_line_idle_streaming_and_tool_running_with_elapsed_seconds() -> None:
    clock = Clock()
    transcript = Transcript(clock)
    status = lambda: line_text(transcript.status_line())  # noqa: E731
    assert status() == "● idle"
    transcript.run_started("run-1")
    clock.now += 0.4
    assert status() == "◌ waiting for the model 0.4s"
    transcript.delta("thinking", "hm")
    assert status().startswith("✻ thinking")
    transcript.delta("text", "hi")
    clock.now += 1.0
    assert status() == "✎ streaming 1.4s"
    transcript.tool_started("c1", "sleep", {})
    clock.now += 2.0
    assert status() == "⚙ tool running: sleep 2.0s · run 3.4s"
    transcript.tool_ended("c1", "sleep", "ok", is_error=False, skipped=False)
    assert status().startswith("◌ waiting for the model")
    transcript.run_ended("aborted")
    assert status() == "● idle · last run aborted"


def test_the_queue_shows_counts_previews_and_the_kept_queue_hint() -> None:
    transcript = Transcript()
    transcript.run_started()
    transcript.queue_changed(
        [
            QueueItem("m1", "steering", "go left"),
            QueueItem("m2", "follow_up", "and then?"),
            QueueItem("m3", "follow_up", "bye"),
        ]
    )
    assert _texts(transcript.queue_lines()) == [
        "queued: 1 steering, 2 follow-up",
        "  ↪ steer: go left",
        "  ⏎ follow-up: and then?",
        "  ⏎ follow-up: bye",
    ]
    transcript.run_ended("aborted")
    lines = _texts(transcript.queue_lines())
    assert lines[0] == "queue kept: 1 steering, 2 follow-up"
    assert lines[-1] == f"  {KEPT_QUEUE_HINT} · Alt+↑ edits it"
    transcript.queue_changed([QueueItem("m4", "follow_up", "two\nlines")])
    assert _texts(transcript.queue_lines())[1] == "  ⏎ follow-up: two ⏎ lines"
    transcript.queue_changed([])
    assert transcript.queue_lines() == []


# -- native events through the in-process adapter -------------------------------------


@pytest.mark.anyio
async def test_a_demo_run_through_native_events() -> None:
    agent = Agent(model=DemoModel(), tools=demo_tools())
    transcript = Transcript(Clock())
    agent.subscribe(lambda event: apply_event(transcript, event))
    await agent.prompt('/think hmm\n/call calculator {"expression": "6*7"}\nHi there')
    assert _texts(transcript.take_committed()) == [
        "",
        "you> /think hmm",
        '     /call calculator {"expression": "6*7"}',
        "     Hi there",
        "hmm",
        "Echo: Hi there",
        '⚙ calculator {"expression": "6*7"}',
        "  ✓ calculator: 42",
        "hmm",  # directives hold until the next user message
        "Results: calculator=42",
        "■ completed · 0.0s",
    ]
    assert not transcript.running


@pytest.mark.anyio
async def test_streamed_demo_text_is_whole_at_any_speed() -> None:
    """Zero delay: tokens come in batches between two event-loop turns; all kept."""
    text = " ".join(f"w{i}" for i in range(2000))
    agent = Agent(model=DemoModel())
    transcript = Transcript()
    agent.subscribe(lambda event: apply_event(transcript, event))
    shown: list[str] = []

    async def view() -> None:
        while True:  # what the view does on each redraw
            transcript.spill(80, 5)
            shown.extend(_texts(transcript.take_committed()))
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as group:
        group.start_soon(view)
        await agent.prompt(text)
        await anyio.lowlevel.checkpoint()
        group.cancel_scope.cancel()
    shown.extend(_texts(transcript.take_committed()))
    start = shown.index(f"you> {text}") + 1
    end = next(i for i, line in enumerate(shown) if line.startswith("■"))
    assert "".join(shown[start:end]) == f"Echo: {text}"
    assert len(shown[start:end]) > 10  # it was spilled as it streamed
