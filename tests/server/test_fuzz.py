"""Property-based fuzzing of every endpoint and of WebSocket frames (SPEC §3.3, §3.4).

Any input gets a success or a 4xx with a JSON error body, never a 5xx and
never an error in the server's log; a WebSocket answers any frame with an
``ack`` or an ``error`` frame and stays open (a valid frame that follows gets
its ack). The server runs on sqlite, the default store, whose integers stop
at 2^63 - 1. Examples are bounded so the suite stays fast.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import httpx2
import pytest
from fastapi.routing import APIRoute, APIWebSocketRoute
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steerline.server.routes import ROUTERS
from steerline.server.settings import ServerSettings, TenantLimits
from tests.server.clients import WAIT, client, new_conversation, open_socket
from tests.server.harness import RunningServer, problems, server_log

EXAMPLES = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# -- values ---------------------------------------------------------------------------
SURROGATES = st.sampled_from(["\ud800", "\udfff", "a\udc80b", "\ud83d"])
"""Lone UTF-16 surrogates: json.dumps writes them as ``\\ud800`` escapes."""

NASTY = [
    ".",
    "..",
    "²",
    "³",
    "١٢",
    "9" * 5000,
    str(2**63),
    str(2**64),
    "-1",
    "1.5",
    "",
    " ",
    "\x00",
    "a/b",
    "%2e%2e",
    "x" * 300,
    "true",
    "null",
]

texts = st.one_of(st.text(max_size=20), st.sampled_from(NASTY))
"""Text a URL or a header can carry (no surrogates)."""
json_texts = st.one_of(
    texts, SURROGATES, st.builds(lambda a, s: a + s, st.text(max_size=5), SURROGATES)
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([2**63 - 1, 2**63, -(2**63) - 1, 2**70, 10**4200]),
    st.floats(allow_nan=False, allow_infinity=False),
    json_texts,
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(json_texts, children, max_size=4)
    ),
    max_leaves=10,
)

DEEP = 100_000
SPECIAL_BODIES = [
    b"[" * DEEP + b"]" * DEEP,
    b'{"a":' * 5000 + b"1" + b"}" * 5000,
    b"\xff\xfe\x00",
    "\ud800".encode("utf-8", "surrogatepass"),
    b"",
    b"null",
    b"{",
    b"NaN",
    b'{"query": 1e400, "content": -Infinity}',
]


def _dumps(value: Any) -> bytes:
    # ensure_ascii (the default) writes lone surrogates as \\ud800 escapes
    return json.dumps(value).encode()


def bodies(fields: list[str]) -> st.SearchStrategy[bytes | None]:
    """No body, random JSON, the endpoint's fields with random values, or raw oddities."""
    keys = st.sampled_from(fields) | json_texts if fields else json_texts
    return st.one_of(
        st.none(),
        json_values.map(_dumps),
        st.dictionaries(keys, json_values, max_size=6).map(_dumps),
        st.sampled_from(SPECIAL_BODIES),
    )


header_values = st.one_of(
    st.text(
        st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
        max_size=30,
    ),
    st.sampled_from(
        [
            "²",
            "³",
            "9" * 5000,
            str(2**63),
            "-1",
            "1.5",
            "Bearer",
            "Bearer \xb2",
            "Basic Zm9vOmJhcg==",
            "application/json; charset=latin-1",
            "application/x-ndjson",
            "text/event-stream",
            "multipart/form-data; boundary=x",
            "*/*;q=abc",
        ]
    ),
).map(lambda value: value.strip(" \t"))  # HTTP trims them; the client refuses to send them
headers = st.fixed_dictionaries(
    {},
    optional={
        name: header_values for name in ("Last-Event-ID", "Accept", "Authorization", "Content-Type")
    },
)


