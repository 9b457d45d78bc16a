"""Client-side helpers for the end-to-end server tests.

Streams are parsed here by hand (not only with ``httpx2.EventSource``) so the
tests also see what a browser hides: the ``retry:`` hint, ``: ping`` and
``: resume after=N`` comments, NDJSON heartbeats. Every reader checks the
envelope invariants as it goes: ``id:`` equals ``seq`` and ids strictly
increase.

Nothing here sleeps to synchronise: every wait is bounded by
``anyio.fail_after`` and ends on something the server sent.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import anyio
import httpx2
from websockets.asyncio.client import ClientConnection, connect

from tests.server.harness import RunningServer

Envelope = dict[str, Any]
Kind = Literal["sse", "ndjson"]
T = TypeVar("T")

WAIT = 15.0
"""Default bound of every wait on the server (seconds)."""

NDJSON = {"Accept": "application/x-ndjson"}


def names(events: list[Envelope]) -> list[str]:
    return [e["event"] for e in events]


def brief(events: list[Envelope]) -> str:
    """Event names for an assertion message, shortened for long runs."""
    got = names(events)
    if len(got) <= 40:
        return str(got)
    return f"{got[:20]} ... ({len(got) - 40} more) ... {got[-20:]}"


def payload(event: Envelope) -> dict[str, Any]:
    value: dict[str, Any] = event["data"].get("payload") or {}
    return value


def result_text(tool_payload: dict[str, Any]) -> str:
    """The text inside a ``tool_result`` (a JSON string ``[{"content": …}]``)."""
    parts = json.loads(tool_payload["tool_result"])
    return "".join(part["content"] for part in parts)


def seqs(events: list[Envelope]) -> list[int]:
    return [e["seq"] for e in events]


def text_of(events: list[Envelope], event: str = "message_chunk") -> str:
    return "".join(payload(e)["content"] for e in events if e["event"] == event)


def first(events: list[Envelope], name: str, **where: Any) -> Envelope:
    """The first event called ``name`` whose payload has the given values."""
    for e in events:
        if e["event"] == name and all(payload(e).get(k) == v for k, v in where.items()):
            return e
    raise AssertionError(f"no {name} {where} in {brief(events)}")


def after_task_started(events: list[Envelope]) -> list[str]:
    """Event names from the first ``task_started`` on (ids differ between runs)."""
    seq = names(events)
    return seq[seq.index("task_started") :]


def assert_contiguous(events: list[Envelope], start: int | None = None) -> None:
    got = seqs(events)
    begin = got[0] if start is None else start
    assert got == list(range(begin, begin + len(got))), got


# -- SSE / NDJSON ---------------------------------------------------------------------
@dataclass
class Stream:
    """One open HTTP stream, parsed incrementally.

    ``events`` holds every envelope read so far; ``comments`` the SSE comment
    lines (``ping``, ``resume after=N``) and NDJSON control lines; ``retry``
    the SSE ``retry:`` hint. ``ended`` is set once the server closed the body.
    """

    response: httpx2.Response | None
    """None for a body read by other means and fed with :meth:`feed`."""
    kind: Kind
    events: list[Envelope] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    controls: list[Envelope] = field(default_factory=list)
    retry: int | None = None
    ended: bool = False
    _pending: list[Envelope] = field(default_factory=list)
    _buffer: str = ""
    _block_id: str | None = None
    _block_data: list[str] = field(default_factory=list)
    _chunks: AsyncIterator[str] | None = None

    @property
    def status_code(self) -> int:
        assert self.response is not None
        return self.response.status_code

    @property
    def last_seq(self) -> int:
        return self.events[-1]["seq"] if self.events else 0

    def _accept(self, envelope: Envelope, sse_id: str | None) -> None:
        seq = envelope.get("seq")
        assert isinstance(seq, int), envelope
        if sse_id is not None:
            assert sse_id == str(seq), (sse_id, seq)
        assert seq > self.last_seq, f"seq {seq} after {self.last_seq}"
        self.events.append(envelope)
        self._pending.append(envelope)

    def _parse_sse_line(self, line: str) -> None:
        """One line, as the SSE spec's parser reads it: fields accumulate until
        a blank line dispatches them; comments and ``retry:`` act at once."""
        if line.startswith(":"):
            self.comments.append(line[1:].strip())
            return
        if line == "":
            sse_id, data = self._block_id, self._block_data
            self._block_id, self._block_data = None, []
            # SPEC §3.3: retry: and comments never get a blank line of their own
            # (several client libraries turn such a block into an empty event)
            assert data, "an SSE block without data"
            self._accept(json.loads("\n".join(data)), sse_id)
            return
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "id":
            self._block_id = value
        elif name == "data":
            self._block_data.append(value)
        elif name == "retry":
            self.retry = int(value)
        else:
            raise AssertionError(f"unexpected SSE field {line!r}")

    def _parse_ndjson_line(self, line: str) -> None:
        if not line:
            return
        value = json.loads(line)
        assert isinstance(value, dict), line
        if "seq" in value:
            self._accept(value, None)
        else:
            assert value["event"] in ("ping", "resume"), value
            self.controls.append(value)

    def feed(self, text: str) -> None:
        self._buffer += text
        if self.kind == "sse":
            assert "\r" not in self._buffer
            *lines, self._buffer = self._buffer.split("\n")
            for line in lines:
                self._parse_sse_line(line)
        else:
            *lines, self._buffer = self._buffer.split("\n")
            for line in lines:
                self._parse_ndjson_line(line)

    def end(self) -> None:
        """The body fed with :meth:`feed` is complete."""
        self.ended = True
        assert not self._buffer.strip(), f"truncated frame {self._buffer!r}"
        assert not self._block_data, "an event without its closing blank line"

    async def _pull(self) -> bool:
        """Read one chunk of the body; False at its end."""
        if self.ended:
            return False
        if self._chunks is None:
            assert self.response is not None
            self._chunks = self.response.aiter_text()
        try:
            text = await self._chunks.__anext__()
        except StopAsyncIteration:
            self.end()
            return False
        self.feed(text)
        return True

    async def next(self, within: float = WAIT) -> Envelope | None:
        """The next envelope, or None once the stream ended."""
        with anyio.fail_after(within):
            while not self._pending:
                if not await self._pull():
                    return None
        return self._pending.pop(0)

    async def take(self, count: int, within: float = WAIT) -> list[Envelope]:
        """Exactly ``count`` more envelopes (fails if the stream ends first)."""
        got: list[Envelope] = []
        with anyio.fail_after(within):
            while len(got) < count:
                event = await self.next(within=within)
                assert event is not None, f"stream ended after {len(got)} of {count}"
                got.append(event)
        return got

    async def until(
        self, match: str | Callable[[Envelope], bool], within: float = WAIT
    ) -> list[Envelope]:
        """Envelopes up to and including the first that matches."""
        test = (lambda e: e["event"] == match) if isinstance(match, str) else match
        got: list[Envelope] = []
        with anyio.fail_after(within):
            while True:
                event = await self.next(within=within)
                assert event is not None, f"stream ended before {match}: {brief(got)}"
                got.append(event)
                if test(event):
                    return got

    async def rest(self, within: float = WAIT) -> list[Envelope]:
        """Every envelope until the server ends the stream."""
        got: list[Envelope] = []
        with anyio.fail_after(within):
            while (event := await self.next(within=within)) is not None:
                got.append(event)
        return got

    async def finish(self, within: float = WAIT) -> list[Envelope]:
        """Read to the end; every envelope this stream carried (``events``)."""
        await self.rest(within)
        return self.events

    async def aclose(self) -> None:
        if self._chunks is not None:
            aclose = getattr(self._chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        if self.response is not None:
            await self.response.aclose()


@asynccontextmanager
async def open_stream(
    client: httpx2.AsyncClient,
    method: str,
    url: str,
    *,
    kind: Kind = "sse",
    expect: int | None = 200,
    **kwargs: Any,
) -> AsyncIterator[Stream]:
    """Open a streaming request; leaving the block disconnects the client."""
    if kind == "ndjson":
        kwargs["headers"] = {**NDJSON, **kwargs.get("headers", {})}
    async with client.stream(method, url, **kwargs) as response:
        stream = Stream(response, kind)
        if expect is not None:
            if response.status_code != expect:
                await response.aread()
                raise AssertionError(f"{response.status_code}: {response.text}")
            if expect == 200:
                media = "text/event-stream" if kind == "sse" else "application/x-ndjson"
                assert response.headers["content-type"].startswith(media)
        try:
            yield stream
        finally:
            await stream.aclose()


def client(**kwargs: Any) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(timeout=WAIT, **kwargs)


async def prompt(
    http: httpx2.AsyncClient, server: RunningServer, query: str, **fields: Any
) -> list[Envelope]:
    """``POST /agents/stream`` read to its end."""
    async with open_stream(
        http, "POST", f"{server.api}/agents/stream", json={"query": query, **fields}
    ) as stream:
        return await stream.rest()


async def new_conversation(http: httpx2.AsyncClient, server: RunningServer, **fields: Any) -> str:
    """A conversation that ran one short prompt; returns its id."""
    events = await prompt(http, server, "hi", **fields)
    assert events[-1]["event"] == "done"
    conversation_id: str = events[0]["data"]["conversation_id"]
    return conversation_id


async def read_log(http: httpx2.AsyncClient, server: RunningServer, cid: str) -> list[Envelope]:
    """The whole retained log (``GET …/stream`` on an idle conversation ends when caught up)."""
    async with open_stream(http, "GET", f"{server.api}/conversations/{cid}/stream") as stream:
        return await stream.rest()


async def wait_idle(http: httpx2.AsyncClient, server: RunningServer, cid: str) -> list[Envelope]:
    """Join the conversation until its active run is done; the events read."""
    async with open_stream(http, "GET", f"{server.api}/conversations/{cid}/stream") as stream:
        events = await stream.rest()
    status = (await http.get(f"{server.api}/conversations/{cid}")).json()
    assert status["status"] == "idle", status
    return events


def error_of(response: httpx2.Response, status: int, code: str | None = None) -> str:
    """Assert a JSON error of the given status; returns its code."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["code"], str) and body["error"]["code"]
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    result: str = body["error"]["code"]
    return result


