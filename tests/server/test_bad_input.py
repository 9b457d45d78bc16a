"""Bad input gets a 4xx JSON error (or a WebSocket error frame), never a 500 or a hang."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import h11
import pytest

from steerline.log.base import LogSettings
from steerline.runtime.inbox import InboxLimits
from steerline.server.settings import ServerSettings
from steerline.service.service import ServiceLimits
from tests.server.clients import (
    client,
    error_of,
    eventually,
    in_server,
    names,
    new_conversation,
    open_socket,
    open_stream,
    read_log,
)
from tests.server.harness import RunningServer, problems, server_log

pytestmark = pytest.mark.anyio

MAX_BODY = 4096
MAX_MESSAGE = 1024


@pytest.fixture
def strict(make_server: Callable[..., RunningServer]) -> RunningServer:
    return make_server(
        ServerSettings(
            store="memory://",
            max_body_bytes=MAX_BODY,
            service=ServiceLimits(inbox=InboxLimits(max_message_bytes=MAX_MESSAGE)),
        )
    )


BAD_STREAM_BODIES: list[tuple[str, bytes, int, str]] = [
    ("malformed json", b'{"query": "hi"', 400, "invalid_json"),
    ("not json at all", b"hello", 400, "invalid_json"),
    ("json array", b'["hi"]', 422, "invalid_request"),
    ("json string", b'"hi"', 422, "invalid_request"),
    ("missing query", b'{"agent_name": "demo"}', 422, "invalid_request"),
    ("empty query", b'{"query": ""}', 422, "invalid_request"),
    ("query not a string", b'{"query": 5}', 422, "invalid_request"),
    ("query a list", b'{"query": ["a"]}', 422, "invalid_request"),
    ("conversation_id a number", b'{"query": "hi", "conversation_id": 5}', 422, "invalid_request"),
    ("priority a string", b'{"query": "hi", "priority": "high"}', 422, "invalid_request"),
    ("unknown mode", b'{"query": "hi", "mode": "shout"}', 400, "invalid_value"),
    ("unknown agent", b'{"query": "hi", "agent_name": "nobody"}', 404, "unknown_agent"),
    ("bad conversation id", b'{"query": "hi", "conversation_id": "a/b c"}', 400, "invalid_value"),
    ("conversation id .", b'{"query": "hi", "conversation_id": "."}', 400, "invalid_value"),
    ("conversation id ..", b'{"query": "hi", "conversation_id": ".."}', 400, "invalid_value"),
    (
        "conversation id newline",
        b'{"query": "hi", "conversation_id": "a\\n"}',
        400,
        "invalid_value",
    ),
    ("empty message_id", b'{"query": "hi", "message_id": ""}', 422, "invalid_request"),
]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [case[1:] for case in BAD_STREAM_BODIES],
    ids=[case[0] for case in BAD_STREAM_BODIES],
)
async def test_bad_agents_stream_body(
    strict: RunningServer, body: bytes, status: int, code: str
) -> None:
    async with client() as http:
        response = await http.post(
            f"{strict.api}/agents/stream",
            content=body,
            headers={"Content-Type": "application/json"},
        )
        error_of(response, status, code)
        listed = (await http.get(f"{strict.api}/conversations")).json()
    assert listed["conversations"] == [], "a refused request creates nothing"


async def test_oversize_body(strict: RunningServer) -> None:
    async with client() as http:
        big = json.dumps({"query": "x" * (MAX_BODY * 2)})
        error_of(await http.post(f"{strict.api}/agents/stream", content=big), 413, "body_too_large")

        # without Content-Length (chunked upload) the limit holds too
        async def chunks() -> Any:
            for _ in range(4):
                yield b'{"query": "' + b"x" * MAX_BODY
            yield b'"}'

        error_of(await http.post(f"{strict.api}/agents/stream", content=chunks()), 413)
        cid = await new_conversation(http, strict)
        error_of(
            await http.post(f"{strict.api}/conversations/{cid}/messages", content=big),
            413,
        )


async def test_oversize_message(strict: RunningServer) -> None:
    """Under the body limit but over the inbox's message limit: 413, nothing queued."""
    async with client() as http:
        text = "y" * (MAX_MESSAGE + 10)
        error_of(
            await http.post(f"{strict.api}/agents/stream", json={"query": text}),
            413,
            "message_too_large",
        )
        cid = await new_conversation(http, strict)
        before = await read_log(http, strict, cid)
        error_of(
            await http.post(
                f"{strict.api}/conversations/{cid}/messages",
                json={"content": text, "mode": "follow_up"},
            ),
            413,
            "message_too_large",
        )
        error_of(
            await http.post(
                f"{strict.api}/agents/stream", json={"query": text, "conversation_id": cid}
            ),
            413,
            "message_too_large",
        )
        assert await read_log(http, strict, cid) == before
        status = (await http.get(f"{strict.api}/conversations/{cid}")).json()
        assert status["queue"] == {"steering": [], "follow_up": []}
        async with open_socket(strict, cid) as socket:
            reply = await socket.request({"type": "prompt", "request_id": "big", "content": text})
            assert reply["type"] == "error" and reply["error"]["code"] == "message_too_large"


