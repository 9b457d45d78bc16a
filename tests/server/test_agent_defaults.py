"""A configured agent's modes and policy are the defaults of its new conversations."""

from __future__ import annotations

from collections.abc import Callable

import httpx2
import pytest

from steerline import Agent, DemoModel, demo_tools
from steerline.service.agents import AgentRegistry, AgentSpec
from tests.server.harness import RunningServer

pytestmark = pytest.mark.anyio


async def test_new_conversation_takes_the_agents_modes(
    make_server: Callable[..., RunningServer],
) -> None:
    spec = AgentSpec(
        name="eager",
        build=lambda: Agent(
            model=DemoModel(),
            tools=demo_tools(),
            steering_policy="immediate",
            steering_mode="all",
        ),
    )
    server = make_server(registry=AgentRegistry([spec]))
    async with httpx2.AsyncClient(timeout=10) as client:
        for agent_name, policy, mode in (
            ("eager", "immediate", "all"),
            ("demo", "after_tool", "one-at-a-time"),
        ):
            response = await client.post(
                f"{server.api}/agents/stream", json={"query": "hi", "agent_name": agent_name}
            )
            assert response.status_code == 200
            conversation_id = response.text.split('"conversation_id":"')[1].split('"')[0]
            status = (await client.get(f"{server.api}/conversations/{conversation_id}")).json()
            assert (status["steering_policy"], status["steering_mode"]) == (policy, mode)
