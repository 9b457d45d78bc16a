"""steerline: a runtime and server for interactive AI agents.

Steer a busy agent, queue follow-ups, and stream every step from a durable,
resumable event log. See README.md and SPEC §2.7 for the public API.
"""

from steerline.core.errors import (
    AgentBusyError,
    InboxError,
    InvalidValueError,
    MessageTooLargeError,
    ModelError,
    QueueFullError,
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

__version__ = "0.1.0"


def demo_agent(**settings: object) -> Agent:
    """The offline demo agent: ``DemoModel`` with the demo tools."""
    return Agent(model=DemoModel(), tools=demo_tools(), **settings)  # type: ignore[arg-type]


__all__ = [
    "Agent",
    "AgentBusyError",
    "AgentEvent",
    "AssistantMessage",
    "DemoModel",
    "EnqueueResult",
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
    "QueueFullError",
    "QueuedMessage",
    "RetryPolicy",
    "RunResult",
    "ScriptedError",
    "ScriptedModel",
    "ScriptedReply",
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
    "demo_agent",
    "encode_event",
    "tool",
]
