"""The ValueCell payloads of SPEC §3.2 that ValueCell's own UI reads (issue 9):
tool results as its server encodes them, failures with text to show and the
run's thread, and a new run that does not inherit the last run's thread."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from steerline.core.errors import ModelError
from steerline.core.events import ToolExecutionEnd
from steerline.log.base import ConversationRecord
from steerline.log.sqlite import SqliteEventLog
from steerline.models.scripted import ScriptedError, ScriptedModel
from steerline.runtime.agent import Agent
from steerline.server.settings import ServerSettings
from steerline.service.agents import AgentRegistry, AgentSpec
from steerline.service.service import ConversationService
from steerline.wire.envelope import EventName
from steerline.wire.payloads import Content, ThreadMetadata
from tests.server.clients import client, first, names, open_stream, payload, prompt
from tests.server.harness import RunningServer

pytestmark = pytest.mark.anyio


def failing_registry() -> AgentRegistry:
    def build() -> Agent:
        error = ModelError("the provider said no")
        return Agent(model=ScriptedModel([ScriptedError(error)]))

    return AgentRegistry([AgentSpec(name="failing", build=build)])


async def test_tool_results_are_encoded_as_valuecell_does(server: RunningServer) -> None:
    async with (
        client() as http,
        open_stream(
            http,
            "POST",
            f"{server.api}/agents/stream",
            json={"query": '/call calculator {"expression": "6*7"}\nhi'},
        ) as stream,
    ):
        events = await stream.rest()
    result = payload(first(events, "tool_call_completed"))["tool_result"]
    assert isinstance(result, str) and json.loads(result) == [{"content": "42"}]


async def test_a_failed_run_says_why_on_its_thread(make_server: object) -> None:
    server: RunningServer = make_server(  # type: ignore[operator]
        ServerSettings(store="memory://"), failing_registry()
    )
    async with (
        client() as http,
        open_stream(
            http,
            "POST",
            f"{server.api}/agents/stream",
            json={"query": "hello", "agent_name": "failing"},
        ) as stream,
    ):
        events = await stream.rest()
    thread = first(events, "thread_started")["data"]["thread_id"]
    failed = first(events, "task_failed")
    assert failed["data"]["thread_id"] == thread
    body = payload(failed)
    assert body["stop_reason"] == "error" and body["content"] and body["error"]
    assert "the provider said no" in body["content"]


async def test_a_later_run_does_not_carry_the_last_runs_thread(server: RunningServer) -> None:
    async with client() as http:
        first_run = await prompt(http, server, "one")
        cid = first_run[0]["data"]["conversation_id"]
        second_run = await prompt(http, server, "two", conversation_id=cid)
    assert names(second_run)[0] == "task_started"
    assert "thread_id" not in second_run[0]["data"]
    assert (
        first(second_run, "thread_started")["data"]["thread_id"]
        != (first(first_run, "thread_started")["data"]["thread_id"])
    )


async def test_recovery_fails_the_run_on_its_thread_with_text_to_show(tmp_path: Path) -> None:
    db = str(tmp_path / "r.db")
    async with ConversationService(SqliteEventLog(db)) as service:
        conv = await service.create("t")
        conv.translator.task_id = "run-lost"
        conv.translator.thread_id = "thread-lost"
        conv.translator.emit(
            EventName.THREAD_STARTED,
            "user",
            payload=Content(content="hi"),
            metadata=ThreadMetadata(delivery="prompt", message_id="m1"),
        )
        record: ConversationRecord = conv.record
        record.status, record.active_run_id, record.owner = "running", "run-lost", "dead"
        await service.log.update_conversation(record)
        record.status = "idle"
        cid = conv.id
    async with ConversationService(SqliteEventLog(db)) as restarted:
        events = [msgspec.json.decode(e.envelope) for e in await restarted.log.read(cid, 0)]
    system_failed, task_failed, done = events[-3:]
    assert system_failed["data"]["payload"]["content"]
    assert task_failed["data"]["thread_id"] == "thread-lost"
    assert task_failed["data"]["payload"]["stop_reason"] == "error"
    assert task_failed["data"]["payload"]["content"]
    assert done["data"]["payload"] == {"stop_reason": "error"}


def test_native_events_always_carry_their_named_fields() -> None:
    event = ToolExecutionEnd(tool_call_id="c1", tool_name="clock", result="12:00")
    encoded = msgspec.json.decode(msgspec.json.encode(event))
    assert encoded["is_error"] is False and encoded["skipped"] is False
