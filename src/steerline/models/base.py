"""The model interface every provider implements.

Cancellation contract: the runtime iterates ``stream()`` inside a cancel
scope and always calls ``aclose()`` on the generator (shielded) when it stops
early, so a provider that opens its HTTP stream with ``async with`` inside the
generator closes it at once on abort or an ``immediate`` steer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from steerline.core.errors import KeyRefusedError as KeyRefusedError
from steerline.core.messages import AssistantStopReason, Message


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """What the model is told about a tool."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ModelRequest:
    system_prompt: str
    messages: Sequence[Message]
    tools: Sequence[ToolSpec] = ()


@dataclass(frozen=True, slots=True)
class TextPart:
    """A fragment of visible text."""

    text: str


@dataclass(frozen=True, slots=True)
class ThinkingPart:
    """A fragment of reasoning; a part with ``signature`` (and usually no
    text) signs the reasoning block being streamed."""

    text: str
    signature: str | None = None


@dataclass(frozen=True, slots=True)
class ToolCallPart:
    """A fragment of a tool call.

    ``index`` identifies the call within the reply (fragments of several calls
    may interleave). The first fragment of an index carries ``id`` and
    ``name``; ``arguments`` fragments concatenate to the JSON arguments.
    """

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class ToolCallEndPart:
    """The call at ``index`` has finished streaming (optional: the end of the
    stream ends every open call)."""

    index: int


@dataclass(frozen=True, slots=True)
class UsagePart:
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """The provider's finish reason, mapped to steerline's stop reasons."""

    stop_reason: AssistantStopReason = "stop"
    extra: dict[str, Any] = field(default_factory=dict)


ModelPart = TextPart | ThinkingPart | ToolCallPart | ToolCallEndPart | UsagePart | StreamEnd


@runtime_checkable
class Model(Protocol):
    """Anything with a ``name`` and a ``stream`` method is a model.

    ``stream`` raises :class:`steerline.core.errors.ModelError` on failure
    (``transient=True`` for errors worth retrying).
    """

    @property
    def name(self) -> str: ...

    def stream(self, request: ModelRequest) -> AsyncIterator[ModelPart]: ...


@dataclass(frozen=True, slots=True)
class EndpointCheck:
    """What a model's ``check()`` learnt from its endpoint's model list."""

    models: tuple[str, ...] | None = None
    """The models the endpoint lists (None: it has no model list)."""
    serves_model: bool | None = None
    """Whether the configured model is one of them (None: cannot tell, e.g. the
    endpoint lists none)."""
