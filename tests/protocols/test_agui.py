"""The AG-UI 1.0 view (SPEC §3.5): ``POST /api/v1/ag-ui`` and ``GET …/ag-ui/{id}/stream``.

Two kinds of check against real servers:

- Python: every event the server sends validates against ``ag_ui.core``
  (the pydantic models of ``ag-ui-protocol``), round-trips unchanged (no
  extra, renamed or ``null`` field), and the stream keeps the ordering rules
  of ``@ag-ui/client``'s ``verifyEvents`` (a mini verifier below); a resume
  from every event id of a run ends with the messages of the whole run.
- Node: the real ``@ag-ui/client@1.0.0`` (``tests/protocols/node``):
  ``HttpAgent.runAgent`` completes through its schema enforcement and
  ``verifyEvents`` for a normal, a steered, an aborted and a failed run, and
  a ``connect()`` subclass joining (and resuming) a live run ends with the
  same messages as the client that posted it. Its raw bodies are checked in
  Python too. Without ``node_modules`` (``npm ci`` in tests/protocols/node)
  these skip, unless ``CI=true``.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from ag_ui.core import Event
from pydantic import BaseModel, TypeAdapter

from steerline.core.errors import ModelError
from steerline.models.scripted import ScriptedModel, ScriptedReply
from steerline.runtime.agent import Agent
from steerline.server.settings import ServerSettings
from steerline.service.agents import AgentRegistry, AgentSpec
from steerline.wire.agui import AguiTranslator
from tests.server import conftest as server_fixtures
from tests.server.clients import WAIT, client, error_of, read_log, wait_idle
from tests.server.harness import RunningServer

pytestmark = pytest.mark.anyio

make_server = server_fixtures.make_server
server = server_fixtures.server
"""The real-server fixtures of tests/server."""

NODE = Path(__file__).parent / "node"
EVENT: TypeAdapter[Any] = TypeAdapter(Event)

AguiEvent = dict[str, Any]
Framed = tuple[int | None, AguiEvent]
"""An AG-UI event with the ``id:`` of its SSE block (None: no id)."""

TOOLS = '/call calculator {"expression": "6*7"}'
THOUGHT = " ".join(f"t{i}" for i in range(12))
WORDS = " ".join(f"w{i}" for i in range(30))
SLOW = f"/delay 30\n/think {THOUGHT}\n{WORDS}"
"""12 reasoning deltas then 31 text deltas, 30 ms apart: time to steer or abort."""


# -- reading and checking a stream ---------------------------------------------------
def parse_sse(body: str, complete: bool = True) -> list[Framed]:
    """The AG-UI events of an SSE body, checking the framing on the way."""
    assert "\r" not in body, "AG-UI SSE uses \\n only"
    blocks = body.split("\n\n")
    rest = blocks.pop()
    assert all(line.startswith(":") for line in rest.splitlines()), f"cut block {rest!r}"
    framed: list[Framed] = []
    for block in blocks:
        event_id: int | None = None
        data: list[str] = []
        for line in block.split("\n"):
            if line.startswith(":") or line.startswith("retry: "):
                continue
            if line.startswith("id: "):
                event_id = int(line[4:])
            elif line.startswith("data: "):
                data.append(line[6:])
            else:
                raise AssertionError(f"unexpected SSE line {line!r}")
        assert len(data) == 1, block
        framed.append((event_id, json.loads(data[0])))
    ids = [i for i, _ in framed if i is not None]
    assert ids == sorted(set(ids)), f"ids not increasing: {ids}"
    if complete:
        assert framed, "an empty stream"
    return framed


def _nulls(value: Any, path: str = "") -> list[str]:
    if value is None:
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _nulls(v, f"{path}/{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _nulls(v, f"{path}/{i}")]
    return []


def _extras(model: Any, path: str = "") -> list[str]:
    """Fields a model kept without declaring them (its ``extra="allow"``)."""
    if isinstance(model, BaseModel):
        found = [f"{path}/{k}" for k in (model.model_extra or {})]
        for name in type(model).model_fields:
            found += _extras(getattr(model, name), f"{path}/{name}")
        return found
    if isinstance(model, list):
        return [p for i, v in enumerate(model) for p in _extras(v, f"{path}/{i}")]
    return []


def check_events(events: list[AguiEvent], *, ended: bool = True) -> None:
    """Each event is a valid ``ag_ui.core`` event, exactly; the order is one
    ``verifyEvents`` accepts (and every ``*_START`` is closed before the run ends)."""
    for event in events:
        assert _nulls(event) == [], event
        model = EVENT.validate_python(event)
        assert _extras(model) == [], event
        assert EVENT.dump_python(model, mode="json", by_alias=True) == event
    assert "THINKING" not in json.dumps([e["type"] for e in events])
    assert events[0]["type"] == "RUN_STARTED", events[0]
    texts: set[str] = set()
    reasoning: set[str] = set()
    spans: set[str] = set()
    calls: set[str] = set()
    running = False
    for event in events:
        kind = event["type"]
        if kind == "RUN_STARTED":
            assert not running, "RUN_STARTED in a run"
            running = True
            continue
        assert running, f"{kind} outside a run"
        key = str(event.get("messageId") or event.get("toolCallId"))
        opened = {
            "TEXT_MESSAGE_START": texts,
            "REASONING_MESSAGE_START": reasoning,
            "REASONING_START": spans,
            "TOOL_CALL_START": calls,
        }.get(kind)
        if opened is not None:
            assert key not in opened, f"{kind} {key} already open"
            opened.add(key)
        continued = {
            "TEXT_MESSAGE_CONTENT": texts,
            "TEXT_MESSAGE_END": texts,
            "REASONING_MESSAGE_CONTENT": reasoning,
            "REASONING_MESSAGE_END": reasoning,
            "REASONING_END": spans,
            "TOOL_CALL_ARGS": calls,
            "TOOL_CALL_END": calls,
        }.get(kind)
        if continued is not None:
            assert key in continued, f"{kind} {key} not open"
            if kind.endswith("_END"):
                continued.remove(key)
        if kind in ("RUN_FINISHED", "RUN_ERROR"):
            assert not (texts or reasoning or spans or calls), (kind, texts, reasoning, calls)
            running = False
    if ended:
        assert not running, f"the stream ended in a run: {[e['type'] for e in events][-5:]}"


def reduce(events: list[AguiEvent], initial: list[dict[str, Any]] | None = None) -> list[Any]:
    """The messages ``@ag-ui/client``'s default reducer builds from these events."""
    messages: list[dict[str, Any]] = copy.deepcopy(initial or [])

    def find(message_id: str) -> dict[str, Any] | None:
        return next((m for m in messages if m["id"] == message_id), None)

    def call(call_id: str) -> dict[str, Any]:
        return next(c for m in messages for c in m.get("toolCalls", ()) if c["id"] == call_id)

    for event in events:
        kind = event["type"]
        if kind == "MESSAGES_SNAPSHOT":
            messages = copy.deepcopy(event["messages"])
        elif kind in ("TEXT_MESSAGE_START", "REASONING_MESSAGE_START"):
            if find(event["messageId"]) is None:
                messages.append({"id": event["messageId"], "role": event["role"], "content": ""})
        elif kind in ("TEXT_MESSAGE_CONTENT", "REASONING_MESSAGE_CONTENT"):
            target = find(event["messageId"])
            assert target is not None, event
            target["content"] += event["delta"]
        elif kind == "TOOL_CALL_START":
            parent = find(event["parentMessageId"])
            if parent is None:
                parent = {"id": event["parentMessageId"], "role": "assistant", "toolCalls": []}
                messages.append(parent)
            function = {"name": event["toolCallName"], "arguments": ""}
            parent.setdefault("toolCalls", []).append(
                {"id": event["toolCallId"], "type": "function", "function": function}
            )
        elif kind == "TOOL_CALL_ARGS":
            call(event["toolCallId"])["function"]["arguments"] += event["delta"]
        elif kind == "TOOL_CALL_RESULT":
            result = {
                "id": event["messageId"],
                "role": "tool",
                "content": event["content"],
                "toolCallId": event["toolCallId"],
            }
            holder = next(
                (
                    i
                    for i, m in enumerate(messages)
                    if m["role"] == "assistant"
                    and any(c["id"] == event["toolCallId"] for c in m.get("toolCalls", ()))
                ),
                None,
            )
            if holder is None:
                messages.append(result)
            else:
                at = holder + 1
                while at < len(messages) and messages[at]["role"] == "tool":
                    at += 1
                messages.insert(at, result)
    return messages


