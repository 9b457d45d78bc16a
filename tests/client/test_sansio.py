"""The SDK's sans-IO core, without a socket: decoders, dedupe, backoff, give-up."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steerline.client import (
    BadRequest,
    Conflict,
    InvalidResponse,
    NotFound,
    RateLimited,
    Reconnect,
    ServiceUnavailable,
    StreamFailed,
    WireEvent,
)
from steerline.client._errors import parse_retry_after
from steerline.client._sansio import (
    Hint,
    NDJSONDecoder,
    ResumeCore,
    SSEDecoder,
    decoder_for,
)

SSE = "text/event-stream; charset=utf-8"


def envelope(seq: int, event: str = "message_chunk", text: str = "x") -> dict[str, Any]:
    return {
        "event": event,
        "data": {
            "conversation_id": "c-1",
            "role": "agent",
            "item_id": "i",
            "payload": {"content": text},
        },
        "seq": seq,
    }


def sse_block(seq: int, event: str = "message_chunk", text: str = "x") -> bytes:
    return b"id: %d\ndata: %s\n\n" % (seq, json.dumps(envelope(seq, event, text)).encode())


def wire(seq: int, event: str = "message_chunk", text: str = "x") -> WireEvent:
    e = envelope(seq, event, text)
    return WireEvent(e["event"], e["data"], e["seq"])


def data_lines(value: dict[str, Any]) -> list[str]:
    """An envelope as three ``data:`` lines (split between its members, where
    the newline that joins them is JSON whitespace): a stray line end inside
    the block would cut the JSON."""
    text = json.dumps(value, ensure_ascii=False)
    one, two = text.index(', "data"') + 1, text.index(', "seq"') + 1
    return [f"data: {part}" for part in (text[:one], text[one:two], text[two:])]


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for point in [*points, len(data)]:
        pieces.append(data[last:point])
        last = point
    return pieces


def feed_all(decoder: SSEDecoder | NDJSONDecoder, chunks: list[bytes]) -> list[Any]:
    out: list[Any] = []
    for chunk in chunks:
        out += decoder.feed(chunk)
    return out


# -- the SSE decoder --------------------------------------------------------------------
texts = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
items = st.lists(
    st.one_of(
        st.tuples(st.just("event"), texts),
        st.tuples(st.just("ping"), st.none()),
        st.tuples(st.just("retry"), st.integers(0, 10_000)),
        st.tuples(st.just("resume"), st.integers(0, 10_000)),
        st.tuples(st.just("comment"), st.just("something else")),
    ),
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(items=items, eol=st.sampled_from(["\n", "\r\n", "\r"]), cuts=st.lists(st.integers(0, 10**6)))
def test_sse_decoder_any_chunking_and_line_ending(
    items: list[tuple[str, Any]], eol: str, cuts: list[int]
) -> None:
    """Whatever the chunk boundaries (inside a CRLF, inside a multi-byte
    character) and line endings, the decoder yields the events and hints in
    order; lines before a block (retry, comments) never make an event."""
    lines: list[str] = []
    expected: list[Any] = []
    seq = 0
    for kind, value in items:
        if kind == "event":
            seq += 1
            lines += [f"id: {seq}", *data_lines(envelope(seq, text=value)), ""]
            expected.append(wire(seq, text=value))
        elif kind == "ping":
            lines.append(": ping")
            expected.append(Hint("ping"))
        elif kind == "retry":
            lines.append(f"retry: {value}")
            expected.append(Hint("retry", value))
        elif kind == "resume":
            lines.append(f": resume after={value}")
            expected.append(Hint("resume", value))
        else:
            lines.append(f": {value}")
    body = "".join(line + eol for line in lines).encode()
    decoder = SSEDecoder()
    assert feed_all(decoder, split(body, cuts)) == expected
    assert decoder.end() is False


def test_a_block_without_data_yields_nothing() -> None:
    """``retry:`` or a comment followed by a blank line (what several client
    libraries turn into an empty event), an ``id:`` alone, an empty ``data:``."""
    decoder = SSEDecoder()
    got = decoder.feed(b"retry: 1000\n\n: ping\n\nid: 7\n\ndata:\n\n: just a comment\n\n")
    assert got == [Hint("retry", 1000), Hint("ping")]
    assert decoder.feed(sse_block(1)) == [wire(1)]


def test_retry_and_comments_as_leading_lines_of_a_block() -> None:
    """What the server writes: ``retry:`` and comments precede the next event's lines."""
    decoder = SSEDecoder()
    body = b"retry: 20\n: ping\n: resume after=3\n" + sse_block(4)
    assert decoder.feed(body) == [Hint("retry", 20), Hint("ping"), Hint("resume", 3), wire(4)]