# -- endpoints ------------------------------------------------------------------------
CONV = "/api/v1/conversations/{id}"
ENDPOINTS: list[tuple[str, str, list[str], list[str]]] = [
    (
        "POST",
        "/api/v1/agents/stream",
        ["query", "agent_name", "conversation_id", "mode", "message_id", "priority"],
        ["on_disconnect", "after"],
    ),
    ("GET", f"{CONV}/stream", [], ["after", "follow", "on_disconnect"]),
    ("POST", f"{CONV}/messages", ["content", "mode", "id", "priority", "expected_run_id"], []),
    ("POST", f"{CONV}/abort", ["clear_queues"], []),
    ("GET", CONV, [], []),
    ("PATCH", CONV, ["steering_mode", "follow_up_mode", "steering_policy"], []),
    ("DELETE", CONV, [], []),
    ("DELETE", f"{CONV}/queue", [], ["lane"]),
    ("GET", f"{CONV}/queue", [], []),
    ("PATCH", f"{CONV}/queue/{{message_id}}", ["content", "priority", "lane", "before"], []),
    ("DELETE", f"{CONV}/queue/{{message_id}}", [], []),
    ("POST", f"{CONV}/queue/send", [], []),
    ("GET", f"{CONV}/history", [], []),
    ("GET", "/api/v1/conversations", [], ["limit", "offset"]),
    ("GET", "/api/v1/agents", [], []),
    ("GET", "/healthz", [], []),
    ("GET", "/metrics", [], []),
    (
        "POST",
        "/api/v1/ag-ui",
        ["threadId", "runId", "messages", "forwardedProps", "state", "tools", "context"],
        ["on_disconnect"],
    ),
    ("GET", "/api/v1/ag-ui/{id}/stream", [], ["after", "on_disconnect"]),
    (
        "POST",
        "/api/v1/vercel/chat",
        ["id", "messages", "trigger", "messageId", "agent_name"],
        ["on_disconnect"],
    ),
    ("GET", "/api/v1/vercel/chat/{id}/stream", [], ["startIndex", "on_disconnect"]),
    # the web page (Starlette routes outside the API: not in the count below)
    ("GET", "/", [], []),
    ("GET", "/web/app.js", [], []),
]


@pytest.fixture
def fuzz_server(make_server: Callable[..., RunningServer], tmp_path: Path) -> RunningServer:
    return make_server(
        ServerSettings(
            store=f"sqlite:///{tmp_path / 'fuzz.db'}",
            tenant_limits=TenantLimits(requests_per_minute=1_000_000, max_streams=1000),
        )
    )


def test_every_route_is_fuzzed(server: RunningServer) -> None:
    """A new endpoint must join ENDPOINTS (and so the fuzzing) to pass."""
    fuzzed = {(method, path.replace("{id}", "{conversation_id}")) for method, path, *_ in ENDPOINTS}
    # the app's own routes and those of its routers (FastAPI includes a router
    # lazily: app.routes holds the router, not its routes)
    every = [*server.server.config.app.routes, *(r for router in ROUTERS for r in router.routes)]
    routes: set[tuple[str, str]] = set()
    for route in every:
        if isinstance(route, APIRoute) and route.path not in ("/openapi.json", "/docs"):
            routes |= {(method, route.path) for method in route.methods if method != "HEAD"}
    assert routes - fuzzed == set()
    assert len(routes) == 21
    ws = [r for r in every if isinstance(r, APIWebSocketRoute)]
    assert [r.path for r in ws] == ["/api/v1/conversations/{conversation_id}/ws"]


def _url(path: str, query: dict[str, str]) -> str:
    encoded = "&".join(
        f"{quote(k.encode('utf-8', 'surrogatepass'), safe='')}="
        f"{quote(v.encode('utf-8', 'surrogatepass'), safe='')}"
        for k, v in query.items()
    )
    return f"{path}?{encoded}" if encoded else path


def _check_response(status: int, content_type: str, body: bytes, what: str) -> None:
    assert status < 500, (what, status, body[:300])
    if status >= 400:
        assert content_type.startswith("application/json"), (what, status, body[:300])
        error = json.loads(body)
        assert set(error) == {"error"}, (what, error)
        assert isinstance(error["error"]["code"], str) and error["error"]["code"], (what, error)
        assert isinstance(error["error"]["message"], str), (what, error)


