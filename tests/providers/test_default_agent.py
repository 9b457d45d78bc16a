"""``default_agent`` in steerline.toml is the agent a request without ``agent_name`` gets."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import anyio
import httpx2
import pytest

from steerline.config import config_from_dict
from steerline.server.settings import ServerSettings
from steerline.service.agents import AgentRegistry, AgentSpec, UnknownAgentError
from tests.server.harness import start_server

from .stub import OpenAIWire, StreamReply, Stub


def test_the_registry_knows_its_default() -> None:
    assert AgentRegistry().default == "demo"
    scribe = AgentSpec(name="scribe", build=AgentRegistry().get("demo").build)
    registry = AgentRegistry([scribe], default="scribe")
    assert registry.default == "scribe"
    assert registry.get(None).name == "scribe"
    with pytest.raises(UnknownAgentError, match="default agent 'ghost'"):
        AgentRegistry([scribe], default="ghost")


def test_the_config_registry_has_the_configured_default() -> None:
    data = {"default_agent": "scribe", "agents": {"scribe": {"system_prompt": "Write."}}}
    assert config_from_dict(data, env={}).registry().default == "scribe"
    env = {"STEERLINE_DEFAULT_AGENT": "demo"}
    assert config_from_dict(data, env=env).registry().default == "demo"


async def _stream(http: httpx2.AsyncClient, url: str, body: dict[str, Any]) -> list[Any]:
    events = []
    async with http.stream("POST", url, json=body) as response:
        assert response.status_code == 200, await response.aread()
        async for sse in httpx2.EventSource(response):
            if sse.data:
                events.append(json.loads(sse.data))
    return events


@pytest.mark.anyio
async def test_a_request_without_agent_name_runs_the_default_agent(stub: Stub) -> None:
    stub.push(StreamReply(OpenAIWire.text_reply("from the", " configured agent")))
    config = config_from_dict(
        {
            "default_agent": "local",
            "agents": {
                "local": {
                    "provider": "openai",
                    "model": "stub-model",
                    "base_url": f"{stub.base_url}/v1",
                    "description": "the configured one",
                }
            },
        },
        env={},
    )
    server = await anyio.to_thread.run_sync(
        lambda: start_server(ServerSettings(store="memory://"), registry=config.registry())
    )
    try:
        async with httpx2.AsyncClient(timeout=10) as http:
            events = await _stream(http, f"{server.api}/agents/stream", {"query": "hi"})
            listed = (await http.get(f"{server.api}/agents")).json()
            # an explicit agent_name still wins
            demo = await _stream(
                http, f"{server.api}/agents/stream", {"query": "hi", "agent_name": "demo"}
            )
    finally:
        # the model's HTTP client lives in the server's loop: close it there first
        assert server.loop is not None
        closing = asyncio.run_coroutine_threadsafe(config.aclose(), server.loop)
        await anyio.to_thread.run_sync(closing.result, 10)
        await anyio.to_thread.run_sync(server.stop)
    started = events[0]
    assert started["event"] == "conversation_started"
    assert started["data"]["agent_name"] == "local"
    text = "".join(e["data"]["payload"]["content"] for e in events if e["event"] == "message_chunk")
    assert text == "from the configured agent"
    assert [r.path for r in stub.requests] == ["/v1/chat/completions"]
    assert demo[0]["data"]["agent_name"] == "demo"
    # GET /agents says which agent that is
    assert listed["default"] == "local"
    assert {a["name"]: a["default"] for a in listed["agents"]} == {"demo": False, "local": True}