def test_multi_line_data_bom_and_unknown_fields() -> None:
    decoder = SSEDecoder()
    text = json.dumps(envelope(1))
    cut = text.index(', "data"') + 1  # between two members: a newline there is whitespace
    first, second = text[:cut], text[cut:]
    body = (
        b"\xef\xbb\xbfevent: ignored\nfoo: bar\nretry: soon\n"
        + f"data: {first}\ndata: {second}\n\n".encode()
    )
    # the BOM arrives split; "retry: soon" is not digits (ignored); the data
    # lines join with a newline (inside JSON whitespace here)
    assert feed_all(decoder, [body[:1], body[1:2], body[2:]]) == [wire(1)]


def test_seq_from_id_when_the_envelope_has_none() -> None:
    body = b"id: 12\ndata: " + json.dumps({"event": "x", "data": {}}).encode() + b"\n\n"
    assert SSEDecoder().feed(body) == [WireEvent("x", {}, 12)]


def test_a_cut_frame_is_dropped_not_delivered() -> None:
    decoder = SSEDecoder()
    block = sse_block(1)
    assert decoder.feed(block[:-1]) == []  # the closing blank line is missing
    assert decoder.end() is True
    assert SSEDecoder().end() is False


def test_data_that_is_not_an_envelope_is_an_invalid_response() -> None:
    with pytest.raises(InvalidResponse):
        SSEDecoder().feed(b"data: [DONE]\n\n")
    with pytest.raises(InvalidResponse):
        SSEDecoder().feed(b'data: {"event": "x", "data": {}}\n\n')  # no seq, no id


# -- the NDJSON decoder -----------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(
    count=st.integers(0, 20),
    pings=st.lists(st.integers(0, 20), max_size=5),
    crlf=st.booleans(),
    cuts=st.lists(st.integers(0, 10**6)),
)
def test_ndjson_decoder_any_chunking(
    count: int, pings: list[int], crlf: bool, cuts: list[int]
) -> None:
    lines: list[str] = []
    expected: list[Any] = []
    for seq in range(1, count + 1):
        if seq in pings:
            lines.append('{"event":"ping"}')
            expected.append(Hint("ping"))
        lines.append(json.dumps(envelope(seq, text="é" * seq)))
        expected.append(wire(seq, text="é" * seq))
    lines += ["", f'{{"event":"resume","after":{count}}}']
    expected.append(Hint("resume", count))
    eol = "\r\n" if crlf else "\n"
    body = "".join(line + eol for line in lines).encode()
    decoder = NDJSONDecoder()
    assert feed_all(decoder, split(body, cuts)) == expected
    assert decoder.end() is False


def test_ndjson_cut_line_and_bad_line() -> None:
    decoder = NDJSONDecoder()
    assert decoder.feed(json.dumps(envelope(1)).encode()[:-3]) == []
    assert decoder.end() is True
    with pytest.raises(InvalidResponse):
        NDJSONDecoder().feed(b"not json\n")


def test_decoder_by_content_type() -> None:
    assert isinstance(decoder_for(SSE), SSEDecoder)
    assert isinstance(decoder_for("application/x-ndjson"), NDJSONDecoder)
    with pytest.raises(InvalidResponse):
        decoder_for("application/json")


# -- the resume core --------------------------------------------------------------------
FAST = Reconnect(initial_delay=0.5, max_delay=4.0, multiplier=2.0, jitter=0.0, max_attempts=3)


def message_core(reconnect: Reconnect = FAST, seed: int = 1) -> ResumeCore:
    body = {"query": "hi", "conversation_id": "c-1", "mode": "auto", "message_id": "m-1"}
    return ResumeCore.for_message(body, reconnect, random.Random(seed))


def test_message_stream_reposts_the_identical_body() -> None:
    """Before any event: the same POST; after events: the same POST with Last-Event-ID."""
    core = message_core()
    first = core.request()
    assert (first.method, first.path) == ("POST", "/agents/stream")
    assert "Last-Event-ID" not in first.headers
    assert first.headers["Accept"] == "text/event-stream"
    core.opened(SSE)
    core.failed(ConnectionResetError("cut before any event"))
    again = core.request()
    assert again == first
    core.opened(SSE)
    assert core.feed(sse_block(1) + sse_block(2)) == [wire(1), wire(2)]
    core.failed(ConnectionResetError("cut"))
    resumed = core.request()
    assert resumed.json == first.json
    assert resumed.headers["Last-Event-ID"] == "2"
    assert core.reconnects == 2