# -- WebSocket ------------------------------------------------------------------------
@dataclass
class Socket:
    """A WebSocket client: envelopes go to ``events``, control frames to ``frames``."""

    ws: ClientConnection
    events: list[Envelope] = field(default_factory=list)
    frames: list[dict[str, Any]] = field(default_factory=list)
    _pending: list[Envelope] = field(default_factory=list)

    async def send(self, frame: Any) -> None:
        await self.ws.send(frame if isinstance(frame, str | bytes) else json.dumps(frame))

    async def _recv_one(self) -> None:
        raw = await self.ws.recv()
        value = json.loads(raw)
        assert isinstance(value, dict), raw
        if "event" in value and "seq" in value:
            last = self.events[-1]["seq"] if self.events else 0
            assert value["seq"] > last, (value["seq"], last)
            self.events.append(value)
            self._pending.append(value)
        else:
            assert value.get("type") in ("ack", "error", "ping", "resume"), value
            self.frames.append(value)

    async def reply(self, request_id: Any, within: float = WAIT) -> dict[str, Any]:
        """The ``ack``/``error`` frame answering ``request_id`` (events keep arriving)."""
        with anyio.fail_after(within):
            while True:
                for frame in self.frames:
                    if (
                        frame.get("type") in ("ack", "error")
                        and frame.get("request_id") == request_id
                    ):
                        self.frames.remove(frame)
                        return frame
                await self._recv_one()

    async def request(self, frame: dict[str, Any], within: float = WAIT) -> dict[str, Any]:
        await self.send(frame)
        return await self.reply(frame.get("request_id"), within)

    async def next_frame(self, within: float = WAIT) -> dict[str, Any]:
        """The next non-event frame."""
        with anyio.fail_after(within):
            while not self.frames:
                await self._recv_one()
        return self.frames.pop(0)

    async def until(
        self, match: str | Callable[[Envelope], bool], within: float = WAIT
    ) -> list[Envelope]:
        test = (lambda e: e["event"] == match) if isinstance(match, str) else match
        got: list[Envelope] = []
        with anyio.fail_after(within):
            while True:
                while not self._pending:
                    await self._recv_one()
                event = self._pending.pop(0)
                got.append(event)
                if test(event):
                    return got


