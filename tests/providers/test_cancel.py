"""Abort and an ``immediate`` steer close the provider's HTTP stream at once.

The stub streams forever, a frame every 20 ms; it records how many frames it
had sent when the client went away: at most ``FRAMES_AFTER_CLOSE`` after
``abort()`` / ``steer()`` (100 ms of its pace). Counted in frames, not on the
clock: the stub shares the test's event loop, so a loaded machine that does
not schedule the process for a while delays the frames as much as the close.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import anyio
import pytest

from steerline import Agent, Model
from steerline.models.anthropic import AnthropicModel
from steerline.models.openai import OpenAIModel

from .recorder import Recorder, is_text_delta
from .stub import AnthropicWire, OpenAIWire, StreamReply, Stub

pytestmark = pytest.mark.anyio

FRAMES_AFTER_CLOSE = 5


@dataclass
class Flavor:
    name: str
    endless: Callable[[], StreamReply]
    reply: Callable[[str], list[bytes]]
    make: Callable[[str], Model]


def openai_endless() -> StreamReply:
    W = OpenAIWire
    return StreamReply(
        [W.role(), W.text("Hello")], forever=lambda n: W.text(f" tok{n}"), interval=0.02
    )


def anthropic_endless() -> StreamReply:
    W = AnthropicWire
    return StreamReply(
        [W.message_start(), W.text_start(0), W.text(0, "Hello")],
        forever=lambda n: W.ping() if n % 5 == 4 else W.text(0, f" tok{n}"),
        interval=0.02,
    )


FLAVORS = [
    Flavor(
        "openai",
        openai_endless,
        lambda text: OpenAIWire.text_reply(text),
        lambda url: OpenAIModel("stub-model", api_key="k", base_url=f"{url}/v1"),
    ),
    Flavor(
        "anthropic",
        anthropic_endless,
        lambda text: AnthropicWire.text_reply(text),
        lambda url: AnthropicModel("claude-stub", api_key="k", base_url=url),
    ),
]


@pytest.fixture(params=FLAVORS, ids=lambda f: f.name)
def flavor(request: pytest.FixtureRequest) -> Flavor:
    return request.param  # type: ignore[no-any-return]


async def _close(model: Model) -> None:
    aclose = getattr(model, "aclose", None)
    if aclose is not None:
        await aclose()


async def test_abort_closes_the_stream(stub: Stub, flavor: Flavor) -> None:
    stub.push(flavor.endless())
    model = flavor.make(stub.base_url)
    try:
        agent = Agent(model=model)
        recorder = Recorder(agent)
        async with anyio.create_task_group() as tg:
            tg.start_soon(agent.prompt, "talk forever")
            await recorder.wait_for(is_text_delta)
            with anyio.fail_after(5):
                await stub.streaming.wait()
            sent = stub.frames_sent
            agent.abort()
            with anyio.fail_after(2):
                await stub.disconnected.wait()
                await agent.wait_for_idle()
        assert stub.frames_at_disconnect is not None
        assert stub.frames_at_disconnect - sent <= FRAMES_AFTER_CLOSE
        [end] = recorder.of_type("agent_end")
        assert end.stop_reason == "aborted"
        message = recorder.of_type("turn_end")[0].message
        assert message.stop_reason == "aborted"
        assert message.text.startswith("Hello")  # the partial text is kept
        assert len(stub.requests) == 1
    finally:
        await _close(model)


async def test_immediate_steer_closes_the_stream_and_the_run_goes_on(
    stub: Stub, flavor: Flavor
) -> None:
    stub.push(flavor.endless(), StreamReply(flavor.reply("Changing course.")))
    model = flavor.make(stub.base_url)
    try:
        agent = Agent(model=model, steering_policy="immediate")
        recorder = Recorder(agent)
        async with anyio.create_task_group() as tg:
            tg.start_soon(agent.prompt, "talk forever")
            await recorder.wait_for(is_text_delta)
            with anyio.fail_after(5):
                await stub.streaming.wait()
            sent = stub.frames_sent
            agent.steer("stop and answer briefly")
            with anyio.fail_after(2):
                await stub.disconnected.wait()
            with anyio.fail_after(5):
                await agent.wait_for_idle()
        assert stub.frames_at_disconnect is not None
        assert stub.frames_at_disconnect - sent <= FRAMES_AFTER_CLOSE
        [end] = recorder.of_type("agent_end")
        assert end.stop_reason == "completed"
        first, second = (e.message for e in recorder.of_type("turn_end"))
        assert first.stop_reason == "steered" and first.text.startswith("Hello")
        assert second.text == "Changing course."
        # The next request carries the partial reply and the steering message.
        messages = stub.requests[1].body["messages"]
        assert "stop and answer briefly" in str(messages[-1]["content"])
        assert "Hello" in str(messages[-2]["content"])
    finally:
        await _close(model)