def canonical(messages: list[Any]) -> str:
    return json.dumps(messages, sort_keys=True)


OnEvent = Callable[[AguiEvent, int], Awaitable[None]]


async def agui(
    http: httpx2.AsyncClient,
    method: str,
    url: str,
    on_content: OnEvent | None = None,
    **kwargs: Any,
) -> list[Framed]:
    """One AG-UI stream read to its end; ``on_content`` sees each text or
    reasoning delta with its count."""
    body = ""
    contents = 0
    async with http.stream(method, url, **kwargs) as response:
        if response.status_code != 200:
            await response.aread()
            raise AssertionError(f"{response.status_code}: {response.text}")
        assert response.headers["content-type"].startswith("text/event-stream")
        with anyio.fail_after(WAIT):
            async for text in response.aiter_text():
                blocks_before = body.count("\n\n")
                body += text
                if on_content is None:
                    continue
                for _, event in parse_sse(body, complete=False)[blocks_before:]:
                    if event["type"] in ("TEXT_MESSAGE_CONTENT", "REASONING_MESSAGE_CONTENT"):
                        contents += 1
                        await on_content(event, contents)
    return parse_sse(body)


def post_body(thread: str, content: str, message_id: str = "m-1", **extra: Any) -> dict[str, Any]:
    return {
        "threadId": thread,
        "runId": "run-client-1",
        "messages": [{"id": message_id, "role": "user", "content": content}],
        "state": {},
        "tools": [],
        "context": [],
        **extra,
    }


