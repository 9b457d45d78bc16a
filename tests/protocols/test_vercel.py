"""The Vercel AI SDK UI message stream v1 view (SPEC §3.5), against real servers.

The chunks are checked by the AI SDK itself under Node (``ai`` 6 in
``node/node_modules``, installed by ``npm ci`` in scripts/test):
``node/vercel_chat.mjs`` drives ``DefaultChatTransport`` (send, steer through
the native API mid-run, reconnect mid-run, reconnect when idle) and
``node/vercel_check.mjs`` validates chunk lists with ai's own
``uiMessageChunkSchema``, ai 5's stricter field sets, the part lifecycles and
``readUIMessageStream``. Without node or node_modules these skip, except under
``CI=true``, where they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from steerline.server.settings import ServerSettings
from steerline.wire.envelope import EventName
from steerline.wire.translate import RunTranslator
from steerline.wire.vercel import translate_log
from tests.server.clients import WAIT, client, read_log, wait_idle
from tests.server.conftest import make_server, server
from tests.server.harness import RunningServer

__all__ = ["make_server", "server"]

NODE_DIR = Path(__file__).parent / "node"
Chunk = dict[str, Any]

SLOW_TOOL = '/delay 15\n/think weighing it\n/call sleep {"seconds": 1.5}\nWhat now?'
"""A run that sleeps in a tool long enough to act on it meanwhile."""


# -- Node -----------------------------------------------------------------------------
def node(script: str, *args: str, stdin: str | None = None) -> dict[str, Any]:
    """Run ``node/<script>``; its stdout is one JSON report."""
    if shutil.which("node") is None or not (NODE_DIR / "node_modules" / "ai").is_dir():
        message = "node or tests/protocols/node/node_modules missing (run `npm ci` there)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    done = subprocess.run(
        ["node", str(NODE_DIR / script), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=90,
        cwd=NODE_DIR,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def check_chunks(chunks: list[Chunk], errors: tuple[str, ...] = ()) -> dict[str, Any]:
    """The AI SDK's verdict on ``chunks``: valid for ai 6 and ai 5 (their own
    schemas, and the field sets of early 5.x's strict one), every part opened
    before its deltas and closed before ``finish``, assembled by each major's
    ``readUIMessageStream`` with no error but the ``error`` chunks expected and
    the same text. Returns the UIMessage ai 6 assembled."""
    report = node("vercel_check.mjs", stdin=json.dumps({"chunks": chunks}))
    assert report["count"] == len(chunks)
    assert report["invalid"] == []
    assert report["invalidV5"] == []
    assert report["extraKeys"] == []
    assert report["order"] == []
    assert report["unclosed"] == []
    assert report["streamErrors"] == list(errors)
    assert report["streamErrorsV5"] == list(errors)
    message: dict[str, Any] = report["message"]
    if message is not None:
        assert _texts(report["messageV5"]) == _texts(message)
    return message


def _texts(message: dict[str, Any]) -> list[tuple[str, str]]:
    """The text and reasoning parts of a UIMessage, in order."""
    return [
        (part["type"], part.get("text", ""))
        for part in message.get("parts", [])
        if part.get("type") in ("text", "reasoning")
    ]


# -- reading a UI message stream ------------------------------------------------------
class ChunkStream:
    """An open UI message stream, parsed as the AI SDK's SSE parser does."""

    def __init__(self, response: httpx2.Response) -> None:
        self.response = response
        self.chunks: list[Chunk] = []
        self.done = False
        """``data: [DONE]`` was read."""
        self.comments: list[str] = []
        self._lines = response.aiter_lines()

    async def next(self) -> Chunk | None:
        """The next chunk; None at the end of the stream."""
        with anyio.fail_after(WAIT):
            async for line in self._lines:
                if not line:
                    continue
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                    continue
                assert line.startswith("data: "), line
                assert not self.done, f"{line!r} after [DONE]"
                if line == "data: [DONE]":
                    self.done = True
                    continue
                chunk: Chunk = json.loads(line[len("data: ") :])
                self.chunks.append(chunk)
                return chunk
        return None

    async def until(self, match: Callable[[Chunk], bool]) -> Chunk:
        while (chunk := await self.next()) is not None:
            if match(chunk):
                return chunk
        raise AssertionError(f"stream ended before the chunk looked for: {types(self.chunks)}")

    async def rest(self) -> list[Chunk]:
        """Read to the end; every chunk of the stream."""
        while await self.next() is not None:
            pass
        return self.chunks