BAD_MESSAGE_BODIES: list[tuple[str, bytes, int]] = [
    ("malformed json", b'{"content": ', 400),
    ("missing content", b'{"mode": "steer"}', 422),
    ("empty content", b'{"content": ""}', 422),
    ("content a number", b'{"content": 1}', 422),
    ("unknown mode", b'{"content": "a", "mode": "later"}', 422),
    ("priority a float", b'{"content": "a", "priority": 1.5}', 422),
]


@pytest.mark.parametrize(
    ("body", "status"),
    [case[1:] for case in BAD_MESSAGE_BODIES],
    ids=[case[0] for case in BAD_MESSAGE_BODIES],
)
async def test_bad_message_body(strict: RunningServer, body: bytes, status: int) -> None:
    async with client() as http:
        cid = await new_conversation(http, strict)
        response = await http.post(
            f"{strict.api}/conversations/{cid}/messages",
            content=body,
            headers={"Content-Type": "application/json"},
        )
        error_of(response, status)


async def test_bad_control_values(server: RunningServer) -> None:
    async with client() as http:
        cid = await new_conversation(http, server)
        conv = f"{server.api}/conversations/{cid}"
        error_of(await http.patch(conv, json={"steering_policy": "whenever"}), 422)
        error_of(await http.patch(conv, json={"steering_mode": "some"}), 422)
        error_of(
            await http.patch(conv, content=b"{", headers={"Content-Type": "application/json"}), 400
        )
        error_of(await http.delete(f"{conv}/queue", params={"lane": "middle"}), 422)
        error_of(await http.post(f"{conv}/abort", json={"clear_queues": "maybe"}), 422)
        error_of(await http.get(f"{conv}/stream", params={"on_disconnect": "explode"}), 400)
        error_of(await http.get(f"{server.api}/conversations", params={"limit": 0}), 422)
        error_of(await http.get(f"{server.api}/conversations", params={"offset": -1}), 422)
        error_of(await http.get(f"{server.api}/nowhere"), 404, "not_found")
        error_of(await http.put(f"{server.api}/agents"), 405, "method_not_allowed")
        status = (await http.get(conv)).json()
        assert status["steering_policy"] == "after_tool", "a refused PATCH changes nothing"


async def test_refused_stream_options_accept_nothing(server: RunningServer) -> None:
    """``on_disconnect`` of ``POST /agents/stream`` is checked before the message
    is accepted: its 400 leaves no conversation and no run."""
    async with client() as http:
        url = f"{server.api}/agents/stream"
        body = {"query": "hi", "conversation_id": "refused"}
        error_of(await http.post(url, json=body, params={"on_disconnect": "explode"}), 400)
        missing = await http.get(f"{server.api}/conversations/refused")
        error_of(missing, 404, "conversation_not_found")


