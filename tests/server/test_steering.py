"""Steering, follow-ups and busy-conversation modes, end to end (SPEC §2.4, §3.4).

The demo agent runs tools in parallel (cap 8), so its calls all start at
once; to have a call that has not started when the steer arrives, these
tests also register ``demo-seq``, the demo model with sequential tools.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest

from steerline.models.demo import DemoModel
from steerline.runtime.agent import Agent
from steerline.server.settings import ServerSettings
from steerline.service.agents import AgentRegistry, AgentSpec
from steerline.service.service import ServiceLimits
from steerline.tools.base import tool
from steerline.tools.builtin import demo_tools
from tests.server.clients import (
    Envelope,
    Stream,
    assert_contiguous,
    client,
    error_of,
    first,
    in_server,
    names,
    new_conversation,
    open_socket,
    open_stream,
    payload,
    read_log,
    result_text,
    text_of,
    wait_idle,
)
from tests.server.harness import RunningServer

pytestmark = pytest.mark.anyio

SLEEP_THEN_ECHO = '/call sleep {"seconds": %s}\n/call echo {"text": "x"}'
SKIPPED = "Skipped due to queued user message."
CANCELLED = "Cancelled due to queued user message."


def sequential_registry() -> AgentRegistry:
    return AgentRegistry(
        [
            AgentSpec(
                name="demo-seq",
                build=lambda: Agent(
                    model=DemoModel(), tools=demo_tools(), tool_execution="sequential"
                ),
                description="demo with sequential tools",
            )
        ]
    )


@pytest.fixture
def seq_server(make_server: Callable[..., RunningServer]) -> RunningServer:
    return make_server(ServerSettings(store="memory://"), sequential_registry())


class Gate:
    """A ``hold`` tool that runs until the test opens the gate: messages sent
    while it runs are queued whatever the machine's load (a ``sleep`` of a
    second ends before them when three requests take longer than that)."""

    def __init__(self) -> None:
        self.event = asyncio.Event()  # bound to the server's loop by its first wait

        @tool
        async def hold() -> str:
            """Wait until the test lets the run go on."""
            await self.event.wait()
            return "released"

        self.registry = AgentRegistry(
            [
                AgentSpec(
                    name="demo-gate",
                    build=lambda: Agent(model=DemoModel(), tools=[*demo_tools(), hold]),
                    description="demo with a tool the test releases",
                )
            ]
        )

    async def open(self, server: RunningServer) -> None:
        async def release() -> None:
            self.event.set()

        await in_server(server, release)


@dataclass
class Gated:
    server: RunningServer
    gate: Gate

    async def open(self) -> None:
        await self.gate.open(self.server)

    @contextlib.asynccontextmanager
    async def held(
        self, http: httpx2.AsyncClient, **body: Any
    ) -> AsyncIterator[tuple[Stream, str]]:
        """A run of ``HOLD`` (``body`` added to it) streaming, once it is in the
        hold tool: its stream and its conversation id."""
        url = f"{self.server.api}/agents/stream"
        async with open_stream(http, "POST", url, json={**HOLD, **body}) as running:
            await running.until(is_hold_started)
            yield running, running.events[0]["data"]["conversation_id"]


@pytest.fixture
def gated(make_server: Callable[..., RunningServer]) -> Gated:
    """A server whose ``demo-gate`` agent holds its run in ``/call hold {}``."""
    gate = Gate()
    return Gated(make_server(ServerSettings(store="memory://"), gate.registry), gate)


HOLD = {"query": "/call hold {}", "agent_name": "demo-gate"}


def is_hold_started(event: Envelope) -> bool:
    return bool(event["event"] == "tool_call_started" and payload(event)["tool_name"] == "hold")


def is_sleep_started(event: Envelope) -> bool:
    return bool(event["event"] == "tool_call_started" and payload(event)["tool_name"] == "sleep")


def tool_result(events: list[Envelope], tool_name: str) -> dict[str, object]:
    """The tool_call_completed payload, its ValueCell-encoded result decoded."""
    value = dict(payload(first(events, "tool_call_completed", tool_name=tool_name)))
    value["tool_result"] = result_text(value)
    return value


def after_steer(events: list[Envelope], content: str) -> list[Envelope]:
    """The events from the steer's thread_started on, checked to answer it."""
    thread = first(events, "thread_started", content=content)
    assert thread["data"]["metadata"]["delivery"] == "steer"
    rest = events[events.index(thread) :]
    assert text_of(rest) == f"Echo: {content}"
    assert all(e["data"].get("thread_id") == thread["data"]["thread_id"] for e in rest[:-2])
    return rest