@asynccontextmanager
async def open_chunks(
    http: httpx2.AsyncClient, method: str, url: str, **kwargs: Any
) -> AsyncIterator[ChunkStream]:
    async with http.stream(method, url, **kwargs) as response:
        assert response.status_code == 200, (await response.aread())[:500]
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
        yield ChunkStream(response)


def chat_body(chat_id: str, text: str, message_id: str | None = None) -> dict[str, Any]:
    """What ``DefaultChatTransport`` posts for a new user message."""
    return {
        "id": chat_id,
        "messages": [
            {
                "id": message_id or f"u-{uuid.uuid4().hex[:12]}",
                "role": "user",
                "parts": [{"type": "text", "text": text}],
            }
        ],
        "trigger": "submit-message",
        "messageId": None,
    }


def types(chunks: list[Chunk]) -> list[str]:
    return [chunk["type"] for chunk in chunks]


def is_tool_input(name: str) -> Callable[[Chunk], bool]:
    return lambda c: c["type"] == "tool-input-available" and c["toolName"] == name


def new_chat_id() -> str:
    return f"vercel-{uuid.uuid4().hex[:12]}"


# -- ai@6's useChat transport, end to end ---------------------------------------------
def test_ai6_transport_streams_steers_and_reconnects(server: RunningServer) -> None:
    """``DefaultChatTransport.sendMessages`` + ``readUIMessageStream`` over a demo
    run with reasoning and tools, steered mid-run through the native API; a
    reconnect mid-run replays the run exactly (and from ``startIndex``, the
    rest); when idle a reconnect is ``null`` (204)."""
    chat_id = new_chat_id()
    report = node("vercel_chat.mjs", server.url, chat_id)
    assert report["steerStatus"] == 202
    assert report["errors"] == []
    chunks: list[Chunk] = report["chunks"]
    message = report["message"]
    parts = message["parts"]
    kinds = [part["type"] for part in parts]
    assert {"reasoning", "text", "tool-sleep", "tool-clock", "data-steerline-steer"} <= set(kinds)
    reasoning = next(part for part in parts if part["type"] == "reasoning")
    assert reasoning["text"] == "weighing the question" and reasoning["state"] == "done"
    sleep = next(part for part in parts if part["type"] == "tool-sleep")
    assert sleep["state"] == "output-available" and sleep["input"] == {"seconds": 1.5}
    steer = next(part for part in parts if part["type"] == "data-steerline-steer")
    assert steer["data"]["delivery"] == "steer"
    texts = [part["text"] for part in parts if part["type"] == "text"]
    assert texts[0] == "Echo: What time is it?"
    # the steer is answered after it was delivered, in a step of its own
    assert texts[-1] == "Echo: Never mind the time, just say hi."
    assert kinds.index("data-steerline-steer") < len(kinds) - 1 - kinds[::-1].index("text")
    assert all(part.get("state") in (None, "done", "output-available") for part in parts)
    assert message["id"] == chunks[0]["messageId"]
    # reconnecting mid-run: the run from its start (ai 6's resumeStreamIsReplay)
    assert report["replayNull"] is False
    assert report["replayEqualChunks"] is True
    assert report["replayMessageEqual"] is True
    # ... and from startIndex, exactly the rest
    assert report["restNull"] is False
    assert 0 < report["prefixLength"] < len(chunks)
    assert report["restChunks"] == chunks[report["prefixLength"] :]
    assert report["restEqual"] is True and report["restMessageEqual"] is True
    assert report["idleReconnect"] is None
    assert check_chunks(chunks) == message


def test_use_chat_resume_on_a_new_or_idle_chat_stays_ready(
    make_server: Callable[..., RunningServer],
) -> None:
    """``useChat({resume: true})`` reconnects when its page mounts, and the
    page of a new chat mounts before its first message created the
    conversation: no run to reconnect to (204, ``null``), not an error that
    leaves the chat in ``status: "error"``. Another tenant's conversation
    answers the same (nothing about it shows)."""
    running = make_server(ServerSettings(store="memory://", api_keys={"ka": "alice", "kb": "bob"}))
    fresh = node("vercel_resume.mjs", running.url, new_chat_id(), "ka")
    assert fresh == {"status": "ready", "error": None, "errors": [], "messages": []}
    chat_id = new_chat_id()
    with httpx2.Client(timeout=WAIT, headers={"Authorization": "Bearer ka"}) as http:
        posted = http.post(f"{running.api}/vercel/chat", json=chat_body(chat_id, "hi"))
        assert posted.status_code == 200 and posted.text.endswith("data: [DONE]\n\n")
    idle = node("vercel_resume.mjs", running.url, chat_id, "ka")
    assert idle == fresh
    assert node("vercel_resume.mjs", running.url, chat_id, "kb") == fresh


