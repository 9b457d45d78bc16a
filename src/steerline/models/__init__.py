"""Models: the seam between the runtime and an LLM.

A model turns a :class:`ModelRequest` into an async stream of
:data:`ModelPart` values. The runtime assembles them into an
``AssistantMessage`` and the native delta events, so a provider only
translates its wire format and never touches steerline's events.
"""

from steerline.models.base import (
    Model,
    ModelPart,
    ModelRequest,
    StreamEnd,
    TextPart,
    ThinkingPart,
    ToolCallEndPart,
    ToolCallPart,
    ToolSpec,
    UsagePart,
)
from steerline.models.demo import DemoModel
from steerline.models.scripted import ScriptedError, ScriptedModel, ScriptedReply

__all__ = [
    "DemoModel",
    "Model",
    "ModelPart",
    "ModelRequest",
    "ScriptedError",
    "ScriptedModel",
    "ScriptedReply",
    "StreamEnd",
    "TextPart",
    "ThinkingPart",
    "ToolCallEndPart",
    "ToolCallPart",
    "ToolSpec",
    "UsagePart",
]