UNKNOWN = "conv-does-not-exist"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "", None),
        ("PATCH", "", {"steering_policy": "immediate"}),
        ("DELETE", "", None),
        ("GET", "/stream", None),
        ("POST", "/messages", {"content": "hi"}),
        ("POST", "/abort", None),
        ("DELETE", "/queue", None),
        ("GET", "/history", None),
    ],
)
async def test_unknown_conversation_is_404(
    server: RunningServer, method: str, path: str, body: dict[str, Any] | None
) -> None:
    async with client() as http:
        response = await http.request(
            method, f"{server.api}/conversations/{UNKNOWN}{path}", json=body
        )
        error_of(response, 404, "conversation_not_found")
        assert (await http.get(f"{server.api}/conversations")).json()["conversations"] == []


async def test_unknown_conversation_on_websocket(server: RunningServer) -> None:
    async with open_socket(server, UNKNOWN) as socket:
        frame = await socket.next_frame()
        assert frame["type"] == "error"
        assert frame["error"]["code"] == "conversation_not_found"
        await socket.ws.wait_closed()
        assert socket.ws.close_code == 4404


async def test_unknown_conversation_id_on_agents_stream_creates_it(server: RunningServer) -> None:
    async with client() as http:
        async with open_stream(
            http,
            "POST",
            f"{server.api}/agents/stream",
            json={"query": "hi", "conversation_id": "my-own-id"},
        ) as stream:
            events = await stream.rest()
        assert events[0]["event"] == "conversation_started"
        assert events[0]["data"]["conversation_id"] == "my-own-id"
        assert (await http.get(f"{server.api}/conversations/my-own-id")).status_code == 200


@pytest.fixture
def on_sqlite(make_server: Callable[..., RunningServer], tmp_path: Path) -> RunningServer:
    """sqlite is the default store; its integers stop at 2^63 - 1."""
    return make_server(ServerSettings(store=f"sqlite:///{tmp_path / 'bad.db'}"))


BAD_EVENT_IDS = [
    "abc",
    "-1",
    "1.5",
    "",
    "0x10",
    "1e3",
    "²",  # str.isdigit() is True for these, int() refuses them
    "³",
    "١٢",
    "9" * 5000,  # over int()'s 4300 digits
    str(2**63),  # over sqlite's integers
    str(2**64),
]


@pytest.mark.parametrize(
    "value", BAD_EVENT_IDS, ids=[v if len(v) < 20 else f"{len(v)} digits" for v in BAD_EVENT_IDS]
)
async def test_bad_event_ids(on_sqlite: RunningServer, value: str) -> None:
    server = on_sqlite
    async with client() as http:
        cid = await new_conversation(http, server)
        url = f"{server.api}/conversations/{cid}/stream"
        if value:  # an empty header is no header
            # header bytes are latin-1 on the wire: "²" is the one byte 0xb2
            header = value.encode("latin-1", "ignore") or b"x"
            error_of(
                await http.get(url, headers={"Last-Event-ID": header}), 400, "invalid_event_id"
            )
        error_of(await http.get(url, params={"after": value}), 400, "invalid_event_id")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("offset", str(2**63)),
        ("offset", "9" * 5000),
        ("offset", "²"),
        ("limit", str(2**63)),
        ("limit", "9" * 5000),
        ("limit", "³"),
    ],
)
async def test_huge_pagination_values(on_sqlite: RunningServer, name: str, value: str) -> None:
    async with client() as http:
        await new_conversation(http, on_sqlite)
        response = await http.get(f"{on_sqlite.api}/conversations", params={name: value})
        error_of(response, 422, "invalid_request")
        largest = await http.get(f"{on_sqlite.api}/conversations", params={"offset": 2**63 - 1})
        assert largest.status_code == 200 and largest.json()["conversations"] == []