def types(framed: list[Framed]) -> list[str]:
    return [event["type"] for _, event in framed]


def events_of(framed: list[Framed]) -> list[AguiEvent]:
    return [event for _, event in framed]


def failing_registry() -> AgentRegistry:
    def build() -> Agent:
        reply = ScriptedReply(text="half an answer", fail_after=ModelError("the provider said no"))
        return Agent(model=ScriptedModel([reply], token_delay=0.01))

    return AgentRegistry([AgentSpec(name="failing", build=build)])


# -- Python: the events, exactly -------------------------------------------------------
async def test_a_run_is_valid_agui_events_with_the_logs_ids(server: RunningServer) -> None:
    content = f"/think let me see\nhello world\n{TOOLS}"
    async with client() as http:
        framed = await agui(http, "POST", f"{server.api}/ag-ui", json=post_body("ag-1", content))
        log = await read_log(http, server, "ag-1")
    events = events_of(framed)
    check_events(events)
    assert events[0] == {
        "type": "RUN_STARTED",
        "threadId": "ag-1",
        "runId": "run-client-1",
        "protocolVersion": "1.0",
    }
    assert events[-1] == {"type": "RUN_FINISHED", "threadId": "ag-1", "runId": "run-client-1"}
    kinds = types(framed)
    for expected in (
        "REASONING_START",
        "REASONING_MESSAGE_START",
        "REASONING_MESSAGE_CONTENT",
        "REASONING_MESSAGE_END",
        "REASONING_END",
        "TEXT_MESSAGE_START",
        "TEXT_MESSAGE_END",
        "TOOL_CALL_START",
        "TOOL_CALL_ARGS",
        "TOOL_CALL_END",
        "TOOL_CALL_RESULT",
    ):
        assert expected in kinds, expected
    # the posted message is not echoed back: the client has it
    assert not any(e.get("role") == "user" for e in events)
    result = next(e for e in events if e["type"] == "TOOL_CALL_RESULT")
    assert result["content"] == "42"
    args = next(e for e in events if e["type"] == "TOOL_CALL_ARGS")
    assert json.loads(args["delta"]) == {"expression": "6*7"}
    messages = reduce(events, [{"id": "m-1", "role": "user", "content": content}])
    assert [m["role"] for m in messages] == [
        "user",
        "reasoning",
        "assistant",
        "tool",
        "reasoning",
        "assistant",
    ]
    assert messages[2]["content"] == "Echo: hello world"
    assert messages[2]["toolCalls"][0]["function"]["name"] == "calculator"
    assert messages[-1]["content"] == "Results: calculator=42"
    # ids are log seqs; the last one is the run's done
    seqs = {e["seq"] for e in log}
    ids = [i for i, _ in framed if i is not None]
    assert set(ids) <= seqs
    assert ids[-1] == next(e["seq"] for e in log if e["event"] == "done")