def test_message_stream_ends_at_its_done() -> None:
    core = message_core()
    core.request()
    core.opened(SSE)
    got = core.feed(sse_block(1) + sse_block(2, "done") + sse_block(3, "task_started"))
    assert [e.seq for e in got] == [1, 2]
    assert core.finished
    core.ended()  # the body's end after done changes nothing
    assert core.finished


def test_events_requests_resume_from_after() -> None:
    core = ResumeCore.for_conversation("a/b", FAST, after=5, follow=True)
    request = core.request()
    assert (request.method, request.path) == ("GET", "/conversations/a%2Fb/stream")
    assert request.params == {"follow": "true"}
    assert request.headers["Last-Event-ID"] == "5"
    core.opened(SSE)
    assert core.feed(sse_block(5) + sse_block(6)) == [wire(6)]
    assert core.last_seq == 6
    assert ResumeCore.for_conversation("c", FAST).request().headers.get("Last-Event-ID") is None


def test_events_already_seen_are_dropped() -> None:
    core = ResumeCore.for_conversation("c-1", FAST)
    core.request()
    core.opened(SSE)
    assert [e.seq for e in core.feed(b"".join(sse_block(s) for s in (1, 2, 3)))] == [1, 2, 3]
    core.failed(TimeoutError("stalled"))
    core.request()
    core.opened(SSE)
    # a server (or a proxy) that sends some of them again: each is delivered once
    replay = b"".join(sse_block(s) for s in (2, 3, 3, 4, 2, 5))
    assert [e.seq for e in core.feed(replay)] == [4, 5]


def test_end_of_body_rules() -> None:
    # events() without follow: the server's end (no resume hint) is the end
    core = ResumeCore.for_conversation("c-1", FAST)
    core.request()
    core.opened(SSE)
    core.feed(sse_block(1))
    core.ended()
    assert core.finished
    # ... but an end after a resume hint (shutdown, slow consumer) is resumed
    core = ResumeCore.for_conversation("c-1", FAST)
    core.request()
    core.opened(SSE)
    core.feed(sse_block(1) + b": resume after=1\n")
    core.ended()
    assert not core.finished and core.delay > 0
    # follow: never over by itself
    core = ResumeCore.for_conversation("c-1", FAST, follow=True)
    core.request()
    core.opened(SSE)
    core.ended()
    assert not core.finished
    # a message stream ended before its done: resumed
    core = message_core()
    core.request()
    core.opened(SSE)
    core.feed(sse_block(1))
    core.ended()
    assert not core.finished and core.request().headers["Last-Event-ID"] == "1"


def test_backoff_grows_caps_and_resets_on_progress() -> None:
    policy = Reconnect(initial_delay=0.5, max_delay=3.0, jitter=0.0, max_attempts=10)
    core = message_core(policy)
    delays = []
    for _ in range(5):
        core.request()
        core.failed(ConnectionRefusedError())
        delays.append(core.delay)
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0]
    core.request()
    core.opened(SSE)
    core.feed(sse_block(1))  # progress
    core.failed(ConnectionResetError())
    assert core.delay == 0.5 and core.failures == 1


def test_a_heartbeat_counts_as_progress_for_giving_up() -> None:
    """An idle follow stream that a proxy cuts now and then is alive: its pings
    reset the count, so it never gives up while the server keeps it."""
    core = ResumeCore.for_conversation("c-1", FAST, follow=True)
    for _ in range(FAST.max_attempts * 3):
        core.request()
        core.opened(SSE)
        assert core.feed(b"retry: 1000\n: ping\n") == []
        core.ended()
        assert core.failures == 1
    assert not core.finished


def test_the_retry_hint_is_the_initial_delay() -> None:
    core = message_core(Reconnect(initial_delay=5.0, jitter=0.0))
    core.request()
    core.opened(SSE)
    core.feed(b"retry: 250\n" + sse_block(1))
    assert core.retry_hint == 0.25
    core.failed(ConnectionResetError())
    assert core.delay == 0.25
    core.request()
    core.failed(ConnectionRefusedError())
    assert core.delay == 0.5