# -- every chunk of every kind of run validates ---------------------------------------
@pytest.mark.anyio
async def test_a_plain_run_validates_and_ends_with_done(server: RunningServer) -> None:
    query = '/think step by step\n/call calculator {"expression": "6*7"}\n/call nope {}\nHello'
    async with (
        client() as http,
        open_chunks(
            http, "POST", f"{server.api}/vercel/chat", json=chat_body(new_chat_id(), query)
        ) as stream,
    ):
        chunks = await stream.rest()
        assert stream.done
    assert chunks[0]["type"] == "start" and chunks[-1] == {"type": "finish"}
    assert "error" not in types(chunks)
    message = check_chunks(chunks)
    tools = {part["type"]: part for part in message["parts"] if part["type"].startswith("tool-")}
    assert tools["tool-calculator"]["output"] == "42"
    assert tools["tool-nope"]["state"] == "output-error"  # an unknown tool: an error result
    assert [part["type"] for part in message["parts"]].count("step-start") == 2


@pytest.mark.anyio
async def test_an_aborted_run_closes_its_parts_then_abort_and_finish(
    server: RunningServer,
) -> None:
    chat_id = new_chat_id()
    async with (
        client() as http,
        open_chunks(
            http, "POST", f"{server.api}/vercel/chat", json=chat_body(chat_id, SLOW_TOOL)
        ) as stream,
    ):
        await stream.until(is_tool_input("sleep"))
        aborted = await http.post(f"{server.api}/conversations/{chat_id}/abort", json={})
        assert aborted.status_code == 200, aborted.text
        chunks = await stream.rest()
        assert stream.done
    assert types(chunks)[-3:] == ["finish-step", "abort", "finish"]
    message = check_chunks(chunks)
    sleep = next(part for part in message["parts"] if part["type"] == "tool-sleep")
    assert sleep["state"] == "output-error"


@pytest.mark.anyio
async def test_an_interrupt_and_a_queued_message_are_data_parts(server: RunningServer) -> None:
    """A second ``useChat`` POST into a busy conversation is queued (``auto``):
    its stream starts mid-run with ``start`` and tells of its queueing and
    delivery; an interrupting steer cancels the tool."""
    chat_id = new_chat_id()
    async with (
        client() as http,
        open_chunks(
            http, "POST", f"{server.api}/vercel/chat", json=chat_body(chat_id, SLOW_TOOL)
        ) as first,
    ):
        await first.until(is_tool_input("sleep"))
        body = chat_body(chat_id, "/delay 5\nand then this", message_id="u-second")
        async with open_chunks(http, "POST", f"{server.api}/vercel/chat", json=body) as second:
            queued = await second.until(lambda c: c["type"] == "data-steerline-queued")
            interrupt = await http.post(
                f"{server.api}/conversations/{chat_id}/messages",
                json={"content": "/delay 5\nstop that", "mode": "interrupt", "id": "u-int"},
            )
            assert interrupt.status_code == 202, interrupt.text
            later = await second.rest()
            assert second.done
        full = await first.rest()
        assert first.done
    assert queued["data"] == {"message_id": "u-second", "delivery": "follow_up", "position": 0}
    assert later[0]["type"] == "start" and later[0]["messageId"] == full[0]["messageId"]
    assert later[-1] == full[-1] == {"type": "finish"}
    message = check_chunks(full)
    parts = {(part["type"], part.get("id")): part for part in message["parts"]}
    assert parts["data-steerline-queued", "u-second"]["data"]["delivery"] == "follow_up"
    assert parts["data-steerline-steer", "u-int"]["data"]["content"] == "/delay 5\nstop that"
    assert parts["data-steerline-follow-up", "u-second"]["data"]["delivery"] == "follow_up"
    assert parts["data-steerline-queue", "queue"]["data"] == {"steering": [], "follow_up": []}
    sleep = next(part for part in message["parts"] if part["type"] == "tool-sleep")
    assert sleep["state"] == "output-error" and "Cancelled" in sleep["errorText"]
    texts = [part["text"] for part in message["parts"] if part["type"] == "text"]
    assert texts[-2:] == ["Echo: stop that", "Echo: and then this"]
    queued_message = check_chunks(later)
    assert [p["text"] for p in queued_message["parts"] if p["type"] == "text"][-2:] == texts[-2:]