async def test_steer_by_post_skips_unstarted_calls(seq_server: RunningServer) -> None:
    server = seq_server
    async with (
        client() as http,
        open_stream(
            http,
            "POST",
            f"{server.api}/agents/stream",
            json={"query": SLEEP_THEN_ECHO % 1, "agent_name": "demo-seq"},
        ) as stream,
    ):
        await stream.until(is_sleep_started)
        cid = stream.events[0]["data"]["conversation_id"]
        response = await http.post(
            f"{server.api}/conversations/{cid}/messages",
            json={"content": "change of plan", "mode": "steer", "id": "steer-1"},
        )
        assert response.status_code == 202, response.text
        body = response.json()
        assert body["message_id"] == "steer-1"
        assert body["queued"] is True and body["duplicate"] is False
        assert body["position"] == 0
        assert [m["id"] for m in body["queue"]["steering"]] == ["steer-1"]
        events = await stream.finish()
    assert_contiguous(events, 1)
    # after_tool: the running sleep finishes, the echo that had not started is skipped
    assert tool_result(events, "sleep")["tool_result"] == "slept 1s"
    assert tool_result(events, "sleep")["skipped"] is False
    echo = tool_result(events, "echo")
    assert echo["skipped"] is True and echo["is_error"] is True
    assert echo["tool_result"] == SKIPPED
    queued = first(events, "message_queued")
    assert payload(queued) == {"message_id": "steer-1", "delivery": "steer", "position": 0}
    rest = after_steer(events, "change of plan")
    assert rest[0]["data"]["metadata"]["message_id"] == "steer-1"
    assert names(rest)[-2:] == ["task_completed", "done"]
    assert names(events).count("task_started") == 1, "the steer joins the running task"
    assert names(events).count("done") == 1


async def test_steer_by_websocket_immediate_cancels_the_sleep(seq_server: RunningServer) -> None:
    server = seq_server
    async with client() as http:
        cid = await new_conversation(http, server, agent_name="demo-seq")
        patched = await http.patch(
            f"{server.api}/conversations/{cid}", json={"steering_policy": "immediate"}
        )
        assert patched.status_code == 200 and patched.json()["steering_policy"] == "immediate"
    async with open_socket(server, cid) as socket:
        began = time.monotonic()
        ack = await socket.request(
            {"type": "prompt", "request_id": "p", "content": SLEEP_THEN_ECHO % 30}
        )
        assert ack["type"] == "ack", ack
        await socket.until(is_sleep_started)
        ack = await socket.request(
            {"type": "steer", "request_id": "s", "content": "stop sleeping", "id": "s-1"}
        )
        # SPEC §2.9: the acknowledgement names its lane, position and the run
        # that takes it (the active one), even for an interrupt taken at once
        assert {k: ack[k] for k in ("type", "request_id", "message_id", "duplicate")} == {
            "type": "ack",
            "request_id": "s",
            "message_id": "s-1",
            "duplicate": False,
        }
        assert ack["queued"] is True and ack["lane"] == "steering" and ack["position"] == 0
        assert ack["run_id"] == socket.events[0]["data"]["task_id"]
        await socket.until("done")
        events = socket.events
    assert time.monotonic() - began < 15, "the 30 s sleep was cancelled"
    sleep = tool_result(events, "sleep")
    assert sleep["tool_result"] == CANCELLED
    assert sleep["is_error"] is True and sleep["skipped"] is False
    assert tool_result(events, "echo")["tool_result"] == SKIPPED
    after_steer(events, "stop sleeping")
    assert payload(events[-1]) == {"stop_reason": "completed"}


async def test_steer_after_tool_skips_calls_behind_the_parallel_cap(server: RunningServer) -> None:
    """Default demo agent: 8 sleeps fill the cap, the 9th call waits and is skipped."""
    # 3 s leaves the steer time to arrive on a loaded machine, before the sleeps end
    query = "\n".join(['/call sleep {"seconds": 3}'] * 8 + ['/call echo {"text": "late"}'])
    async with (
        client() as http,
        open_stream(http, "POST", f"{server.api}/agents/stream", json={"query": query}) as stream,
    ):
        for _ in range(8):  # all of them: a steer before a sleep starts skips that sleep
            await stream.until(is_sleep_started)
        cid = stream.events[0]["data"]["conversation_id"]
        response = await http.post(
            f"{server.api}/conversations/{cid}/messages",
            json={"content": "enough", "mode": "steer"},
        )
        assert response.status_code == 202
        events = await stream.finish()
    completed = [payload(e) for e in events if e["event"] == "tool_call_completed"]
    assert [result_text(c) for c in completed if c["tool_name"] == "sleep"] == ["slept 3s"] * 8
    assert tool_result(events, "echo")["skipped"] is True
    after_steer(events, "enough")