async def test_a_steer_is_an_inline_user_message_and_the_queue_a_state_snapshot(
    server: RunningServer,
) -> None:
    steer = {"content": "now in French", "mode": "steer", "id": "steer-1"}
    sent: list[httpx2.Response] = []

    async with client() as http:

        async def steer_once(event: AguiEvent, count: int) -> None:
            if count == 3:
                sent.append(
                    await http.post(f"{server.api}/conversations/ag-2/messages", json=steer)
                )

        framed = await agui(
            http, "POST", f"{server.api}/ag-ui", steer_once, json=post_body("ag-2", SLOW)
        )
    assert [r.status_code for r in sent] == [202]
    events = events_of(framed)
    check_events(events)
    user = [e for e in events if e["type"] == "TEXT_MESSAGE_START" and e["role"] == "user"]
    assert user == [{"type": "TEXT_MESSAGE_START", "messageId": "steer-1", "role": "user"}]
    queued = [e["snapshot"]["queue"] for e in events if e["type"] == "STATE_SNAPSHOT"]
    assert [q["id"] for q in queued[0]["steering"]] == ["steer-1"]
    assert queued[-1] == {"steering": [], "follow_up": []}
    messages = reduce(events, [{"id": "m-1", "role": "user", "content": SLOW}])
    at = next(i for i, m in enumerate(messages) if m["id"] == "steer-1")
    assert messages[at] == {"id": "steer-1", "role": "user", "content": "now in French"}
    assert messages[at + 1]["content"] == "Echo: now in French"


async def test_an_abort_closes_what_is_open_and_finishes_cancelled(server: RunningServer) -> None:
    async with client() as http:

        async def abort_in_reasoning(event: AguiEvent, count: int) -> None:
            if count == 2:
                assert event["type"] == "REASONING_MESSAGE_CONTENT"
                response = await http.post(f"{server.api}/conversations/ag-3/abort", json={})
                assert response.status_code == 200, response.text

        framed = await agui(
            http, "POST", f"{server.api}/ag-ui", abort_in_reasoning, json=post_body("ag-3", SLOW)
        )
    events = events_of(framed)
    check_events(events)
    assert events[-1]["outcome"] == {"type": "cancelled"}
    assert types(framed)[-3:] == ["REASONING_MESSAGE_END", "REASONING_END", "RUN_FINISHED"]


