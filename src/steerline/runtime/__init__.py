"""The agent runtime: inbox, run loop, tool execution and event fan-out."""

from steerline.runtime.agent import Agent
from steerline.runtime.hub import EventStream, EventStreamOverflow
from steerline.runtime.inbox import (
    DeliveryMode,
    EnqueueResult,
    Inbox,
    InboxLimits,
    InboxSnapshot,
    Lane,
    QueuedMessage,
)
from steerline.runtime.retry import RetryPolicy
from steerline.runtime.run import RunResult, SteeringPolicy

__all__ = [
    "Agent",
    "DeliveryMode",
    "EnqueueResult",
    "EventStream",
    "EventStreamOverflow",
    "Inbox",
    "InboxLimits",
    "InboxSnapshot",
    "Lane",
    "QueuedMessage",
    "RetryPolicy",
    "RunResult",
    "SteeringPolicy",
]