@pytest.mark.parametrize("priority", [2**31, -(2**31), 2**63, 2**70])
async def test_huge_priority(on_sqlite: RunningServer, priority: int) -> None:
    async with client() as http:
        cid = await new_conversation(http, on_sqlite)
        error_of(
            await http.post(
                f"{on_sqlite.api}/conversations/{cid}/messages",
                json={"content": "x", "priority": priority},
            ),
            422,
            "invalid_request",
        )
        error_of(
            await http.post(
                f"{on_sqlite.api}/agents/stream",
                json={"query": "x", "conversation_id": cid, "priority": priority},
            ),
            422,
            "invalid_request",
        )
    async with open_socket(on_sqlite, cid) as socket:
        reply = await socket.request(
            {"type": "follow_up", "request_id": "p", "content": "x", "priority": priority}
        )
        assert reply["type"] == "error" and reply["error"]["code"] == "invalid_frame", reply


async def test_deeply_nested_body(server: RunningServer) -> None:
    """json.loads raises RecursionError (not ValueError) on deep nesting."""
    async with client() as http:
        deep = b"[" * 100_000 + b"]" * 100_000
        for path in ("/agents/stream", "/conversations/x/messages", "/conversations/x"):
            response = await http.post(
                f"{server.api}{path}", content=deep, headers={"Content-Type": "application/json"}
            )
            assert 400 <= response.status_code < 500, (path, response.status_code)
            error_of(response, response.status_code)


