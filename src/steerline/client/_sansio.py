"""The SDK's streams without I/O: byte decoders and the resume core.

Both shells (:mod:`._async`, :mod:`._sync`) drive one :class:`ResumeCore`
the same way, so every decision about a stream is made here and tested
without a socket::

    while not core.finished:
        wait(core.delay)                           # 0 before the first attempt
        request = core.request()                   # method, path, headers, body
        try:
            response = send(request)
        except httpx2.TransportError as exc:
            core.failed(exc)                       # schedules a retry, or raises StreamFailed
            continue
        if response.status != 200:
            core.refused(status, headers, body)    # raises the APIError, or schedules a retry
            continue
        core.opened(content_type)
        try:
            for chunk in response:
                yield from core.feed(chunk)        # new events only, in order; sets finished
                if core.finished: break
        except httpx2.TransportError as exc:
            core.failed(exc)
            continue
        core.ended()                               # the server ended the body

How a stream resumes (docs/client.md):

- ``events()`` reconnects with ``GET …/stream`` and ``Last-Event-ID: <last seq>``;
- ``stream()`` always carries a ``message_id`` and a ``conversation_id``, so
  it re-POSTs the identical body (with ``Last-Event-ID`` once an event
  arrived): the server queues nothing twice and answers the rest of the same
  slice, which ends at the ``done`` of the run that handles the message.

Any event with ``seq <= last`` is dropped, so the caller sees each event
exactly once, in order.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

import msgspec

from steerline.client._errors import InvalidResponse, StreamFailed, error_from_response
from steerline.client._models import Reconnect, WireEvent

SSE_MEDIA_TYPE = "text/event-stream"
NDJSON_MEDIA_TYPE = "application/x-ndjson"

RETRYABLE_STATUSES = frozenset({502, 503, 504})
"""Statuses a stream retries at any attempt (a proxy's or the server's "not now")."""


@dataclass(frozen=True, slots=True)
class Hint:
    """Something a stream carries that is not an event.

    ``ping`` (a heartbeat), ``retry`` (the SSE ``retry:`` field, in ms: the
    server's reconnection delay) or ``resume`` (the server is about to end the
    stream; resume after ``value``).
    """

    kind: Literal["ping", "retry", "resume"]
    value: int | None = None


Item = WireEvent | Hint


class _Envelope(msgspec.Struct):
    event: str
    data: dict[str, Any]
    seq: int | None = None


class _Line(msgspec.Struct):
    """An NDJSON line: an envelope, or a hint (``ping``, ``resume`` with ``after``)."""

    event: str
    data: dict[str, Any] | None = None
    seq: int | None = None
    after: int | None = None


_envelope = msgspec.json.Decoder(_Envelope)
_line = msgspec.json.Decoder(_Line)
_EOL = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"
_DIGITS = re.compile(rb"[0-9]+")
_RESUME = re.compile(r"resume after=([0-9]+)")


class SSEDecoder:
    """An incremental ``text/event-stream`` parser (the WHATWG algorithm).

    Bytes may be split anywhere, lines end in CRLF, LF or CR, a leading BOM
    is skipped. A blank line dispatches the block; a block without ``data:``
    (a ``retry:`` or comment alone) yields nothing, never an empty event.
    Comments ``: ping`` and ``: resume after=N`` and the ``retry:`` field
    become :class:`Hint` items. Each ``data`` must be a wire envelope; its
    ``seq`` (or, without one, the block's ``id:``) is the event's.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._started = False
        self._skip_lf = False
        self._data: list[bytes] = []
        self._id: bytes | None = None

    def feed(self, chunk: bytes) -> list[Item]:
        buffer = self._buffer
        buffer += chunk
        if not self._started:
            if len(buffer) < len(_BOM) and _BOM.startswith(buffer):
                return []
            if buffer.startswith(_BOM):
                del buffer[: len(_BOM)]
            self._started = True
        out: list[Item] = []
        position = 0
        if self._skip_lf and buffer:
            # the previous chunk ended with CR: a LF now belongs to that line end
            if buffer[0] == 0x0A:
                position = 1
            self._skip_lf = False
        for match in _EOL.finditer(buffer, position):
            self._line(bytes(buffer[position : match.start()]), out)
            position = match.end()
            if match.group() == b"\r" and position == len(buffer):
                self._skip_lf = True
        del buffer[:position]
        return out

    def end(self) -> bool:
        """The body ended; True if it ended inside a line or block (a cut frame,
        dropped: the event is sent again after a resume)."""
        truncated = bool(self._buffer) or bool(self._data)
        self._buffer.clear()
        self._data.clear()
        self._id = None
        return truncated

    def _line(self, line: bytes, out: list[Item]) -> None:
        if not line:
            self._dispatch(out)
            return
        if line[0] == 0x3A:  # ":" a comment
            text = line[1:].decode("utf-8", "replace").strip()
            if text == "ping":
                out.append(Hint("ping"))
            elif resume := _RESUME.fullmatch(text):
                out.append(Hint("resume", int(resume.group(1))))
            return
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"id":
            if b"\0" not in value:
                self._id = value
        elif name == b"retry" and _DIGITS.fullmatch(value):
            out.append(Hint("retry", int(value)))
        # "event" and unknown fields: ignored (the envelope names the event)

    def _dispatch(self, out: list[Item]) -> None:
        data, block_id = self._data, self._id
        self._data, self._id = [], None
        if not data:
            return
        payload = b"\n".join(data)
        if not payload.strip():
            return
        try:
            envelope = _envelope.decode(payload)
        except msgspec.DecodeError as exc:
            raise InvalidResponse(
                f"an SSE event that is not a wire envelope: {payload[:200]!r}"
            ) from exc
        seq = envelope.seq
        if seq is None and block_id is not None and _DIGITS.fullmatch(block_id):
            seq = int(block_id)
        if seq is None:
            raise InvalidResponse(f"an SSE event without a seq: {payload[:200]!r}")
        out.append(WireEvent(envelope.event, envelope.data, seq))


class NDJSONDecoder:
    """An incremental ``application/x-ndjson`` parser: one JSON object per line.

    ``{"event":"ping"}`` and ``{"event":"resume","after":N}`` are hints, not
    events; blank lines and other objects without a ``seq`` are skipped.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> list[Item]:
        buffer = self._buffer
        buffer += chunk
        out: list[Item] = []
        position = 0
        while (end := buffer.find(b"\n", position)) >= 0:
            self._line(bytes(buffer[position:end]), out)
            position = end + 1
        del buffer[:position]
        return out

    def end(self) -> bool:
        truncated = bool(self._buffer.strip())
        self._buffer.clear()
        return truncated

    @staticmethod
    def _line(line: bytes, out: list[Item]) -> None:
        if not line.strip():
            return
        try:
            value = _line.decode(line)
        except msgspec.DecodeError as exc:
            raise InvalidResponse(
                f"an NDJSON line that is not a wire envelope: {line[:200]!r}"
            ) from exc
        if value.seq is not None:
            out.append(WireEvent(value.event, value.data or {}, value.seq))
        elif value.event == "ping":
            out.append(Hint("ping"))
        elif value.event == "resume" and value.after is not None:
            out.append(Hint("resume", value.after))


Decoder = SSEDecoder | NDJSONDecoder


def decoder_for(content_type: str | None) -> Decoder:
    """The decoder of a stream answer by its ``Content-Type``."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == SSE_MEDIA_TYPE:
        return SSEDecoder()
    if media == NDJSON_MEDIA_TYPE:
        return NDJSONDecoder()
    raise InvalidResponse(f"expected an event stream, the server answered {content_type!r}")


def conversation_path(conversation_id: str, *rest: str) -> str:
    """``/conversations/{id}/…`` with each segment percent-encoded."""
    segments = [quote(conversation_id, safe=""), *(quote(part, safe="") for part in rest)]
    return "/conversations/" + "/".join(segments)


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """One attempt's request; ``path`` is relative to the ``/api/v1`` prefix."""

    method: Literal["GET", "POST"]
    path: str
    headers: dict[str, str]
    params: dict[str, str] = field(default_factory=dict)
    json: dict[str, Any] | None = None


STREAM_HEADERS = {
    "Accept": SSE_MEDIA_TYPE,
    # a compressed live stream would be buffered by the decompressor and proxies
    "Accept-Encoding": "identity",
    "Cache-Control": "no-cache",
}


class ResumeCore:
    """The resume state of one stream: what to request, what is new, when to retry.

    Build it with :meth:`for_message` (``stream()``) or :meth:`for_conversation`
    (``events()``). ``rng`` draws the jitter (seed it in tests).
    """

    def __init__(
        self,
        *,
        conversation_id: str | None,
        reconnect: Reconnect,
        body: dict[str, Any] | None = None,
        after: int | None = None,
        follow: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        self.conversation_id = conversation_id
        self.reconnect = reconnect
        self._body = body
        self._follow = follow
        self._rng = rng or random.Random()
        self.last_seq: int | None = after
        """The seq of the last event delivered (or the ``after`` it started from)."""
        self.retry_hint: float | None = None
        """The server's ``retry:`` hint in seconds, once it sent one."""
        self.delay = 0.0
        """Seconds to wait before the next attempt."""
        self.failures = 0
        """Attempts in a row that ended without delivering a new event (or a heartbeat)."""
        self.attempts = 0
        """Requests sent so far (the first and every reconnection)."""
        self.finished = False
        self.connected = False
        """An attempt was answered 200 and its body is being read."""
        self.last_error: BaseException | None = None
        self._decoder: Decoder | None = None
        self._hinted = False

    @classmethod
    def for_message(
        cls, body: dict[str, Any], reconnect: Reconnect, rng: random.Random | None = None
    ) -> ResumeCore:
        """``POST /agents/stream`` with ``body``, which must carry ``conversation_id``
        and ``message_id`` (that makes a re-POST idempotent)."""
        if not body.get("conversation_id") or not body.get("message_id"):
            raise ValueError("a resumable message stream needs a conversation_id and a message_id")
        return cls(conversation_id=body["conversation_id"], reconnect=reconnect, body=body, rng=rng)

    @classmethod
    def for_conversation(
        cls,
        conversation_id: str,
        reconnect: Reconnect,
        *,
        after: int | None = None,
        follow: bool = False,
        rng: random.Random | None = None,
    ) -> ResumeCore:
        """``GET /conversations/{id}/stream`` from ``after`` (None: the log's start)."""
        return cls(
            conversation_id=conversation_id,
            reconnect=reconnect,
            after=after,
            follow=follow,
            rng=rng,
        )

    @property
    def reconnects(self) -> int:
        """Reconnection attempts made (requests after the first)."""
        return max(0, self.attempts - 1)

    @property
    def reconnecting(self) -> bool:
        """The connection was lost (or never made) and no new one is open yet:
        what a client shows as "reconnecting" while the stream waits to resume."""
        return not self.finished and not self.connected and self.failures > 0

    # -- the attempt ------------------------------------------------------------------
    def request(self) -> StreamRequest:
        """The next attempt's request (send it after waiting :attr:`delay`)."""
        if self.finished:
            raise RuntimeError("the stream is finished")
        self.attempts += 1
        self._decoder = None
        self._hinted = False
        headers = dict(STREAM_HEADERS)
        if self.last_seq is not None:
            headers["Last-Event-ID"] = str(self.last_seq)
        if self._body is not None:
            return StreamRequest("POST", "/agents/stream", headers, json=self._body)
        assert self.conversation_id is not None
        params = {"follow": "true"} if self._follow else {}
        return StreamRequest(
            "GET", conversation_path(self.conversation_id, "stream"), headers, params
        )

    def opened(self, content_type: str | None) -> None:
        """The attempt was answered 200 with this ``Content-Type``."""
        self._decoder = decoder_for(content_type)
        self.connected = True

    def feed(self, chunk: bytes) -> list[WireEvent]:
        """Bytes of the body; returns the new events, in order (none seen before).

        Sets :attr:`finished` at the end of a message stream (its ``done``);
        anything after that in ``chunk`` is not returned.
        """
        if self._decoder is None:
            raise RuntimeError("feed() before opened()")
        out: list[WireEvent] = []
        for item in self._decoder.feed(chunk):
            if isinstance(item, Hint):
                if item.kind == "retry" and item.value is not None:
                    self.retry_hint = item.value / 1000
                elif item.kind == "resume":
                    self._hinted = True
                else:
                    # a heartbeat: the server keeps this stream alive, so an idle
                    # follow stream cut now and then (a proxy's idle timeout) is
                    # not a server that is gone
                    self.failures = 0
                continue
            if self.last_seq is not None and item.seq <= self.last_seq:
                continue  # seen before this reconnection
            self.last_seq = item.seq
            self.failures = 0  # progress: the backoff starts over
            if self.conversation_id is None:
                conversation_id = item.data.get("conversation_id")
                if isinstance(conversation_id, str):
                    self.conversation_id = conversation_id
            out.append(item)
            if self._body is not None and item.event == "done":
                self.finished = True
                self.connected = False
                self._decoder = None
                break
        return out

    def ended(self) -> None:
        """The server ended the body.

        ``events()`` without ``follow`` is over when the server ends it
        without a resume hint (after the ``done`` it waited for, or when
        caught up). A message stream is over only at its ``done``; a
        ``follow`` stream never: anything else is resumed.
        """
        if self.finished:
            return
        if self._decoder is not None:
            self._decoder.end()
        if self._body is None and not self._follow and not self._hinted:
            self.finished = True
            self.connected = False
            self._decoder = None
            return
        self._fail(None)

    def failed(self, error: BaseException) -> None:
        """The attempt failed in transit (refused, reset, cut, timed out, ...)."""
        if self._decoder is not None:
            self._decoder.end()
        self._fail(error)

    def refused(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        """The attempt was answered with an error status.

        502, 503 and 504 are retried (after ``Retry-After`` when given), and
        so is a 429 when reconnecting (the server may not have released the
        dropped connection's stream slot yet); anything else raises its
        :class:`~steerline.client.APIError`.
        """
        error = error_from_response(status, headers, body)
        if status not in RETRYABLE_STATUSES and not (status == 429 and self.attempts > 1):
            self.finished = True
            raise error
        self._fail(error, getattr(error, "retry_after", None))

    # -- backoff ----------------------------------------------------------------------
    def backoff(self, failures: int) -> float:
        """The delay before the reconnection that follows ``failures`` failed attempts."""
        policy = self.reconnect
        initial = self.retry_hint if self.retry_hint is not None else policy.initial_delay
        try:
            base = min(policy.max_delay, initial * policy.multiplier ** max(0, failures - 1))
        except OverflowError:
            base = policy.max_delay
        return base * (1 - policy.jitter * self._rng.random())

    def _fail(self, error: BaseException | None, at_least: float | None = None) -> None:
        self._decoder = None
        self.connected = False
        self.last_error = error
        self.failures += 1
        if self.failures > self.reconnect.max_attempts:
            self.finished = True
            what = (
                f"{type(error).__name__}: {error}"
                if error is not None
                else "the server ended the stream early"
            )
            raise StreamFailed(
                f"stream of {self.conversation_id or 'a new conversation'} gave up after "
                f"{self.failures - 1} reconnection attempt(s) without a new event "
                f"(last seq {self.last_seq}); last error: {what}",
                last_error=error,
                last_seq=self.last_seq,
                attempts=self.failures - 1,
                conversation_id=self.conversation_id,
            ) from error
        delay = self.backoff(self.failures)
        if at_least is not None:
            delay = max(delay, at_least)
        self.delay = delay


class StreamState:
    """What both stream shells tell of their :class:`ResumeCore` (one definition
    for ``EventStream`` and ``AsyncEventStream``)."""

    _core: ResumeCore

    @property
    def conversation_id(self) -> str | None:
        """The conversation streamed (for ``stream()`` known at once: the SDK names a
        new conversation itself)."""
        return self._core.conversation_id

    @property
    def last_seq(self) -> int | None:
        """The seq of the last event delivered (or the ``after`` given); ``None``: none yet."""
        return self._core.last_seq

    @property
    def reconnects(self) -> int:
        """How many times this stream reconnected."""
        return self._core.reconnects

    @property
    def connected(self) -> bool:
        """A response is open and being read."""
        return self._core.connected

    @property
    def reconnecting(self) -> bool:
        """The connection was lost and the stream is waiting to resume (backing
        off or trying again); a UI shows it as "reconnecting"."""
        return self._core.reconnecting