async def test_a_failed_run_closes_its_text_and_ends_with_run_error(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(ServerSettings(store="memory://"), failing_registry())
    body = post_body("ag-4", "hi", forwardedProps={"steerline": {"agent": "failing"}})
    async with client() as http:
        framed = await agui(http, "POST", f"{server.api}/ag-ui", json=body)
    events = events_of(framed)
    check_events(events)
    assert types(framed)[-2:] == ["TEXT_MESSAGE_END", "RUN_ERROR"]
    assert events[-1]["message"] == "the provider said no"
    assert "RUN_FINISHED" not in types(framed)


async def test_a_resume_from_any_event_ends_with_the_messages_of_the_whole_run(
    server: RunningServer,
) -> None:
    """After a steered run with reasoning and tools: ``GET …/stream`` with
    every ``Last-Event-ID`` of the log gives valid events that end with the
    messages of the client that posted the run."""
    content = f"/delay 20\n/think a b c\none two three four five six\n{TOOLS}"
    steer = {"content": "and then?", "mode": "steer", "id": "steer-9"}
    async with client() as http:

        async def steer_once(event: AguiEvent, count: int) -> None:
            if count == 2:
                await http.post(f"{server.api}/conversations/ag-5/messages", json=steer)

        framed = await agui(
            http, "POST", f"{server.api}/ag-ui", steer_once, json=post_body("ag-5", content)
        )
        full = reduce(events_of(framed), [{"id": "m-1", "role": "user", "content": content}])
        assert any(m["id"] == "steer-9" for m in full)
        log = await read_log(http, server, "ag-5")
        for after in range(log[-1]["seq"] + 1):
            url = f"{server.api}/ag-ui/ag-5/stream"
            resumed = await agui(http, "GET", url, headers={"Last-Event-ID": str(after)})
            events = events_of(resumed)
            check_events(events)
            assert types(resumed)[:2] == ["RUN_STARTED", "MESSAGES_SNAPSHOT"], after
            assert canonical(reduce(events)) == canonical(full), after
        # no Last-Event-ID on an idle conversation: the messages as one finished run
        joined = await agui(http, "GET", f"{server.api}/ag-ui/ag-5/stream")
    assert types(joined) == ["RUN_STARTED", "MESSAGES_SNAPSHOT", "STATE_SNAPSHOT", "RUN_FINISHED"]
    assert canonical(events_of(joined)[1]["messages"]) == canonical(full)


async def test_a_second_message_on_a_thread_and_a_repeated_one(server: RunningServer) -> None:
    async with client() as http:
        first = await agui(http, "POST", f"{server.api}/ag-ui", json=post_body("ag-6", "one"))
        history = reduce(events_of(first), [{"id": "m-1", "role": "user", "content": "one"}])
        body = post_body("ag-6", "two", "m-2")
        body["messages"] = [*history, {"id": "m-2", "role": "user", "content": "two"}]
        second = await agui(http, "POST", f"{server.api}/ag-ui", json=body)
        again = await agui(http, "POST", f"{server.api}/ag-ui", json=body)
        # from the start of the log: the (empty) snapshot as a run, then both runs
        replay = await agui(
            http, "GET", f"{server.api}/ag-ui/ag-6/stream", headers={"Last-Event-ID": "0"}
        )
    for framed in (first, second, again, replay):
        check_events(events_of(framed))
    answer = reduce(events_of(second), body["messages"])
    assert answer[-1]["content"] == "Echo: two"
    # the same message id again queues nothing and answers the same run again
    assert events_of(again) == events_of(second)
    assert types(replay).count("RUN_STARTED") == 3
    assert canonical(reduce(events_of(replay))) == canonical(answer)


async def test_bad_input_is_a_4xx_json_error(server: RunningServer) -> None:
    url = f"{server.api}/ag-ui"
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({**post_body("ag-7", "hi"), "messages": []}, 400, "invalid_value"),
        (
            {**post_body("ag-7", "hi"), "messages": [{"id": "a", "role": "assistant"}]},
            400,
            "invalid_value",
        ),
        (post_body("ag-7", ""), 400, "invalid_value"),
        (post_body("bad id!", "hi"), 400, "invalid_value"),
        (post_body("..", "hi"), 400, "invalid_value"),
        (
            post_body("ag-7", "hi", forwardedProps={"steerline": {"mode": "x"}}),
            400,
            "invalid_value",
        ),
        (post_body("ag-7", "hi", forwardedProps={"steerline": []}), 400, "invalid_value"),
        (
            post_body("ag-7", "hi", forwardedProps={"steerline": {"agent": "no"}}),
            404,
            "unknown_agent",
        ),
        (post_body("ag-7", "hi", "x" * 201), 422, "invalid_request"),
        ({"threadId": "ag-7"}, 422, "invalid_request"),
    ]
    image = {"type": "image", "source": {"type": "url", "value": "http://x/y.png"}}
    with_image = post_body("ag-7", "hi")
    with_image["messages"][0]["content"] = [{"type": "text", "text": "hi"}, image]
    cases.append((with_image, 400, "invalid_value"))
    async with client() as http:
        for body, status, code in cases:
            error_of(await http.post(url, json=body), status, code)
        error_of(await http.post(f"{url}?on_disconnect=later", json=post_body("ag-7", "hi")), 400)
        # none of the refused messages created the conversation
        error_of(await http.get(f"{url}/ag-7/stream"), 404, "conversation_not_found")
        # text parts are joined
        parts = post_body("ag-7", "")
        parts["messages"][0]["content"] = [
            {"type": "text", "text": "a"},
            {"type": "text", "text": "b"},
        ]
        framed = await agui(http, "POST", url, json=parts)
        assert "".join(e.get("delta", "") for e in events_of(framed)) == "Echo: a\nb"
        error_of(await http.get(f"{url}/ag-7/stream", headers={"Last-Event-ID": "99999"}), 400)
        error_of(await http.get(f"{url}/ag-7/stream", headers={"Last-Event-ID": "x"}), 400)