@asynccontextmanager
async def open_socket(
    server: RunningServer, cid: str, headers: dict[str, str] | None = None, query: str = ""
) -> AsyncIterator[Socket]:
    url = f"{server.ws}/conversations/{cid}/ws{query}"
    async with connect(url, additional_headers=headers, open_timeout=WAIT) as ws:
        yield Socket(ws)


# -- the server's own event loop --------------------------------------------------------
def server_loop(server: RunningServer) -> asyncio.AbstractEventLoop:
    """The loop uvicorn runs on (in the harness thread)."""
    servers = server.server.servers
    assert servers, "uvicorn has no listening server"
    return servers[0].get_loop()


async def in_server(server: RunningServer, job: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``job()`` on the server's loop and await its result from the test's loop."""
    future = asyncio.run_coroutine_threadsafe(job(), server_loop(server))
    with anyio.fail_after(WAIT):
        return await asyncio.wrap_future(future)


async def server_tasks(server: RunningServer) -> int:
    """How many asyncio tasks the server's loop has (not counting the probe itself)."""

    async def count() -> int:
        return len(asyncio.all_tasks()) - 1

    return await in_server(server, count)


async def eventually(
    check: Callable[[], Awaitable[bool]], within: float = WAIT, what: str = "condition"
) -> None:
    """Poll a server-side condition that no stream announces (cleanup after a
    disconnect). Polling a state is not synchronising on time: the bound only
    decides when to give up."""
    with anyio.fail_after(within):
        while True:
            if await check():
                return
            await anyio.sleep(0.02)
