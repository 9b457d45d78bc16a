"""Fixtures: a loopback stub server per test and models pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from steerline.models.anthropic import AnthropicModel
from steerline.models.openai import OpenAIModel

from .stub import Stub, running_stub


@pytest.fixture
async def stub() -> AsyncIterator[Stub]:
    async with running_stub() as server:
        yield server


@pytest.fixture
async def openai_model(stub: Stub) -> AsyncIterator[OpenAIModel]:
    async with OpenAIModel("stub-model", api_key="sk-test", base_url=f"{stub.base_url}/v1") as m:
        yield m


@pytest.fixture
async def anthropic_model(stub: Stub) -> AsyncIterator[AnthropicModel]:
    async with AnthropicModel("claude-stub", api_key="sk-ant-test", base_url=stub.base_url) as m:
        yield m