async def test_interrupt_mode_on_agents_stream(seq_server: RunningServer) -> None:
    """``mode=interrupt``: a steer with the immediate policy, for this message only."""
    server = seq_server
    async with client() as http:
        cid = await new_conversation(http, server, agent_name="demo-seq")
        async with open_stream(
            http,
            "POST",
            f"{server.api}/agents/stream",
            json={"query": SLEEP_THEN_ECHO % 30, "conversation_id": cid},
        ) as first_stream:
            await first_stream.until(is_sleep_started)
            async with open_stream(
                http,
                "POST",
                f"{server.api}/agents/stream",
                json={"query": "now", "conversation_id": cid, "mode": "interrupt"},
            ) as second:
                events = await second.rest()
            await first_stream.rest()
        status = (await http.get(f"{server.api}/conversations/{cid}")).json()
    assert names(events)[0] == "message_queued"
    assert payload(events[0])["delivery"] == "steer"
    assert_contiguous(events)
    assert tool_result(events, "sleep")["tool_result"] == CANCELLED
    assert tool_result(events, "echo")["skipped"] is True
    after_steer(events, "now")
    assert status["steering_policy"] == "after_tool", "interrupt does not change the policy"


async def test_follow_up_on_busy_conversation_waits_for_the_run(gated: Gated) -> None:
    server = gated.server
    async with client() as http, gated.held(http) as (running, cid):
        async with open_stream(
            http,
            "POST",
            f"{server.api}/agents/stream",
            json={
                "query": "afterwards",
                "conversation_id": cid,
                "mode": "follow_up",
                "message_id": "fu-1",
            },
        ) as follow:
            await follow.until("message_queued")
            await gated.open()  # the tool ends with the follow-up queued
            await follow.rest()
            events = follow.events
        first_events = await running.finish()
    assert names(events)[0] == "message_queued"
    assert payload(events[0]) == {"message_id": "fu-1", "delivery": "follow_up", "position": 0}
    assert_contiguous(events)
    # the run finishes its tool work first, then takes the follow-up in the same task
    hold_done = first(events, "tool_call_completed", tool_name="hold")
    thread = first(events, "thread_started", content="afterwards")
    assert hold_done["seq"] < thread["seq"]
    assert thread["data"]["metadata"] == {"delivery": "follow_up", "message_id": "fu-1"}
    assert "Results: hold=released" in text_of(events)
    assert text_of(events).endswith("Echo: afterwards")
    assert names(events).count("task_started") == 0
    assert payload(events[-1]) == {"stop_reason": "completed"}
    # the first stream also ended at that same done
    assert first_events[-1] == events[-1]


async def test_auto_mode_on_busy_conversation_is_a_follow_up(gated: Gated) -> None:
    server = gated.server
    async with client() as http, gated.held(http) as (running, cid):
        async with open_stream(
            http,
            "POST",
            f"{server.api}/agents/stream",
            json={"query": "next", "conversation_id": cid},
        ) as auto:
            await auto.until("message_queued")
            await gated.open()
            await auto.rest()
            events = auto.events
        await running.rest()
    assert names(events)[0] == "message_queued"
    assert payload(events[0])["delivery"] == "follow_up"
    assert first(events, "thread_started", content="next")["data"]["metadata"]["delivery"] == (
        "follow_up"
    )


async def test_reject_mode(gated: Gated) -> None:
    server = gated.server
    async with client() as http:
        # on an idle conversation, reject starts a run like any prompt
        async with open_stream(
            http,
            "POST",
            f"{server.api}/agents/stream",
            json={"query": "idle", "mode": "reject", "agent_name": "demo-gate"},
        ) as stream:
            events = await stream.rest()
        cid = events[0]["data"]["conversation_id"]
        assert payload(events[-1])["stop_reason"] == "completed"
        async with gated.held(http, conversation_id=cid) as (running, _):
            response = await http.post(
                f"{server.api}/agents/stream",
                json={"query": "busy?", "conversation_id": cid, "mode": "reject"},
            )
            error_of(response, 409, "conversation_busy")
            await gated.open()
            await running.rest()
        log = await read_log(http, server, cid)
    assert "busy?" not in [payload(e).get("content") for e in log], "nothing was queued"