async def test_id_older_than_retention(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(ServerSettings(store="memory://", log=LogSettings(retention_events=5)))
    cid = "conv-retention"
    async with client() as http:
        async with open_stream(
            http,
            "POST",
            f"{server.api}/agents/stream",
            json={"query": "a b c d e f g h", "conversation_id": cid},
        ) as stream:
            await stream.rest()
        # a response overtaken by retention ends with a hint, never with a gap
        assert names(stream.events)[-1:] == ["done"] or stream.comments[-1] == (
            f"resume after={stream.last_seq}"
        )
        await eventually(_idle(http, server, cid), what="the run ended")
        url = f"{server.api}/conversations/{cid}/stream"
        retained = await read_log(http, server, cid)
        assert len(retained) == 5
        oldest = retained[0]["seq"]
        assert oldest > 2
        error_of(await http.get(url, headers={"Last-Event-ID": "1"}), 409, "resume_too_old")
        error_of(await http.get(url, params={"after": 0}), 409, "resume_too_old")
        # the oldest retained event's predecessor is still a valid point
        async with open_stream(
            http, "GET", url, headers={"Last-Event-ID": str(oldest - 1)}
        ) as stream:
            assert await stream.rest() == retained
        async with open_socket(server, cid) as socket:
            reply = await socket.request({"type": "resume", "request_id": "old", "after": 1})
            assert reply["type"] == "error" and reply["error"]["code"] == "resume_too_old"
            ok = await socket.request({"type": "resume", "request_id": "ok", "after": oldest})
            assert ok["type"] == "ack"


async def test_id_older_than_retention_by_age(make_server: Callable[..., RunningServer]) -> None:
    """Retention by age, after the sweep emptied an idle conversation's log:
    a resume from before it is 409, from its last seq it is fine, history is empty."""
    server = make_server(ServerSettings(store="memory://", log=LogSettings(retention_age=80.0)))
    log = server.state.log
    now = [log.clock()]
    log.clock = lambda: now[0]  # type: ignore[method-assign]
    cid = "conv-aged"
    async with client() as http:
        async with open_stream(
            http,
            "POST",
            f"{server.api}/agents/stream",
            json={"query": "a b c", "conversation_id": cid},
        ) as stream:
            await stream.rest()
        await eventually(_idle(http, server, cid), what="the run ended")
        last = stream.last_seq
        assert last is not None and last > 1
        now[0] += 200
        await in_server(server, log.sweep_retention)
        url = f"{server.api}/conversations/{cid}/stream"
        too_old = await http.get(url, headers={"Last-Event-ID": "1"})
        error_of(too_old, 409, "resume_too_old")
        # not "oldest kept: <a seq that does not exist>"
        assert f"retention dropped every event up to {last}" in too_old.json()["error"]["message"]
        error_of(await http.get(url, params={"after": 0}), 409, "resume_too_old")
        assert await read_log(http, server, cid) == []
        async with open_stream(http, "GET", url, headers={"Last-Event-ID": str(last)}) as resumed:
            assert await resumed.rest() == []
        history = await http.get(f"{server.api}/conversations/{cid}/history")
        assert history.status_code == 200, history.text


def _idle(http: Any, server: RunningServer, cid: str) -> Callable[[], Any]:
    async def check() -> bool:
        status = (await http.get(f"{server.api}/conversations/{cid}")).json()
        return bool(status["status"] == "idle")

    return check


WS_GARBAGE: list[tuple[str, str | bytes, str]] = [
    ("not json", "hello?", "invalid_json"),
    ("truncated json", '{"type": "prompt"', "invalid_json"),
    ("json array", '["prompt"]', "invalid_frame"),
    ("json number", "42", "invalid_frame"),
    ("unknown type", '{"type": "dance", "request_id": "g"}', "unknown_type"),
    ("type missing", '{"request_id": "g"}', "unknown_type"),
    ("type not a string", '{"type": 7, "request_id": "g"}', "unknown_type"),
    ("prompt without content", '{"type": "prompt", "request_id": "g"}', "invalid_frame"),
    (
        "steer with empty content",
        '{"type": "steer", "request_id": "g", "content": ""}',
        "invalid_frame",
    ),
    (
        "content not a string",
        '{"type": "follow_up", "request_id": "g", "content": [1]}',
        "invalid_frame",
    ),
    (
        "priority a string",
        '{"type": "steer", "request_id": "g", "content": "a", "priority": "x"}',
        "invalid_frame",
    ),
    ("resume negative", '{"type": "resume", "request_id": "g", "after": -1}', "invalid_frame"),
    ("resume a string", '{"type": "resume", "request_id": "g", "after": "3"}', "invalid_frame"),
    (
        "resume beyond the end",
        '{"type": "resume", "request_id": "g", "after": 999999}',
        "invalid_event_id",
    ),
    (
        "bad policy",
        '{"type": "set_modes", "request_id": "g", "steering_policy": "now"}',
        "invalid_frame",  # a frame that does not fit its command's schema
    ),
    ("bad lane", '{"type": "clear_queue", "request_id": "g", "lane": "left"}', "invalid_frame"),
    ("binary garbage", b"\xff\x00\xfe", "invalid_json"),
]


async def test_websocket_garbage_keeps_the_socket_usable(server: RunningServer) -> None:
    async with client() as http:
        cid = await new_conversation(http, server)
    async with open_socket(server, cid) as socket:
        for name, frame, code in WS_GARBAGE:
            await socket.send(frame)
            reply = await socket.next_frame()
            assert reply["type"] == "error", (name, reply)
            assert reply["error"]["code"] == code, (name, reply)
            assert reply["error"]["message"], name
            if code not in ("invalid_json", "invalid_frame") or name.startswith(
                ("prompt", "steer", "content", "priority", "resume")
            ):
                assert reply["request_id"] == "g", (name, reply)
            ok = await socket.request({"type": "set_modes", "request_id": f"ok-{name}"})
            assert ok["type"] == "ack" and ok["request_id"] == f"ok-{name}", name
        # and the socket still runs prompts
        ack = await socket.request(
            {"type": "prompt", "request_id": "last", "content": "still here"}
        )
        assert ack["type"] == "ack"
        events = await socket.until("done")
    assert events[-1]["data"]["payload"]["stop_reason"] == "completed"
    assert not [e for e in events if e["event"] in ("task_failed", "system_failed")]


async def test_prompt_frame_on_busy_conversation_is_an_error(server: RunningServer) -> None:
    async with client() as http:
        cid = await new_conversation(http, server)
    async with open_socket(server, cid) as socket:
        first = await socket.request(
            {"type": "prompt", "request_id": "a", "content": '/call sleep {"seconds": 1}'}
        )
        assert first["type"] == "ack"
        second = await socket.request({"type": "prompt", "request_id": "b", "content": "again"})
        assert second["type"] == "error"
        assert second["error"]["code"] == "conversation_busy"
        await socket.until("done")


async def _raw_request(server: RunningServer, method: str, target: str) -> tuple[int, bytes]:
    """One request with the target exactly as given: HTTP clients would normalise
    ``%2E%2E`` away before sending it."""
    host, port = server.url.removeprefix("http://").split(":")
    connection = h11.Connection(our_role=h11.CLIENT)
    async with await anyio.connect_tcp(host, int(port)) as stream:
        request = h11.Request(method=method, target=target, headers=[("Host", "test")])
        await stream.send(connection.send(request) + connection.send(h11.EndOfMessage()))
        status, body = 0, b""
        with anyio.fail_after(15):
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    connection.receive_data(await stream.receive())
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    body += bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    return status, body


@pytest.mark.parametrize("dots", ["%2E", "%2E%2E", "%2e%2e"])
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", ""),
        ("PATCH", ""),
        ("DELETE", ""),
        ("GET", "/stream"),
        ("POST", "/messages"),
        ("POST", "/abort"),
        ("GET", "/queue"),
        ("DELETE", "/queue"),
        ("GET", "/history"),
    ],
)
async def test_dot_conversation_ids_are_refused_in_paths(
    server: RunningServer, dots: str, method: str, path: str
) -> None:
    status, body = await _raw_request(server, method, f"/api/v1/conversations/{dots}{path}")
    assert status == 400, (status, body)
    assert json.loads(body)["error"]["code"] == "invalid_value"


