"""Wire events (SPEC §3.2) → the chat's transcript, without I/O (``chat --url``)."""

from __future__ import annotations

import json
from typing import Any

from steerline.cli.remote import WireFeed
from steerline.cli.transcript import Transcript, line_text
from steerline.client import WireEvent


def _events(*specs: tuple[str, dict[str, Any]]) -> list[WireEvent]:
    out = []
    for seq, (name, fields) in enumerate(specs, start=1):
        data = {"conversation_id": "conv-1", "role": "agent", "item_id": f"i{seq}", **fields}
        out.append(WireEvent(event=name, data=data, seq=seq))
    return out


def _lines(transcript: Transcript) -> list[str]:
    return [line_text(line) for line in transcript.take_committed()]


def test_a_run_with_a_steer_a_tool_and_chunks_of_two_paragraphs() -> None:
    transcript = Transcript(clock=lambda: 0.0)
    feed = WireFeed(transcript)
    result = json.dumps([{"content": "slept 1s"}])
    events = _events(
        ("task_started", {"task_id": "run-1"}),
        ("thread_started", {"payload": {"content": "hi"}, "metadata": {"delivery": "prompt"}}),
        ("reasoning_started", {"item_id": "r"}),
        ("reasoning", {"item_id": "r", "payload": {"content": "let me "}}),
        ("reasoning", {"item_id": "r", "payload": {"content": "think"}}),
        ("reasoning_completed", {"item_id": "r"}),
        ("message_chunk", {"item_id": "p1", "payload": {"content": "Echo: "}}),
        ("message_chunk", {"item_id": "p1", "payload": {"content": "hi"}}),
        (
            "tool_call_started",
            {"payload": {"tool_call_id": "c1", "tool_name": "sleep", "tool_args": {"s": 1}}},
        ),
        (
            "queue_updated",
            {
                "role": "system",
                "payload": {
                    "steering": [{"id": "m1", "preview": "turn left"}],
                    "follow_up": [{"id": "m2", "preview": "and then"}],
                },
            },
        ),
        (
            "tool_call_completed",
            {
                "payload": {
                    "tool_call_id": "c1",
                    "tool_name": "sleep",
                    "tool_result": result,
                    "is_error": False,
                    "skipped": False,
                }
            },
        ),
        (
            "thread_started",
            {"payload": {"content": "turn left"}, "metadata": {"delivery": "steer"}},
        ),
        ("queue_updated", {"payload": {"steering": [], "follow_up": []}}),
        ("message_chunk", {"item_id": "p2", "payload": {"content": "Echo: turn "}}),
        ("message_chunk", {"item_id": "p3", "payload": {"content": "second"}}),
    )
    for event in events[:10]:
        feed(event)
    assert transcript.running and transcript.phase == "tool"
    assert [(q.lane, q.text) for q in transcript.queued] == [
        ("steering", "turn left"),
        ("follow_up", "and then"),
    ]
    for event in events[10:]:
        feed(event)
    feed(_events(("done", {"payload": {"stop_reason": "completed"}}))[0])
    assert not transcript.running and transcript.queued == []
    assert _lines(transcript) == [
        "",
        "you> hi",
        "let me think",
        "Echo: hi",
        '⚙ sleep {"s": 1}',
        "  ✓ sleep: slept 1s",
        "steer> turn left",
        "Echo: turn ",  # a new item_id closes the previous paragraph
        "second",
        "■ completed · 0.0s",
    ]


def test_a_failed_run_shows_its_error_and_a_skipped_tool() -> None:
    transcript = Transcript(clock=lambda: 0.0)
    feed = WireFeed(transcript)
    for event in _events(
        ("task_started", {"task_id": "run-1"}),
        (
            "tool_call_completed",
            {
                "payload": {
                    "tool_call_id": "c1",
                    "tool_name": "clock",
                    "tool_result": json.dumps([{"content": "Skipped due to queued user message."}]),
                    "is_error": True,
                    "skipped": True,
                }
            },
        ),
        ("system_failed", {"payload": {"code": "x", "message": "m", "content": "the model broke"}}),
        ("task_failed", {"payload": {"stop_reason": "error", "error": "the model broke"}}),
        ("done", {"payload": {"stop_reason": "error"}}),
        ("some_future_event", {"payload": {"anything": 1}}),
    ):
        feed(event)
    lines = _lines(transcript)
    assert "  ⤼ skipped clock: Skipped due to queued user message." in lines
    # said once: the run's end does not repeat the system_failed notice
    assert [line for line in lines if "the model broke" in line] == ["the model broke"]
    assert lines[-1] == "■ error · 0.0s"
    assert transcript.last_stop == "error"
