"""The per-token path of the translator writes exactly what the general path writes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from steerline.wire.envelope import EventName
from steerline.wire.payloads import Content
from steerline.wire.translate import RunTranslator

texts = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40)


def _translator(sink: list[tuple[EventName, bytes, str | None]]) -> RunTranslator:
    translator = RunTranslator('conv-é"1', "agent \\ x", lambda *args: sink.append(args))
    return translator


@given(
    deltas=st.lists(st.tuples(st.sampled_from(["item-a", "item-b"]), texts), max_size=6),
    thread=st.sampled_from([None, "", "thread-1"]),
    task=st.sampled_from([None, "run-1"]),
    event=st.sampled_from([EventName.MESSAGE_CHUNK, EventName.REASONING]),
)
def test_delta_is_byte_identical_to_emit(
    deltas: list[tuple[str, str]], thread: str | None, task: str | None, event: EventName
) -> None:
    fast: list[tuple[EventName, bytes, str | None]] = []
    slow: list[tuple[EventName, bytes, str | None]] = []
    fast_translator, slow_translator = _translator(fast), _translator(slow)
    for translator in (fast_translator, slow_translator):
        translator.thread_id, translator.task_id = thread, task
    for item, text in deltas:
        fast_translator.delta(event, item, text)
        slow_translator.emit(event, "agent", item_id=item, payload=Content(content=text))
    assert fast == slow


def test_a_new_thread_or_run_changes_the_cached_envelope() -> None:
    out: list[tuple[EventName, bytes, str | None]] = []
    translator = _translator(out)
    translator.thread_id, translator.task_id = "thread-1", "run-1"
    translator.delta(EventName.MESSAGE_CHUNK, "item-a", "x")
    translator.thread_id, translator.task_id = "thread-2", "run-2"
    translator.delta(EventName.MESSAGE_CHUNK, "item-a", "y")
    assert b'"thread_id":"thread-1","task_id":"run-1"' in out[0][1]
    assert b'"thread_id":"thread-2","task_id":"run-2"' in out[1][1] and out[1][2] == "run-2"