@pytest.mark.parametrize("dots", ["%2E", "%2E%2E"])
async def test_dot_conversation_ids_are_refused_on_websocket(
    server: RunningServer, dots: str
) -> None:
    async with open_socket(server, dots) as socket:
        frame = await socket.next_frame()
        assert frame["type"] == "error" and frame["error"]["code"] == "invalid_value", frame
        await socket.ws.wait_closed()
        assert socket.ws.close_code == 4400


async def test_invalid_utf8_text_frame_closes_1007_without_an_error_log(
    server: RunningServer,
) -> None:
    """RFC 6455 requires failing the connection (1007) on a text frame that is not
    UTF-8; that is the client's fault: INFO in the server's log, not an ERROR.
    (Binary frames of any bytes get an ``error`` frame instead, see test_fuzz.)"""
    async with client() as http:
        cid = await new_conversation(http, server)
    with server_log() as records:
        async with open_socket(server, cid) as socket:
            await socket.ws.send(b'{"type": "steer", "content": "\xff"}', text=True)
            await socket.ws.wait_closed()
            assert socket.ws.close_code == 1007
    assert problems(records) == []
    assert any("Invalid UTF-8" in r.getMessage() for r in records)


async def test_a_body_without_a_json_content_type_says_so(server: RunningServer) -> None:
    async with client() as http:
        for headers in ({}, {"content-type": "text/plain"}):
            response = await http.post(
                f"{server.api}/agents/stream", content=b'{"query": "hi"}', headers=headers
            )
            assert error_of(response, 415, "unsupported_media_type")
            assert "Content-Type: application/json" in response.json()["error"]["message"]