def test_a_failed_run_is_one_error_chunk_after_its_parts_close() -> None:
    """Recovery's ``system_failed`` + ``task_failed`` + ``done`` (written by the
    real translator) after a partial answer: the parts close, one ``error``."""
    envelopes: list[bytes] = []
    wire = RunTranslator(
        "conv-x", "demo", lambda _event, envelope, _run: envelopes.append(envelope)
    )
    wire.task_id = "run-x"
    wire.emit(EventName.TASK_STARTED, "agent")
    wire.emit(EventName.REASONING_STARTED, "agent", item_id="item-r")
    wire.delta(EventName.REASONING, "item-r", "hmm")
    wire.delta(EventName.MESSAGE_CHUNK, "item-t", "partial ans")
    wire.run_failed("run-x", "run_lost", "the process running it died")
    chunks = translate_log(envelopes)
    assert types(chunks) == [
        "start",
        "start-step",
        "reasoning-start",
        "reasoning-delta",
        "reasoning-end",
        "text-start",
        "text-delta",
        "text-end",
        "finish-step",
        "error",
        "finish",
    ]
    assert chunks[-2]["errorText"] == "the process running it died"
    assert translate_log(envelopes) == chunks  # a pure function of the log
    check_chunks(chunks, errors=("the process running it died",))


# -- resume by chunk index ------------------------------------------------------------
@pytest.mark.anyio
async def test_start_index_continues_exactly_after_chunk_n(server: RunningServer) -> None:
    """Mid-run, ``GET …/stream`` is the POST's stream from its first chunk, and
    ``?startIndex=N`` exactly its chunks after N; after the run: 204."""
    chat_id = new_chat_id()
    query = "/delay 20\n/think a b c d e f\n" + " ".join(f"w{i}" for i in range(40))
    async with client() as http:
        async with open_chunks(
            http, "POST", f"{server.api}/vercel/chat", json=chat_body(chat_id, query)
        ) as posted:
            for _ in range(12):
                assert await posted.next() is not None
            url = f"{server.api}/vercel/chat/{chat_id}/stream"
            seen = len(posted.chunks)
            results: dict[int, list[Chunk]] = {}

            async def read(index: int) -> None:
                params = {} if index < 0 else {"startIndex": str(index)}
                async with open_chunks(http, "GET", url, params=params) as stream:
                    results[index] = await stream.rest()
                    assert stream.done

            async with anyio.create_task_group() as group:
                for index in (-1, 0, 3, seen - 1, seen + 5):
                    group.start_soon(read, index)
                full = await posted.rest()
        assert len(full) > seen + 6
        assert results[-1] == full
        for index in (0, 3, seen - 1, seen + 5):
            assert results[index] == full[index + 1 :], index
        idle = await http.get(url)
        assert idle.status_code == 204 and idle.content == b""
        # a start index past the end of a run: the rest is nothing
    check_chunks(full)


@pytest.mark.anyio
async def test_a_new_conversations_answer_indexes_like_its_runs_stream(
    server: RunningServer,
) -> None:
    """The POST that creates a conversation starts at ``conversation_started``,
    which gives no chunk: its chunk N is the resume stream's chunk N."""
    chat_id = new_chat_id()
    async with client() as http:
        async with open_chunks(
            http, "POST", f"{server.api}/vercel/chat", json=chat_body(chat_id, "hello there")
        ) as posted:
            chunks = await posted.rest()
        log = await read_log(http, server, chat_id)
    assert log[0]["event"] == "conversation_started"
    run = [json.dumps(event).encode() for event in log if event["data"].get("task_id")]
    assert translate_log([json.dumps(event).encode() for event in log]) == chunks
    assert translate_log(run) == chunks


@pytest.mark.anyio
async def test_a_repeated_message_id_answers_the_same_chunks(server: RunningServer) -> None:
    """A re-POST (or ``regenerate`` of the same user message) runs nothing again."""
    body = chat_body(new_chat_id(), '/call calculator {"expression": "1+1"}\nhi')
    async with client() as http:
        answers = []
        for _ in range(2):
            async with open_chunks(http, "POST", f"{server.api}/vercel/chat", json=body) as stream:
                answers.append(await stream.rest())
        log = await read_log(http, server, body["id"])
    assert answers[0] == answers[1]
    assert [event["event"] for event in log].count("task_started") == 1