def _props(**steerline: Any) -> dict[str, Any]:
    return {"steerline": steerline}


async def test_tenants_and_keys_as_on_the_native_routes(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(ServerSettings(store="memory://", api_keys={"k1": "t1", "k2": "t2"}))
    url = f"{server.api}/ag-ui"
    t1, t2 = {"Authorization": "Bearer k1"}, {"Authorization": "Bearer k2"}
    async with client() as http:
        error_of(await http.post(url, json=post_body("ag-8", "hi")), 401, "unauthorized")
        framed = await agui(http, "POST", url, json=post_body("ag-8", "hi"), headers=t1)
        check_events(events_of(framed))
        error_of(await http.get(f"{url}/ag-8/stream"), 401, "unauthorized")
        error_of(await http.get(f"{url}/ag-8/stream", headers=t2), 404)
        error_of(await http.post(url, json=post_body("ag-8", "hi", "m-2"), headers=t2), 404)
        joined = await agui(http, "GET", f"{url}/ag-8/stream", headers=t1)
    assert types(joined)[:2] == ["RUN_STARTED", "MESSAGES_SNAPSHOT"]


def test_the_translator_is_a_pure_function_of_the_log() -> None:
    """Fed the same envelopes, two translators say the same; a resume at any
    point plus the rest of the log gives the messages of the whole."""
    envelopes = [
        {"event": "task_started", "data": {"task_id": "run-1"}},
        {"event": "thread_started", "data": {"item_id": "u", "payload": {"content": "hi"}}},
        {"event": "message_chunk", "data": {"item_id": "t1", "payload": {"content": "Hel"}}},
        {"event": "queue_updated", "data": {"payload": {"steering": [], "follow_up": []}}},
        {"event": "message_chunk", "data": {"item_id": "t1", "payload": {"content": "lo"}}},
        {"event": "tool_call_started", "data": {"item_id": "c", "payload": _call()}},
        {"event": "tool_call_completed", "data": {"item_id": "c", "payload": _result()}},
        {"event": "reasoning_started", "data": {"item_id": "r"}},
        {"event": "reasoning", "data": {"item_id": "r", "payload": {"content": "hm"}}},
        {"event": "task_cancelled", "data": {"payload": {"stop_reason": "aborted"}}},
        {"event": "done", "data": {"payload": {"stop_reason": "aborted"}}},
    ]
    raw = [_envelope(e, seq) for seq, e in enumerate(envelopes, 1)]

    def run(cut: int) -> list[AguiEvent]:
        translator = AguiTranslator("th")
        for envelope in raw[:cut]:
            translator.feed(envelope)
        events = translator.resume()
        for envelope in raw[cut:]:
            events += translator.feed(envelope)
        return events + translator.finish()

    whole = run(0)
    assert whole == run(0)
    check_events(whole)
    assert whole[-1]["outcome"] == {"type": "cancelled"}
    for cut in range(len(raw) + 1):
        events = run(cut)
        check_events(events)
        assert canonical(reduce(events)) == canonical(reduce(whole)), cut


def _call() -> dict[str, Any]:
    return {"tool_call_id": "c", "tool_name": "echo", "tool_args": {"text": "x"}}


def _result() -> dict[str, Any]:
    return {
        "tool_call_id": "c",
        "tool_name": "echo",
        "tool_result": '[{"content": "x"}]',
        "is_error": False,
        "skipped": False,
    }


def _envelope(event: dict[str, Any], seq: int) -> bytes:
    data = {"conversation_id": "th", "role": "agent", "item_id": f"i{seq}", **event["data"]}
    return json.dumps({"event": event["event"], "data": data, "seq": seq}).encode()


# -- Node: the real @ag-ui/client ------------------------------------------------------
def node_client(config: dict[str, Any]) -> dict[str, Any]:
    """Run ``agui_client.mjs`` with ``config``; its report."""
    if shutil.which("node") is None or not (NODE / "node_modules/@ag-ui/client").is_dir():
        message = "node or tests/protocols/node/node_modules missing (npm ci there)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    done = subprocess.run(
        ["node", "agui_client.mjs", json.dumps(config)],
        cwd=NODE,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    assert report["printed"] == [], report["printed"]
    for read in report["raw"]:
        assert read["status"] == 200, read
        check_events(events_of(parse_sse(read["body"])))
    for name, agent in report["agents"].items():
        assert agent["resolved"], (name, agent.get("rejection"))
        assert agent["failure"] is None, (name, agent["failure"])
    return report


def run_config(server: RunningServer, thread: str, content: str, **extra: Any) -> dict[str, Any]:
    return {
        "scenario": "run",
        "api": server.api,
        "threadId": thread,
        "runId": f"run-of-{thread}",
        "messageId": "m-1",
        "content": content,
        **extra,
    }


def test_http_agent_runs_a_run(server: RunningServer) -> None:
    content = f"/think let me see\nhello\n{TOOLS}"
    agent = node_client(run_config(server, "node-1", content))["agents"]["poster"]
    assert agent["types"][0] == "RUN_STARTED" and agent["types"][-1] == "RUN_FINISHED"
    messages = agent["messages"]
    assert [m["role"] for m in messages] == [
        "user",
        "reasoning",
        "assistant",
        "tool",
        "reasoning",
        "assistant",
    ]
    assert messages[2]["toolCalls"][0]["function"] == {
        "name": "calculator",
        "arguments": '{"expression": "6*7"}',
    }
    assert messages[3]["content"] == "42"
    assert messages[-1]["content"] == "Results: calculator=42"
    assert [m["id"] for m in agent["newMessages"]] == [m["id"] for m in messages[1:]]


def test_http_agent_runs_a_steered_run(server: RunningServer) -> None:
    action = {"after": 3, "kind": "steer", "content": "now in French", "id": "steer-1"}
    report = node_client(run_config(server, "node-2", SLOW, action=action))
    assert [a["status"] for a in report["actions"]] == [202]
    messages = report["agents"]["poster"]["messages"]
    at = next(i for i, m in enumerate(messages) if m["id"] == "steer-1")
    assert messages[at] == {"id": "steer-1", "role": "user", "content": "now in French"}
    assert messages[at + 1]["content"] == "Echo: now in French"


def test_http_agent_runs_an_aborted_run(server: RunningServer) -> None:
    action = {"after": 15, "kind": "abort"}
    report = node_client(run_config(server, "node-3", SLOW, action=action))
    assert [a["status"] for a in report["actions"]] == [200]
    agent = report["agents"]["poster"]
    assert agent["types"][-2:] == ["TEXT_MESSAGE_END", "RUN_FINISHED"]
    text = agent["messages"][-1]["content"]
    assert text.startswith("Echo: w0") and not text.endswith("w29")


def test_http_agent_runs_a_failed_run(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(ServerSettings(store="memory://"), failing_registry())
    props = {"steerline": {"agent": "failing"}}
    agent = node_client(run_config(server, "node-4", "hi", forwardedProps=props))["agents"][
        "poster"
    ]
    assert agent["types"][-2:] == ["TEXT_MESSAGE_END", "RUN_ERROR"]
    assert agent["runError"] == {"message": "the provider said no", "code": "run_failed"}


def test_a_connect_subclass_joins_a_live_run_and_ends_with_the_same_messages(
    server: RunningServer,
) -> None:
    content = f"/delay 25\n/think a b c d e f\none two three four five six seven\n{TOOLS}"
    config = run_config(
        server,
        "node-5",
        content,
        scenario="join",
        joinAfter=3,
        resumeFrom=5,
        action={"after": 5, "kind": "steer", "content": "in French", "id": "steer-5"},
    )
    agents = node_client(config)["agents"]
    poster = agents["poster"]["messages"]
    assert any(m["id"] == "steer-5" for m in poster)
    assert [m["role"] for m in poster][:4] == ["user", "reasoning", "assistant", "tool"]
    for name in ("joiner", "resumer"):
        assert agents[name]["types"][:2] == ["RUN_STARTED", "MESSAGES_SNAPSHOT"], name
        assert canonical(agents[name]["messages"]) == canonical(poster), name
    # the joiner came in while the reasoning streamed: it was re-opened for it
    assert agents["joiner"]["types"][2:4] == ["REASONING_START", "REASONING_MESSAGE_START"]


# -- a busy conversation, a client that leaves ---------------------------------------
@pytest.mark.parametrize("mode", ["auto", "follow_up", "steer"])
async def test_a_message_for_a_busy_thread_streams_the_run_that_answers_it(
    server: RunningServer, mode: str
) -> None:
    """Posted while another client's run streams: the stream starts mid-run
    (text opened at its first chunk seen, a tool call started before it
    completed with its result) and ends with the run that answers it."""
    thread = f"ag-busy-{mode}"
    first = '/delay 20\none two three four five six\n/call sleep {"seconds": 1}'
    body = post_body(thread, "second", "m-2", forwardedProps=_props(mode=mode))
    async with client() as http, anyio.create_task_group() as group:
        started = anyio.Event()

        async def first_run() -> None:
            async def go(event: AguiEvent, count: int) -> None:
                if count == 2:
                    started.set()

            framed = await agui(
                http, "POST", f"{server.api}/ag-ui", go, json=post_body(thread, first)
            )
            check_events(events_of(framed))

        group.start_soon(first_run)
        with anyio.fail_after(WAIT):
            await started.wait()
        framed = await agui(http, "POST", f"{server.api}/ag-ui", json=body)
    events = events_of(framed)
    check_events(events)
    assert events[0]["runId"] == "run-client-1"
    assert not any(e.get("messageId") == "m-2" for e in events), "the posted message echoed"
    messages = reduce(events, body["messages"])
    assert messages[-1] == {
        "id": messages[-1]["id"],
        "role": "assistant",
        "content": "Echo: second",
    }
    # a steer is answered instead of the tool results, a follow-up after them
    answered_results = any(m.get("content", "").startswith("Results:") for m in messages)
    assert answered_results is (mode != "steer")


@pytest.mark.parametrize("route", ["post", "join"])
async def test_on_disconnect_cancel_aborts_the_run(server: RunningServer, route: str) -> None:
    slow = '/call sleep {"seconds": 30}'
    thread = f"ag-leave-{route}"
    async with client() as http:
        if route == "join":
            await agui(http, "POST", f"{server.api}/ag-ui", json=post_body(thread, "hi"))
            response = await http.post(
                f"{server.api}/conversations/{thread}/messages",
                json={"content": slow, "mode": "steer"},
            )
            assert response.status_code == 202, response.text
            method, url, body = "GET", f"{server.api}/ag-ui/{thread}/stream", None
        else:
            method, url, body = "POST", f"{server.api}/ag-ui", post_body(thread, slow)
        async with http.stream(method, f"{url}?on_disconnect=cancel", json=body) as response:
            assert response.status_code == 200
            read = ""
            with anyio.fail_after(WAIT):
                async for text in response.aiter_text():
                    read += text
                    if "TOOL_CALL_END" in read or (route == "join" and "RUN_STARTED" in read):
                        break
        # the client left: the run is aborted
        log = await wait_idle(http, server, thread)
    assert log[-1]["data"]["payload"] == {"stop_reason": "aborted"}