@pytest.fixture
def conversations(fuzz_server: RunningServer) -> tuple[str, str]:
    """Two conversations of the fuzzed server: one to poke at, one to delete."""

    async def make() -> tuple[str, str]:
        async with client() as http:
            return await new_conversation(http, fuzz_server), await new_conversation(
                http, fuzz_server
            )

    return anyio.run(make)


@pytest.fixture
def runner() -> Iterator[tuple[asyncio.Runner, httpx2.AsyncClient]]:
    """One event loop and one HTTP client for every example (a client costs ~80 ms)."""
    with asyncio.Runner() as loop:
        http = httpx2.AsyncClient(timeout=WAIT)
        yield loop, http
        loop.run(http.aclose())


async def _request(
    http: httpx2.AsyncClient,
    server: RunningServer,
    method: str,
    url: str,
    head: dict[str, str],
    body: bytes | None,
    what: str,
) -> None:
    raw_headers = [(k.encode(), v.encode("latin-1")) for k, v in head.items()]
    async with http.stream(method, server.url + url, content=body, headers=raw_headers) as response:
        content_type = response.headers.get("content-type", "")
        # a stream that started is left at once (the disconnect is part of the test)
        streaming = content_type.startswith(("text/event-stream", "application/x-ndjson"))
        content = b"" if streaming else await response.aread()
        _check_response(response.status_code, content_type, content, what)


@pytest.mark.parametrize(
    ("method", "path", "fields", "params"),
    ENDPOINTS,
    ids=[f"{method} {path}" for method, path, *_ in ENDPOINTS],
)
@EXAMPLES
@given(data=st.data())
def test_fuzz_http(
    fuzz_server: RunningServer,
    conversations: tuple[str, str],
    runner: tuple[asyncio.Runner, httpx2.AsyncClient],
    method: str,
    path: str,
    fields: list[str],
    params: list[str],
    data: st.DataObject,
) -> None:
    cid, spare = conversations
    conversation = data.draw(
        st.one_of(st.just(spare if method == "DELETE" else cid), texts.filter(bool)), "id"
    )
    query = data.draw(
        st.dictionaries(st.sampled_from(params) | texts if params else texts, texts, max_size=4),
        "query",
    )
    head = data.draw(headers, "headers")
    body = data.draw(bodies(fields), "body")
    target = _url(path.replace("{id}", quote(conversation, safe="")), query)
    what = f"{method} {target[:200]} {head} {body[:80] if body else body!r}"
    with server_log() as records:
        loop, http = runner
        loop.run(_request(http, fuzz_server, method, target, head, body, what))
    assert problems(records, logging.ERROR) == [], what


# -- WebSocket frames -----------------------------------------------------------------
FRAME_TYPES = [
    "prompt",
    "steer",
    "follow_up",
    "abort",
    "clear_queue",
    "set_modes",
    "resume",
    "edit_queued",
    "remove_queued",
    "move_queued",
    "send_now",
]
FRAME_FIELDS = [
    "request_id",
    "content",
    "id",
    "priority",
    "expected_run_id",
    "after",
    "lane",
    "clear_queues",
    "steering_mode",
    "follow_up_mode",
    "steering_policy",
    "message_id",
    "before",
]


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