# -- the rules of the native routes ---------------------------------------------------
@pytest.mark.anyio
async def test_bad_requests_are_4xx_json(server: RunningServer) -> None:
    chat = f"{server.api}/vercel/chat"
    async with client() as http:
        busy = new_chat_id()
        async with open_chunks(http, "POST", chat, json=chat_body(busy, "hi")) as stream:
            await stream.rest()
        refused = [new_chat_id() for _ in range(5)]
        cases: list[tuple[str, str, Any, int, str]] = [
            ("POST", chat, {**chat_body(refused[0], "x"), "messages": []}, 422, ""),
            (
                "POST",
                chat,
                {"id": refused[1], "messages": [{"id": "a", "role": "assistant", "parts": []}]},
                400,
                "invalid_value",
            ),
            (
                "POST",
                chat,
                {"id": refused[2], "messages": [{"id": "a", "role": "user", "parts": []}]},
                400,
                "invalid_value",
            ),
            ("POST", chat, chat_body("a/b", "x"), 400, "invalid_value"),
            ("POST", chat, chat_body("..", "x"), 400, "invalid_value"),
            ("POST", chat, chat_body("x" * 129, "x"), 400, "invalid_value"),
            ("POST", chat, chat_body(new_chat_id(), "x", message_id="\ud800"), 422, ""),
            ("POST", chat, {"id": 5, "messages": "no"}, 422, "invalid_request"),
            ("POST", f"{chat}?on_disconnect=never", chat_body(refused[3], "x"), 400, ""),
            (
                "POST",
                chat,
                {**chat_body(refused[4], "x"), "agent_name": "nope"},
                404,
                "unknown_agent",
            ),
            ("GET", f"{chat}/a%20b/stream", None, 400, "invalid_value"),
            ("GET", f"{chat}/{'x' * 129}/stream", None, 400, "invalid_value"),
            ("GET", f"{chat}/{busy}/stream?startIndex=-1", None, 400, "invalid_value"),
            ("GET", f"{chat}/{busy}/stream?startIndex=%C2%B2", None, 400, "invalid_value"),
            ("GET", f"{chat}/{busy}/stream?startIndex={2**64}", None, 400, "invalid_value"),
            ("GET", f"{chat}/{busy}/stream?on_disconnect=x", None, 400, "invalid_value"),
        ]
        for method, url, body, status, code in cases:
            if body is None:
                response = await http.request(method, url)
            else:
                content = json.dumps(body).encode()  # lone surrogates as \\ud800 escapes
                headers = {"content-type": "application/json"}
                response = await http.request(method, url, content=content, headers=headers)
            assert response.status_code == status, (url, body, response.text)
            error = response.json()["error"]
            assert error["code"] == code or not code, (url, error)
        for chat_id in refused:  # a refused message created nothing
            assert (await http.get(f"{server.api}/conversations/{chat_id}")).status_code == 404
        idle = await http.get(f"{chat}/{busy}/stream")
        assert idle.status_code == 204
        # no such conversation: nothing to reconnect to either (see the useChat test)
        assert (await http.get(f"{chat}/{new_chat_id()}/stream")).status_code == 204


@pytest.mark.anyio
async def test_tenants_and_keys_are_the_native_ones(
    make_server: Callable[..., RunningServer],
) -> None:
    running = make_server(ServerSettings(store="memory://", api_keys={"ka": "alice", "kb": "bob"}))
    chat = f"{running.api}/vercel/chat"
    chat_id = new_chat_id()
    alice = {"Authorization": "Bearer ka"}
    bob = {"Authorization": "Bearer kb"}
    async with client() as http:
        refused = await http.post(chat, json=chat_body(chat_id, "hi"))
        assert refused.status_code == 401
        async with open_chunks(
            http, "POST", chat, json=chat_body(chat_id, SLOW_TOOL), headers=alice
        ) as stream:
            await stream.until(is_tool_input("sleep"))
            # bob cannot see, join or write alice's conversation: to him it is
            # a chat with no run (204, as one not created yet), not alice's run
            assert (await http.get(f"{chat}/{chat_id}/stream", headers=bob)).status_code == 204
            posted = await http.post(chat, json=chat_body(chat_id, "mine?"), headers=bob)
            assert posted.status_code == 404, posted.text
            async with open_chunks(
                http, "GET", f"{chat}/{chat_id}/stream", headers=alice
            ) as joined:
                assert (await joined.next()) == stream.chunks[0]
            await stream.rest()


@pytest.mark.anyio
async def test_on_disconnect_cancel_aborts_the_run(server: RunningServer) -> None:
    chat_id = new_chat_id()
    async with client() as http:
        async with open_chunks(
            http,
            "POST",
            f"{server.api}/vercel/chat?on_disconnect=cancel",
            json=chat_body(chat_id, SLOW_TOOL),
        ) as stream:
            await stream.until(is_tool_input("sleep"))
        log = await wait_idle(http, server, chat_id)
    assert log[-1]["event"] == "done"
    assert log[-1]["data"]["payload"]["stop_reason"] == "aborted"
