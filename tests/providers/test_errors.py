"""Provider errors: what is retried (and how patiently), what ends the run cleanly."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import pytest

from steerline import Agent, Model, RetryPolicy
from steerline.models.anthropic import AnthropicModel
from steerline.models.openai import OpenAIModel

from .recorder import Recorder
from .stub import AnthropicWire, JSONReply, OpenAIWire, StreamReply, Stub, sse

pytestmark = pytest.mark.anyio

NO_BACKOFF = RetryPolicy(base_delay=0, jitter=0)


@dataclass
class Flavor:
    name: str
    reply: Callable[[str], list[bytes]]
    partial: list[bytes]
    """The first frames of a reply that never finishes."""
    error: Callable[[str, str], dict[str, Any]]
    make: Callable[[str], Model]


FLAVORS = [
    Flavor(
        "openai",
        lambda text: OpenAIWire.text_reply(text),
        [OpenAIWire.role(), OpenAIWire.text("Hel")],
        OpenAIWire.error,
        lambda url: OpenAIModel("stub-model", api_key="k", base_url=f"{url}/v1"),
    ),
    Flavor(
        "anthropic",
        lambda text: AnthropicWire.text_reply(text),
        [AnthropicWire.message_start(), AnthropicWire.text_start(0), AnthropicWire.text(0, "Hel")],
        AnthropicWire.error,
        lambda url: AnthropicModel("claude-stub", api_key="k", base_url=url),
    ),
]


@pytest.fixture(params=FLAVORS, ids=lambda f: f.name)
def flavor(request: pytest.FixtureRequest) -> Flavor:
    return request.param  # type: ignore[no-any-return]


async def run(agent: Agent, text: str = "hi") -> Any:
    with anyio.fail_after(10):  # never hangs
        return await agent.prompt(text)


async def close(model: Model) -> None:
    await model.aclose()  # type: ignore[attr-defined]


async def test_429_with_retry_after_then_success(stub: Stub, flavor: Flavor) -> None:
    stub.push(
        JSONReply(
            429, flavor.error("Rate limit reached", "rate_limit_error"), {"retry-after": "0.1"}
        ),
        StreamReply(flavor.reply("Fine.")),
    )
    model = flavor.make(stub.base_url)
    try:
        agent = Agent(model=model, retry=NO_BACKOFF)
        recorder = Recorder(agent)
        result = await run(agent)
    finally:
        await close(model)
    assert result.stop_reason == "completed"
    assert len(stub.requests) == 2  # the SDK did not retry by itself
    assert stub.requests[1].at - stub.requests[0].at >= 0.1 - 0.005  # Retry-After honoured
    failed, succeeded = (e.message for e in recorder.of_type("message_end")[1:3])
    assert failed.stop_reason == "error" and "Rate limit reached" in failed.error_message
    assert "retrying" in failed.error_message
    assert succeeded.text == "Fine." and succeeded.stop_reason == "stop"
    assert [m.role for m in agent.messages] == ["user", "assistant"]  # no failed attempt kept
    assert len(recorder.of_type("turn_end")) == 1


@pytest.mark.parametrize("status", [500, 503, 529])
async def test_server_errors_are_retried(stub: Stub, flavor: Flavor, status: int) -> None:
    stub.push(
        JSONReply(status, flavor.error("Overloaded", "overloaded_error")),
        StreamReply(flavor.reply("Back.")),
    )
    model = flavor.make(stub.base_url)
    try:
        result = await run(Agent(model=model, retry=NO_BACKOFF))
    finally:
        await close(model)
    assert result.stop_reason == "completed"
    assert len(stub.requests) == 2


@pytest.mark.parametrize("status", [400, 401, 404])
async def test_client_errors_end_the_run_cleanly(stub: Stub, flavor: Flavor, status: int) -> None:
    message = f"model 'nope' is not available (status {status})"
    stub.push(JSONReply(status, flavor.error(message, "invalid_request_error")))
    model = flavor.make(stub.base_url)
    try:
        agent = Agent(model=model, retry=NO_BACKOFF)
        recorder = Recorder(agent)
        result = await run(agent)
    finally:
        await close(model)
    assert result.stop_reason == "error"
    assert message in result.error_message  # the provider's message is kept
    assert str(status) in result.error_message
    assert len(stub.requests) == 1  # not retried
    [end] = recorder.of_type("agent_end")
    assert end.stop_reason == "error"
    assert recorder.of_type("turn_end")[0].message.stop_reason == "error"


async def test_a_stream_cut_mid_way_is_retried(stub: Stub, flavor: Flavor) -> None:
    stub.push(StreamReply(flavor.partial, cut=True), StreamReply(flavor.reply("Whole.")))
    model = flavor.make(stub.base_url)
    try:
        agent = Agent(model=model, retry=NO_BACKOFF)
        recorder = Recorder(agent)
        result = await run(agent)
    finally:
        await close(model)
    assert result.stop_reason == "completed"
    assert len(stub.requests) == 2
    cut = recorder.of_type("message_end")[1].message
    assert cut.stop_reason == "error" and cut.text == "Hel"
    assert recorder.of_type("turn_end")[0].message.text == "Whole."


async def test_a_stream_that_ends_early_is_retried(stub: Stub, flavor: Flavor) -> None:
    """The body ends cleanly but without the end-of-reply marker."""
    stub.push(StreamReply(flavor.partial), StreamReply(flavor.reply("Whole.")))
    model = flavor.make(stub.base_url)
    try:
        agent = Agent(model=model, retry=NO_BACKOFF)
        recorder = Recorder(agent)
        result = await run(agent)
    finally:
        await close(model)
    assert result.stop_reason == "completed"
    assert (
        "before the reply was complete" in recorder.of_type("message_end")[1].message.error_message
    )
    assert recorder.of_type("turn_end")[0].message.text == "Whole."


async def test_a_cut_without_retries_left_ends_with_an_error(stub: Stub, flavor: Flavor) -> None:
    stub.push(StreamReply(flavor.partial, cut=True))
    model = flavor.make(stub.base_url)
    try:
        agent = Agent(model=model, retry=RetryPolicy(max_retries=0))
        result = await run(agent)
    finally:
        await close(model)
    assert result.stop_reason == "error"
    assert result.error_message
    reply = agent.messages[-1]
    assert reply.stop_reason == "error" and reply.text == "Hel"  # partial text kept


async def test_unreachable_endpoint_is_transient_then_fails(flavor: Flavor) -> None:
    with socket.socket() as sock:  # a loopback port with nobody listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    model = flavor.make(f"http://127.0.0.1:{port}")
    try:
        agent = Agent(model=model, retry=RetryPolicy(max_retries=1, base_delay=0, jitter=0))
        recorder = Recorder(agent)
        result = await run(agent)
    finally:
        await close(model)
    assert result.stop_reason == "error"
    attempts = [e.message for e in recorder.of_type("message_end") if e.message.role == "assistant"]
    assert len(attempts) == 2  # one retry, then the error
    assert "connection" in result.error_message.lower()


async def test_anthropic_error_event_mid_stream_is_retried(stub: Stub) -> None:
    W = AnthropicWire
    overloaded = W.error("Overloaded", "overloaded_error")
    stub.push(
        StreamReply(
            [W.message_start(), W.text_start(0), W.text(0, "Hel"), sse(overloaded, "error")]
        ),
        StreamReply(W.text_reply("Whole.")),
    )
    async with AnthropicModel("claude-stub", api_key="k", base_url=stub.base_url) as model:
        agent = Agent(model=model, retry=NO_BACKOFF)
        recorder = Recorder(agent)
        result = await run(agent)
    assert result.stop_reason == "completed"
    failed = recorder.of_type("message_end")[1].message
    assert "overloaded_error" in failed.error_message and "Overloaded" in failed.error_message


async def test_openai_error_object_mid_stream_ends_cleanly(stub: Stub) -> None:
    W = OpenAIWire
    stub.push(
        StreamReply(
            [
                W.role(),
                W.text("Hel"),
                sse(W.error("context length exceeded", "invalid_request_error")),
            ]
        )
    )
    async with OpenAIModel("stub-model", api_key="k", base_url=f"{stub.base_url}/v1") as model:
        result = await run(Agent(model=model, retry=NO_BACKOFF))
    assert result.stop_reason == "error"
    assert "context length exceeded" in result.error_message
    assert len(stub.requests) == 1