def test_jitter_stays_within_its_fraction() -> None:
    policy = Reconnect(initial_delay=1.0, max_delay=1.0, jitter=0.5, max_attempts=1000)
    core = message_core(policy, seed=7)
    delays = []
    for _ in range(200):
        core.request()
        core.failed(ConnectionRefusedError())
        delays.append(core.delay)
    assert all(0.5 <= d <= 1.0 for d in delays)
    assert len(set(delays)) > 100, "jitter varies the delay"


def test_gives_up_after_max_attempts_without_progress() -> None:
    core = message_core(Reconnect(initial_delay=0.01, max_attempts=3))
    core.request()
    core.opened(SSE)
    core.feed(sse_block(1) + sse_block(2))
    errors = [ConnectionResetError("cut"), *(ConnectionRefusedError(f"down {i}") for i in range(3))]
    for error in errors[:-1]:
        core.failed(error)
        core.request()
    with pytest.raises(StreamFailed) as caught:
        core.failed(errors[-1])
    failed = caught.value
    assert failed.attempts == 3 and failed.last_seq == 2 and failed.conversation_id == "c-1"
    assert failed.last_error is errors[-1] and failed.__cause__ is errors[-1]
    assert core.finished


def test_zero_attempts_never_reconnects() -> None:
    core = message_core(Reconnect(max_attempts=0))
    core.request()
    with pytest.raises(StreamFailed):
        core.failed(ConnectionRefusedError())


def error_body(code: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": f"{code}!"}}).encode()


def test_refused_statuses() -> None:
    # 503 is retried, after Retry-After at least
    core = message_core(Reconnect(initial_delay=0.01, jitter=0.0))
    core.request()
    core.refused(503, {"retry-after": "2"}, error_body("storage_unavailable"))
    assert core.delay == 2.0 and isinstance(core.last_error, ServiceUnavailable)
    core.request()
    core.refused(502, {}, b"<html>bad gateway</html>")
    assert not core.finished
    # 429 when reconnecting is retried (a dropped stream's slot may still count)
    core.request()
    core.refused(429, {"retry-after": "1"}, error_body("too_many_streams"))
    assert core.delay == 1.0
    # anything else is the typed error
    core.request()
    with pytest.raises(Conflict) as conflict:
        core.refused(409, {}, error_body("resume_too_old"))
    assert conflict.value.code == "resume_too_old" and core.finished
    # a 429 on the first attempt is the caller's to see
    first = message_core()
    first.request()
    with pytest.raises(RateLimited) as limited:
        first.refused(429, {"retry-after": "3"}, error_body("too_many_runs"))
    assert limited.value.retry_after == 3.0
    for status, cls in ((404, NotFound), (400, BadRequest), (422, BadRequest)):
        core = ResumeCore.for_conversation("c-1", FAST)
        core.request()
        with pytest.raises(cls):
            core.refused(status, {}, error_body("x"))


def test_reconnect_settings_are_checked() -> None:
    for bad in (
        {"initial_delay": -1},
        {"max_delay": float("inf")},
        {"stall_timeout": 0},
        {"multiplier": 0.5},
        {"jitter": 1.5},
        {"max_attempts": -1},
    ):
        with pytest.raises(ValueError):
            Reconnect(**bad)


def test_a_message_stream_needs_its_ids() -> None:
    with pytest.raises(ValueError):
        ResumeCore.for_message({"query": "hi"}, FAST)


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=1445412480.0) == 30.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=1445412600.0) == 0.0
    for bad in (None, "soon", "nan", "inf", "Wed, 21 Oct 2015 07:28:30"):
        assert parse_retry_after(bad) is None


def test_reconnecting_from_a_lost_connection_until_the_next_answer() -> None:
    """What a UI shows: not while the first attempt is under way, yes from a lost
    connection until a new one is answered, and no more once the stream ends."""
    core = ResumeCore.for_conversation("c-1", FAST, follow=True)
    core.request()
    assert (core.connected, core.reconnecting) == (False, False)
    core.opened("text/event-stream")
    core.feed(sse_block(1))
    assert (core.connected, core.reconnecting) == (True, False)
    core.failed(ConnectionResetError())
    assert (core.connected, core.reconnecting) == (False, True)
    core.request()
    assert core.reconnecting  # still lost while the attempt is under way
    core.refused(503, {}, b"")
    assert core.reconnecting
    core.request()
    core.opened("text/event-stream")
    assert (core.connected, core.reconnecting) == (True, False)

    message = message_core()
    message.request()
    message.opened("text/event-stream")
    message.feed(sse_block(1, "done"))
    assert message.finished
    assert (message.connected, message.reconnecting) == (False, False)
