"""AnthropicModel against a loopback stub speaking the Messages API's named SSE events."""

from __future__ import annotations

import msgspec
import pytest

from steerline import Agent, ImageContent, TextContent
from steerline.core.messages import Message, ThinkingContent
from steerline.models.anthropic import AnthropicModel, to_anthropic_messages

from .recorder import Recorder
from .stub import AnthropicWire as W
from .stub import StreamReply, Stub
from .tools import add, lookup

pytestmark = pytest.mark.anyio


def thinking_text_and_two_interleaved_calls() -> list[bytes]:
    return [
        W.message_start(input_tokens=30),
        W.thinking_start(0),
        W.ping(),
        W.thinking(0, "Let me "),
        W.thinking(0, "think."),
        W.signature(0, "sig-abc"),
        W.block_stop(0),
        W.text_start(1),
        W.text(1, "I'll "),
        W.text(1, "look."),
        W.block_stop(1),
        W.tool_start(2, "toolu_a", "lookup"),
        W.tool_start(3, "toolu_b", "add"),
        W.tool_args(2, '{"ke'),
        W.tool_args(3, '{"a": 2,'),
        W.tool_args(2, 'y": "x"}'),
        W.tool_args(3, ' "b": 3}'),
        W.block_stop(2),
        W.block_stop(3),
        W.message_delta("tool_use", output_tokens=42),
        W.message_stop(),
    ]


async def test_thinking_text_and_interleaved_tool_calls(
    stub: Stub, anthropic_model: AnthropicModel
) -> None:
    stub.push(
        StreamReply(thinking_text_and_two_interleaved_calls()),
        StreamReply(W.text_reply("Done", ".")),
    )
    agent = Agent(model=anthropic_model, tools=[lookup, add], system_prompt="Be brief.")
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
        "toolcall_start:3",
        "toolcall_delta:2",
        "toolcall_delta:3",
        "toolcall_delta:2",
        "toolcall_delta:3",
        "toolcall_end:2",
        "toolcall_end:3",
    ]
    first = recorder.of_type("turn_end")[0].message
    assert first.thinking == "Let me think."
    # the signature is part of the message, so it survives a reload of the context
    assert first.content[0] == ThinkingContent(thinking="Let me think.", signature="sig-abc")
    assert to_anthropic_messages(
        msgspec.json.decode(msgspec.json.encode([first]), type=list[Message])
    ) == [
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Let me think.", "signature": "sig-abc"},
                {"type": "text", "text": "I'll look."},
                {"type": "tool_use", "id": "toolu_a", "name": "lookup", "input": {"key": "x"}},
                {"type": "tool_use", "id": "toolu_b", "name": "add", "input": {"a": 2, "b": 3}},
            ],
        }
    ]
    assert first.text == "I'll look."
    assert [(c.id, c.name, c.arguments) for c in first.tool_calls] == [
        ("toolu_a", "lookup", {"key": "x"}),
        ("toolu_b", "add", {"a": 2, "b": 3}),
    ]
    assert first.stop_reason == "tool_use"
    assert first.usage is not None
    assert (first.usage.input_tokens, first.usage.output_tokens) == (30, 42)
    ends = {e.tool_call_id: e for e in recorder.of_type("tool_execution_end")}
    assert ends["toolu_a"].result == "value-of-x" and not ends["toolu_a"].is_error
    assert ends["toolu_b"].result == "5" and not ends["toolu_b"].is_error
    final = recorder.of_type("turn_end")[-1].message
    assert final.text == "Done." and final.stop_reason == "stop"

    assert [r.path for r in stub.requests] == ["/v1/messages"] * 2
    headers = stub.requests[0].headers
    # The SDK sends the key as x-api-key or as a bearer token, by version.
    sent_key = headers.get("x-api-key") or headers["authorization"].removeprefix("Bearer ")
    assert sent_key == "sk-ant-test"
    assert "anthropic-version" in headers
    body = stub.requests[0].body
    assert body["model"] == "claude-stub"
    assert body["stream"] is True
    assert body["system"] == "Be brief."
    assert body["max_tokens"] > 0
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "look x up and add 2 and 3"}]}
    ]
    [lookup_spec] = [t for t in body["tools"] if t["name"] == "lookup"]
    assert lookup_spec["input_schema"]["properties"]["key"]["type"] == "string"
    follow = stub.requests[1].body["messages"]
    assert follow[1] == {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "Let me think.", "signature": "sig-abc"},
            {"type": "text", "text": "I'll look."},
            {"type": "tool_use", "id": "toolu_a", "name": "lookup", "input": {"key": "x"}},
            {"type": "tool_use", "id": "toolu_b", "name": "add", "input": {"a": 2, "b": 3}},
        ],
    }
    assert follow[2] == {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "toolu_a",
                "content": [{"type": "text", "text": "value-of-x"}],
            },
            {
                "type": "tool_result",
                "tool_use_id": "toolu_b",
                "content": [{"type": "text", "text": "5"}],
            },
        ],
    }
    assert len(follow) == 3


