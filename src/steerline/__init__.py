"""steerline: a runtime and server for interactive AI agents.

Steer a busy agent, queue follow-ups, and stream every step from a durable,
resumable event log. See README.md and SPEC §2.7 for the public API.
"""

import importlib
from typing import TYPE_CHECKING

from steerline.core.errors import (
    AgentBusyError,
    AlreadyDeliveredError,
    ConfigError,
    EndpointCheckError,
    ErrorKind,
    InboxError,
    InvalidValueError,
    MessageTooLargeError,
    ModelError,
    QueuedMessageNotFoundError,
    QueueFullError,
    RunMismatchError,
    SteerlineError,
)
from steerline.core.events import AgentEvent, encode_event
from steerline.core.messages import (
    AssistantMessage,
    ImageContent,
    Message,
    TextContent,
    ThinkingContent,
    ToolCall,
    ToolResultMessage,
    UserMessage,
)
from steerline.demo import demo_agent
from steerline.models import DemoModel, Model, ScriptedError, ScriptedModel, ScriptedReply
from steerline.runtime import (
    Agent,
    EnqueueResult,
    EventStream,
    EventStreamOverflow,
    InboxLimits,
    QueuedMessage,
    RetryPolicy,
    RunResult,
)
from steerline.tools import Tool, ToolContext, ToolError, demo_tools, tool

if TYPE_CHECKING:
    from steerline.config import (
        AgentConfig,
        SteerlineConfig,
        check_agent,
        load_config,
    )
    from steerline.models.anthropic import AnthropicModel
    from steerline.models.openai import OpenAIModel
    from steerline.models.registry import build_model

__version__ = "0.1.0"

# Imported on first use: `import steerline` must not load both provider SDKs.
_LAZY = {
    "AnthropicModel": "steerline.models.anthropic",
    "OpenAIModel": "steerline.models.openai",
    "build_model": "steerline.models.registry",
    "AgentConfig": "steerline.config",
    "SteerlineConfig": "steerline.config",
    "check_agent": "steerline.config",
    "load_config": "steerline.config",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'steerline' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "Agent",
    "AgentBusyError",
    "AgentConfig",
    "AgentEvent",
    "AlreadyDeliveredError",
    "AnthropicModel",
    "AssistantMessage",
    "ConfigError",
    "DemoModel",
    "EndpointCheckError",
    "EnqueueResult",
    "ErrorKind",
    "EventStream",
    "EventStreamOverflow",
    "ImageContent",
    "InboxError",
    "InboxLimits",
    "InvalidValueError",
    "Message",
    "MessageTooLargeError",
    "Model",
    "ModelError",
    "OpenAIModel",
    "QueueFullError",
    "QueuedMessage",
    "QueuedMessageNotFoundError",
    "RetryPolicy",
    "RunMismatchError",
    "RunResult",
    "ScriptedError",
    "ScriptedModel",
    "ScriptedReply",
    "SteerlineConfig",
    "SteerlineError",
    "TextContent",
    "ThinkingContent",
    "Tool",
    "ToolCall",
    "ToolContext",
    "ToolError",
    "ToolResultMessage",
    "UserMessage",
    "__version__",
    "build_model",
    "check_agent",
    "demo_agent",
    "demo_tools",
    "encode_event",
    "load_config",
    "tool",
]
