"""The public names of `steerline` (SPEC §2.7): guarded so a rename is deliberate."""

from __future__ import annotations

import subprocess
import sys

import steerline

EXPECTED = {
    "Agent", "AgentBusyError", "AgentConfig", "AgentEvent", "AlreadyDeliveredError",
    "AnthropicModel", "AssistantMessage", "ConfigError", "DemoModel", "EndpointCheckError",
    "EnqueueResult", "ErrorKind", "EventStream", "EventStreamOverflow", "ImageContent",
    "InboxError", "InboxLimits", "InvalidValueError", "Message", "MessageTooLargeError",
    "Model", "ModelError", "OpenAIModel", "QueueFullError", "QueuedMessage",
    "QueuedMessageNotFoundError", "RetryPolicy", "RunMismatchError", "RunResult",
    "ScriptedError", "ScriptedModel",
    "ScriptedReply", "SteerlineConfig", "SteerlineError", "TextContent", "ThinkingContent",
    "Tool", "ToolCall", "ToolContext", "ToolError", "ToolResultMessage", "UserMessage",
    "__version__", "build_model", "check_agent", "demo_agent", "demo_tools", "encode_event",
    "load_config", "tool",
}  # fmt: skip


def test_export_list_is_exactly_the_documented_one() -> None:
    assert set(steerline.__all__) == EXPECTED
    assert steerline.__all__ == sorted(steerline.__all__, key=str)
    for name in steerline.__all__:
        assert getattr(steerline, name) is not None


def test_agent_has_the_spec_methods() -> None:
    for name in (
        "prompt", "steer", "follow_up", "abort", "wait_for_idle", "clear_queues",
        "clear_steering_queue", "clear_follow_up_queue", "has_queued_messages", "events",
        "subscribe", "continue_",
    ):  # fmt: skip
        assert callable(getattr(steerline.Agent, name)), name


def test_importing_the_library_loads_no_server_and_no_provider_sdk() -> None:
    code = (
        "import sys, steerline; "
        "heavy = {'openai', 'anthropic', 'fastapi', 'uvicorn', 'sqlite3'} & set(sys.modules); "
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