@pytest.mark.parametrize("mode", ["steer", "follow_up"])
async def test_steer_or_follow_up_on_idle_conversation_is_the_prompt(
    server: RunningServer, mode: str
) -> None:
    async with client() as http:
        cid = await new_conversation(http, server)
        async with open_stream(
            http,
            "POST",
            f"{server.api}/agents/stream",
            json={"query": "go", "conversation_id": cid, "mode": mode},
        ) as stream:
            events = await stream.rest()
    assert names(events)[0] == "task_started"
    assert first(events, "thread_started")["data"]["metadata"]["delivery"] == "prompt"
    assert text_of(events) == "Echo: go"


async def test_follow_up_by_post_while_busy_and_steer_served_first(
    make_server: Callable[..., RunningServer],
) -> None:
    """Queued follow-ups wait; a later steer is still served before them (SPEC §2.2)."""
    gate = Gate()
    server = make_server(ServerSettings(store="memory://"), gate.registry)
    async with (
        client() as http,
        open_stream(
            http,
            "POST",
            f"{server.api}/agents/stream",
            json={"query": "/call hold {}", "agent_name": "demo-gate"},
        ) as stream,
    ):
        await stream.until(
            lambda e: e["event"] == "tool_call_started" and payload(e)["tool_name"] == "hold"
        )
        cid = stream.events[0]["data"]["conversation_id"]
        url = f"{server.api}/conversations/{cid}/messages"
        follow = await http.post(url, json={"content": "second", "mode": "follow_up"})
        assert follow.status_code == 202
        assert follow.json()["queued"] is True
        # the run that will take it: the active one (SPEC §2.9); it starts nothing new
        assert follow.json()["run_id"] == first(stream.events, "task_started")["data"]["task_id"]
        assert follow.json()["lane"] == "follow_up" and follow.json()["position"] == 0
        status = (await http.get(f"{server.api}/conversations/{cid}")).json()
        assert status["status"] == "running"
        assert [m["id"] for m in status["queue"]["follow_up"]] == [follow.json()["message_id"]]
        steer = await http.post(url, json={"content": "first", "mode": "steer"})
        assert steer.status_code == 202
        assert steer.json()["queued"] is True
        await gate.open(server)  # the tool ends with both messages queued
        events = await stream.finish()
    threads = [e for e in events if e["event"] == "thread_started"]
    assert [(payload(t)["content"], t["data"]["metadata"]["delivery"]) for t in threads] == [
        ("/call hold {}", "prompt"),
        ("first", "steer"),
        ("second", "follow_up"),
    ]
    assert text_of(events).endswith("Echo: firstEcho: second")
    assert names(events).count("done") == 1


async def test_duplicate_message_id_queues_nothing(gated: Gated) -> None:
    server = gated.server
    async with client() as http, gated.held(http) as (stream, cid):
        url = f"{server.api}/conversations/{cid}/messages"
        one = await http.post(url, json={"content": "once", "id": "same"})
        two = await http.post(url, json={"content": "once", "id": "same"})
        await gated.open()
        again = await http.post(
            f"{server.api}/agents/stream",
            json={"query": "once", "conversation_id": cid, "message_id": "same"},
        )
        events = await stream.finish()
    assert one.json()["duplicate"] is False
    assert two.status_code == 202 and two.json()["duplicate"] is True
    # a repeated message_id answers the same stream again (SPEC §3.4), queues nothing
    assert again.status_code == 200
    replay = [json.loads(line[6:]) for line in again.text.splitlines() if line.startswith("data: ")]
    assert replay[0]["event"] == "message_queued"
    assert payload(replay[0])["message_id"] == "same"
    assert replay[-1]["event"] == "done"
    assert replay == [e for e in events if e["seq"] >= replay[0]["seq"]][: len(replay)]
    assert [payload(e).get("content") for e in events].count("once") == 1


async def test_post_message_on_idle_conversation_auto_continues(server: RunningServer) -> None:
    async with client() as http:
        cid = await new_conversation(http, server)
        response = await http.post(
            f"{server.api}/conversations/{cid}/messages", json={"content": "wake up"}
        )
        assert response.status_code == 202
        assert response.json()["run_id"].startswith("run-")
        assert response.json()["queued"] is False
        events = await wait_idle(http, server, cid)
    assert first(events, "thread_started", content="wake up")
    assert names(events)[-1] == "done"