async def test_invalid_arguments_give_error_results_and_the_run_goes_on(
    stub: Stub, anthropic_model: AnthropicModel
) -> None:
    stub.push(
        StreamReply(
            [
                W.message_start(),
                W.tool_start(0, "toolu_json", "add"),
                W.tool_args(0, '{"a": 2, "b":'),
                W.block_stop(0),
                W.tool_start(1, "toolu_type", "add"),
                W.tool_args(1, '{"a": "two", "b": 3}'),
                W.block_stop(1),
                W.message_delta("tool_use"),
                W.message_stop(),
            ]
        ),
        StreamReply(W.text_reply("Sorry.")),
    )
    agent = Agent(model=anthropic_model, tools=[add])
    recorder = Recorder(agent)

    result = await agent.prompt("add")

    assert result.stop_reason == "completed"
    ends = {e.tool_call_id: e for e in recorder.of_type("tool_execution_end")}
    assert ends["toolu_json"].is_error and "not valid JSON" in ends["toolu_json"].result
    assert ends["toolu_type"].is_error and "Invalid arguments" in ends["toolu_type"].result
    assert recorder.of_type("turn_end")[-1].message.text == "Sorry."
    follow = stub.requests[1].body["messages"]
    assert follow[1]["content"][0] == {
        "type": "tool_use",
        "id": "toolu_json",
        "name": "add",
        "input": {},
    }
    results = follow[2]["content"]
    assert [b["tool_use_id"] for b in results] == ["toolu_json", "toolu_type"]
    assert all(b["is_error"] for b in results)


async def test_consecutive_user_messages_merge_and_images(stub: Stub) -> None:
    stub.push(StreamReply(W.text_reply("First.")), StreamReply(W.text_reply("Second.")))
    async with AnthropicModel(
        "claude-stub",
        api_key="k",
        base_url=stub.base_url,
        temperature=0.5,
        max_tokens=100,
        thinking_budget=None,
        top_k=5,
    ) as model:
        agent = Agent(model=model, steering_mode="all")
        agent.steer("and also this")  # queued while idle: joins the first turn
        await agent.prompt(
            [TextContent(text="Look:"), ImageContent(data="aGVsbG8=", mime_type="image/png")]
        )
        await agent.prompt("again")
    body = stub.requests[0].body
    assert body["temperature"] == 0.5
    assert body["max_tokens"] == 100
    assert body["top_k"] == 5
    assert "system" not in body
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Look:"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "aGVsbG8="},
                },
                {"type": "text", "text": "and also this"},
            ],
        }
    ]
    second = stub.requests[1].body["messages"]
    assert [m["role"] for m in second] == ["user", "assistant", "user"]
    assert second[1]["content"] == [{"type": "text", "text": "First."}]


async def test_max_tokens_stop_reason_is_length(
    stub: Stub, anthropic_model: AnthropicModel
) -> None:
    stub.push(
        StreamReply(
            [
                W.message_start(),
                W.text_start(0),
                W.text(0, "Trunc"),
                W.block_stop(0),
                W.message_delta("max_tokens"),
                W.message_stop(),
            ]
        )
    )
    agent = Agent(model=anthropic_model)
    recorder = Recorder(agent)
    await agent.prompt("long story")
    message = recorder.of_type("turn_end")[0].message
    assert (message.text, message.stop_reason) == ("Trunc", "length")