SPECIAL_FRAMES: list[tuple[str, str | bytes]] = [
    ("deep nesting", _nested(DEEP)),
    (
        "deep nesting in a field",
        '{"type": "steer", "request_id": "d", "content": ' + _nested(DEEP) + "}",
    ),
    ("deep object", '{"a":' * DEEP + "1" + "}" * DEEP),
    ("lone surrogate content", '{"type": "steer", "request_id": "s", "content": "a\\ud800"}'),
    ("lone surrogate prompt", '{"type": "prompt", "request_id": "s", "content": "\\udfff"}'),
    (
        "lone surrogate id",
        '{"type": "follow_up", "request_id": "s", "content": "x", "id": "\\ud800"}',
    ),
    ("lone surrogate request_id", '{"type": "set_modes", "request_id": "\\ud800"}'),
    ("lone surrogate type", '{"type": "\\ud800", "request_id": "s"}'),
    ("lone surrogate lane", '{"type": "clear_queue", "request_id": "s", "lane": "\\ud800"}'),
    (
        "lone surrogate policy",
        '{"type": "set_modes", "request_id": "s", "steering_policy": "\\ud800"}',
    ),
    ("lone surrogate key", '{"type": "set_modes", "request_id": "s", "\\ud800": 1}'),
    ("binary garbage", b"\xff\x00\xfe"),
    ("binary invalid utf-8", b'{"type": "steer", "content": "\xed\xa0\x80"}'),
    ("binary surrogate escape", b'{"type": "steer", "request_id": "b", "content": "\\ud800"}'),
    ("oversized text", '{"type": "steer", "content": "' + "x" * (1024 * 1024 + 10) + '"}'),
    ("oversized binary", b"x" * (1024 * 1024 + 10)),
    (
        "huge priority",
        '{"type": "follow_up", "request_id": "p", "content": "x", "priority": ' + str(2**70) + "}",
    ),
    ("huge after", '{"type": "resume", "request_id": "r", "after": ' + str(2**70) + "}"),
    ("too many digits", '{"type": "resume", "request_id": "r", "after": ' + "9" * 5000 + "}"),
    ("NaN", '{"type": "resume", "request_id": NaN, "after": NaN}'),
    ("infinity", '{"type": "resume", "request_id": 1e400, "after": 1e400}'),
    ("request_id object", '{"type": "set_modes", "request_id": {"a": [1]}}'),
    (
        "id too long",
        '{"type": "follow_up", "request_id": "l", "content": "x", "id": "' + "i" * 5000 + '"}',
    ),
    ("unknown type", '{"type": "dance", "request_id": "u"}'),
    ("empty frame", ""),
]

random_frames = st.one_of(
    st.fixed_dictionaries(
        {"type": st.sampled_from([*FRAME_TYPES, "dance", ""]) | json_values},
        optional={name: json_values for name in FRAME_FIELDS},
    ).map(lambda frame: json.dumps(frame)),
    json_values.map(lambda value: json.dumps(value)),
    st.binary(max_size=40),
    # the large ones are tested one by one below (hypothesis would print them)
    st.sampled_from([frame for _, frame in SPECIAL_FRAMES if len(frame) < 10_000]),
)


async def _answer_then_still_open(
    server: RunningServer, cid: str, frame: str | bytes
) -> dict[str, Any]:
    """Send ``frame`` and then a valid frame; the reply to ``frame`` (the valid one got its ack)."""
    async with open_socket(server, cid) as socket:
        await socket.send(frame)
        await socket.send({"type": "set_modes", "request_id": "still-open"})
        replies: list[dict[str, Any]] = []
        with anyio.fail_after(WAIT):
            while True:
                reply = await socket.next_frame()
                if reply.get("request_id") == "still-open" and reply["type"] == "ack":
                    break
                replies.append(reply)
        assert len(replies) == 1, replies
        assert replies[0]["type"] in ("ack", "error"), replies
        return replies[0]


@pytest.mark.anyio
async def test_websocket_bad_frames_get_an_error_and_the_socket_stays_open(
    fuzz_server: RunningServer, conversations: tuple[str, str]
) -> None:
    for name, frame in SPECIAL_FRAMES:
        with server_log() as records:
            reply = await _answer_then_still_open(fuzz_server, conversations[0], frame)
        assert reply["type"] == "error", (name, reply)
        assert reply["error"]["code"] and reply["error"]["message"], (name, reply)
        assert problems(records) == [], name


@settings(EXAMPLES, max_examples=60)
@given(frame=random_frames)
def test_fuzz_websocket(
    fuzz_server: RunningServer, conversations: tuple[str, str], frame: str | bytes
) -> None:
    with server_log() as records:
        reply = anyio.run(_answer_then_still_open, fuzz_server, conversations[0], frame)
    if reply["type"] == "error":
        assert reply["error"]["code"] and reply["error"]["message"], reply
    assert problems(records, logging.ERROR) == [], frame[:200]