async def test_without_auto_continue_a_message_waits(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(
        ServerSettings(store="memory://", service=ServiceLimits(auto_continue=False))
    )
    async with client() as http:
        cid = await new_conversation(http, server)
        response = await http.post(
            f"{server.api}/conversations/{cid}/messages", json={"content": "later"}
        )
        assert response.status_code == 202
        assert response.json()["run_id"] is None and response.json()["queued"] is True
        status = (await http.get(f"{server.api}/conversations/{cid}")).json()
        assert status["status"] == "idle"
        assert [m["content"] for m in status["queue"]["follow_up"]] == [
            [{"type": "text", "text": "later"}]
        ]
        # the next prompt takes it as a follow-up in the same run
        async with open_stream(
            http,
            "POST",
            f"{server.api}/agents/stream",
            json={"query": "now", "conversation_id": cid},
        ) as stream:
            events = await stream.rest()
    assert text_of(events) == "Echo: nowEcho: later"


async def test_abort_keeps_the_queue_and_starts_nothing(server: RunningServer) -> None:
    async with client() as http:
        async with open_stream(
            http,
            "POST",
            f"{server.api}/agents/stream",
            json={"query": '/call sleep {"seconds": 30}'},
        ) as stream:
            await stream.until(is_sleep_started)
            cid = stream.events[0]["data"]["conversation_id"]
            queued = await http.post(
                f"{server.api}/conversations/{cid}/messages",
                json={"content": "keep me", "id": "kept"},
            )
            assert queued.json()["queued"] is True
            response = await http.post(f"{server.api}/conversations/{cid}/abort")
            assert response.status_code == 200
            assert response.json()["removed"] == [] and response.json()["conversation_id"] == cid
            events = await stream.finish()
        assert names(events)[-2:] == ["task_cancelled", "done"]
        assert payload(events[-1]) == {"stop_reason": "aborted"}
        assert first(events, "tool_call_completed")["data"]["payload"]["is_error"] is True
        status = (await http.get(f"{server.api}/conversations/{cid}")).json()
        assert status["status"] == "idle"
        assert [m["id"] for m in status["queue"]["follow_up"]] == ["kept"]
        log = await read_log(http, server, cid)
        assert log[-1] == events[-1], "nothing started after the abort"
        # abort with clear_queues returns (and removes) what was queued
        cleared = await http.post(
            f"{server.api}/conversations/{cid}/abort", json={"clear_queues": True}
        )
        assert [m["id"] for m in cleared.json()["removed"]] == ["kept"]
        status = (await http.get(f"{server.api}/conversations/{cid}")).json()
        assert status["queue"] == {"steering": [], "follow_up": []}


async def test_websocket_control_frames(server: RunningServer) -> None:
    """follow_up, clear_queue, set_modes and abort frames, each acknowledged."""
    async with client() as http:
        cid = await new_conversation(http, server)
        async with open_socket(server, cid) as socket:
            ack = await socket.request(
                {"type": "prompt", "request_id": "p", "content": '/call sleep {"seconds": 30}'}
            )
            assert ack["type"] == "ack"
            await socket.until(is_sleep_started)
            for i in range(2):
                frame = {
                    "type": "follow_up",
                    "request_id": f"f{i}",
                    "content": "later",
                    "id": f"f{i}",
                }
                ack = await socket.request(frame)
                assert ack["queued"] is True and ack["message_id"] == f"f{i}"
            ack = await socket.request(
                {"type": "steer", "request_id": "s", "content": "steer me", "id": "s0"}
            )
            assert ack["queued"] is True
            cleared = await socket.request(
                {"type": "clear_queue", "request_id": "c", "lane": "follow_up"}
            )
            assert [m["id"] for m in cleared["removed"]] == ["f0", "f1"]
            ack = await socket.request(
                {"type": "set_modes", "request_id": "m", "steering_policy": "after_turn"}
            )
            assert ack["type"] == "ack" and ack["steering_policy"] == "after_turn"
            aborted = await socket.request({"type": "abort", "request_id": "a"})
            assert aborted["type"] == "ack" and aborted["removed"] == []
            events = await socket.until("done")
        status = (await http.get(f"{server.api}/conversations/{cid}")).json()
    assert names(events)[-2:] == ["task_cancelled", "done"]
    assert payload(events[-1]) == {"stop_reason": "aborted"}
    # the queued steer is kept by the abort and consumed by nothing
    assert [m["id"] for m in status["queue"]["steering"]] == ["s0"]
    assert status["queue"]["follow_up"] == []
    assert status["steering_policy"] == "after_turn"
    updates = [payload(e) for e in socket.events if e["event"] == "queue_updated"]
    assert [m["id"] for m in updates[-1]["steering"]] == ["s0"]
