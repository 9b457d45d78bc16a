"""OpenAIModel against a loopback stub speaking the Chat Completions SSE format."""

from __future__ import annotations

import json

import pytest

from steerline import Agent, ImageContent, TextContent
from steerline.models.openai import OpenAIModel

from .recorder import Recorder
from .stub import OpenAIWire as W
from .stub import StreamReply, Stub
from .tools import add, lookup

pytestmark = pytest.mark.anyio


def two_interleaved_calls() -> list[bytes]:
    return [
        W.role(),
        W.reasoning("Let me "),
        W.reasoning("think.", field="reasoning"),
        W.text("I'll "),
        W.text("look."),
        W.call_start(0, "call_a", "lookup"),
        W.call_args(0, '{"ke'),
        W.call_start(1, "call_b", "add"),
        W.call_args(1, '{"a": 2,'),
        W.call_args(0, 'y": "x"}'),
        W.call_args(1, ' "b": 3}'),
        W.finish("tool_calls"),
        W.usage(21, 13),
        W.done,
    ]


async def test_text_reasoning_and_interleaved_tool_calls(
    stub: Stub, openai_model: OpenAIModel
) -> None:
    stub.push(StreamReply(two_interleaved_calls()), StreamReply(W.text_reply("Done", ".")))
    agent = Agent(model=openai_model, tools=[lookup, add], system_prompt="Be brief.")
    recorder = Recorder(agent)

    result = await agent.prompt("look x up and add 2 and 3")

    assert result.stop_reason == "completed"
    assert recorder.delta_kinds(0) == [
        "thinking_start",
        "thinking_delta",
        "thinking_end",
        "text_start",
        "text_delta",
        "text_end",
        "toolcall_start:2",
        "toolcall_delta:2",
        "toolcall_start:3",
        "toolcall_delta:3",
        "toolcall_delta:2",
        "toolcall_delta:3",
        "toolcall_end:2",
        "toolcall_end:3",
    ]
    first = recorder.of_type("turn_end")[0].message
    assert first.thinking == "Let me think."
    assert first.text == "I'll look."
    assert [(c.id, c.name, c.arguments) for c in first.tool_calls] == [
        ("call_a", "lookup", {"key": "x"}),
        ("call_b", "add", {"a": 2, "b": 3}),
    ]
    assert first.stop_reason == "tool_use"
    assert first.usage is not None
    assert (first.usage.input_tokens, first.usage.output_tokens) == (21, 13)
    assert first.model == "stub-model"
    ends = {e.tool_call_id: e for e in recorder.of_type("tool_execution_end")}
    assert ends["call_a"].result == "value-of-x" and not ends["call_a"].is_error
    assert ends["call_b"].result == "5" and not ends["call_b"].is_error
    final = recorder.of_type("turn_end")[-1].message
    assert final.text == "Done." and final.stop_reason == "stop"

    # What went over the wire.
    assert [r.path for r in stub.requests] == ["/v1/chat/completions"] * 2
    assert stub.requests[0].headers["authorization"] == "Bearer sk-test"
    assert stub.requests[0].headers.get("x-stainless-retry-count", "0") == "0"
    body = stub.requests[0].body
    assert body["model"] == "stub-model"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "look x up and add 2 and 3"},
    ]
    [lookup_spec] = [t for t in body["tools"] if t["function"]["name"] == "lookup"]
    assert lookup_spec["type"] == "function"
    assert lookup_spec["function"]["description"] == "Look a key up."
    assert lookup_spec["function"]["parameters"]["properties"]["key"]["type"] == "string"
    follow = stub.requests[1].body["messages"]
    assert follow[2] == {
        "role": "assistant",
        "content": "I'll look.",
        "tool_calls": [
            {
                "id": "call_a",
                "type": "function",
                "function": {"name": "lookup", "arguments": '{"key": "x"}'},
            },
            {
                "id": "call_b",
                "type": "function",
                "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'},
            },
        ],
    }
    assert follow[3:] == [
        {"role": "tool", "tool_call_id": "call_a", "content": "value-of-x"},
        {"role": "tool", "tool_call_id": "call_b", "content": "5"},
    ]


async def test_invalid_arguments_give_error_results_and_the_run_goes_on(
    stub: Stub, openai_model: OpenAIModel
) -> None:
    stub.push(
        StreamReply(
            [
                W.role(),
                W.call_start(0, "call_json", "add"),
                W.call_args(0, '{"a": 2, "b":'),
                W.call_start(1, "call_type", "add"),
                W.call_args(1, '{"a": "two", "b": 3}'),
                W.finish("tool_calls"),
                W.done,
            ]
        ),
        StreamReply(W.text_reply("Sorry.")),
    )
    agent = Agent(model=openai_model, tools=[add])
    recorder = Recorder(agent)

    result = await agent.prompt("add")

    assert result.stop_reason == "completed"
    ends = {e.tool_call_id: e for e in recorder.of_type("tool_execution_end")}
    assert ends["call_json"].is_error and "not valid JSON" in ends["call_json"].result
    assert ends["call_type"].is_error and "Invalid arguments for add" in ends["call_type"].result
    assert recorder.of_type("turn_end")[-1].message.text == "Sorry."
    tool_messages = [m for m in stub.requests[1].body["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_messages] == ["call_json", "call_type"]
    assert "not valid JSON" in tool_messages[0]["content"]
    # The malformed arguments are not sent back as if they were JSON.
    sent_calls = stub.requests[1].body["messages"][1]["tool_calls"]
    assert json.loads(sent_calls[0]["function"]["arguments"]) == {}


async def test_images_temperature_max_tokens_and_extra_options(stub: Stub) -> None:
    stub.push(StreamReply(W.text_reply("A cat.")))
    async with OpenAIModel(
        "vision-model",
        base_url=f"{stub.base_url}/v1",
        temperature=0.2,
        max_tokens=64,
        top_p=0.9,
        extra_body={"repetition_penalty": 1.1},
    ) as model:
        agent = Agent(model=model)
        await agent.prompt(
            [
                TextContent(text="What is this?"),
                ImageContent(data="aGVsbG8=", mime_type="image/png"),
            ]
        )
    body = stub.requests[0].body
    assert body["temperature"] == 0.2
    assert body["max_tokens"] == 64
    assert body["top_p"] == 0.9
    assert body["repetition_penalty"] == 1.1
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}},
    ]
    # A local server needs no key: a placeholder is sent.
    assert stub.requests[0].headers["authorization"].startswith("Bearer ")


async def test_servers_that_omit_tool_call_indices(stub: Stub, openai_model: OpenAIModel) -> None:
    """Some compatible servers send each call whole, without ``index``."""
    no_index = [
        W.role(),
        W.chunk(
            {
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "add", "arguments": '{"a": 1, "b": 1}'},
                    },
                    {
                        "id": "c2",
                        "type": "function",
                        "function": {"name": "add", "arguments": '{"a": 2, "b": 2}'},
                    },
                ]
            }
        ),
        W.finish("stop"),
        W.done,
    ]
    stub.push(StreamReply(no_index), StreamReply(W.text_reply("2 and 4")))
    agent = Agent(model=openai_model, tools=[add])
    recorder = Recorder(agent)

    await agent.prompt("add twice")

    ends = {e.tool_call_id: e.result for e in recorder.of_type("tool_execution_end")}
    assert ends == {"c1": "2", "c2": "4"}
    assert recorder.of_type("turn_end")[0].message.stop_reason == "tool_use"
