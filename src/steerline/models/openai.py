"""OpenAI-compatible Chat Completions, on the official ``openai`` SDK.

Serves OpenAI itself and the servers that speak its Chat Completions API:
vLLM, Ollama (``/v1``), llama.cpp's ``llama-server``, LM Studio, and the
hosted gateways that copy it. Replies stream with ``stream=True`` and
``stream_options={"include_usage": True}``.

What is translated:

* messages: user text and images (data URLs); assistant text and
  ``tool_calls``; ``tool_result`` → role ``tool`` (images a tool returned
  follow in a user message, since the ``tool`` role takes text only);
  reasoning is not sent back (servers that stream it ask not to).
* the stream: ``content`` → text, ``reasoning_content`` / ``reasoning`` →
  thinking, ``tool_calls`` fragments (by ``index``, interleaving allowed) →
  tool calls, ``usage`` → usage, ``finish_reason`` → stop reason.

The SDK's own retries are off; the runtime retries transient errors.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import openai

from steerline.core.errors import ModelError
from steerline.core.messages import (
    AssistantMessage,
    AssistantStopReason,
    ImageContent,
    Message,
    TextContent,
    ToolCall,
    ToolResultMessage,
    UserMessage,
)
from steerline.models._sdk import (
    SDKErrors,
    SDKModelBase,
    accepted_keywords,
    check_error,
    client_settings,
    fit_request,
    stream_cut,
)
from steerline.models.base import (
    EndpointCheck,
    ModelPart,
    ModelRequest,
    StreamEnd,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolSpec,
    UsagePart,
)

PROVIDER = "openai"
ERRORS = SDKErrors(
    base=openai.OpenAIError,
    status=openai.APIStatusError,
    connection=openai.APIConnectionError,
    timeout=openai.APITimeoutError,
    response_validation=openai.APIResponseValidationError,
    api=openai.APIError,
)
SDK_ERRORS = ERRORS.catch

FINISH_REASONS: dict[str, AssistantStopReason] = {
    "stop": "stop",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "length": "length",
    "eos": "stop",
    "end_turn": "stop",
}
REASONING_FIELDS = ("reasoning_content", "reasoning")


# -- request ----------------------------------------------------------------
def _image_part(image: ImageContent) -> dict[str, Any]:
    return {
        "type": "image_url",
        "image_url": {"url": f"data:{image.mime_type};base64,{image.data}"},
    }


def _user_message(message: UserMessage) -> dict[str, Any]:
    if all(isinstance(part, TextContent) for part in message.content):
        return {"role": "user", "content": message.text}
    parts: list[dict[str, Any]] = []
    for part in message.content:
        if isinstance(part, TextContent):
            if part.text:
                parts.append({"type": "text", "text": part.text})
        else:
            parts.append(_image_part(part))
    return {"role": "user", "content": parts}


def _call_arguments(call: ToolCall) -> str:
    if call.raw_arguments and call.invalid_arguments is None:
        return call.raw_arguments
    return json.dumps(call.arguments)


def _assistant_message(message: AssistantMessage) -> dict[str, Any] | None:
    text = message.text
    calls = [
        {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": _call_arguments(call)},
        }
        for call in message.tool_calls
    ]
    if not text and not calls:
        return None  # an empty reply (an error or an abort before any output)
    out: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        out["tool_calls"] = calls
    return out


def _tool_messages(message: ToolResultMessage) -> list[dict[str, Any]]:
    text = message.text
    images = [part for part in message.content if isinstance(part, ImageContent)]
    if not text:
        text = "(see attached image)" if images else "(no output)"
    out: list[dict[str, Any]] = [
        {"role": "tool", "tool_call_id": message.tool_call_id, "content": text}
    ]
    if images:
        out.append(
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": f"Image(s) returned by {message.tool_name}:"},
                    *(_image_part(image) for image in images),
                ],
            }
        )
    return out


def to_openai_messages(system_prompt: str, messages: list[Message]) -> list[dict[str, Any]]:
    """steerline messages → Chat Completions ``messages``."""
    out: list[dict[str, Any]] = []
    if system_prompt:
        out.append({"role": "system", "content": system_prompt})
    # Images from tool results must not split the run of ``tool`` messages
    # that answers one assistant message: collect them and add them after.
    deferred: list[dict[str, Any]] = []
    for message in messages:
        if not isinstance(message, ToolResultMessage) and deferred:
            out.extend(deferred)
            deferred = []
        if isinstance(message, UserMessage):
            out.append(_user_message(message))
        elif isinstance(message, AssistantMessage):
            converted = _assistant_message(message)
            if converted is not None:
                out.append(converted)
        else:
            tool_message, *extra = _tool_messages(message)
            out.append(tool_message)
            deferred.extend(extra)
    out.extend(deferred)
    return out


def to_openai_tools(tools: list[ToolSpec]) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {
                "name": spec.name,
                "description": spec.description,
                "parameters": spec.parameters or {"type": "object", "properties": {}},
            },
        }
        for spec in tools
    ]


# -- stream -----------------------------------------------------------------
class _CallIndexer:
    """Map the server's tool-call indices to stable ones.

    Some servers omit ``index`` or reuse one index for several calls; a
    fragment that brings a different ``id`` then starts a new call.
    """

    def __init__(self) -> None:
        self._calls: dict[int, tuple[int, str | None]] = {}  # server index → (ours, id)
        self._count = 0

    def index(self, server_index: int | None, call_id: str | None) -> int:
        key = server_index if isinstance(server_index, int) else -1
        current = self._calls.get(key)
        if current is None or (call_id and current[1] and call_id != current[1]):
            current = (self._count, call_id)
            self._count += 1
            self._calls[key] = current
        elif call_id and current[1] is None:
            self._calls[key] = (current[0], call_id)
        return current[0]


def _reasoning(delta: Any) -> str | None:
    for name in REASONING_FIELDS:
        value = getattr(delta, name, None)
        if isinstance(value, str) and value:
            return value
    return None


def _usage(usage: Any) -> UsagePart:
    return UsagePart(
        input_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
        output_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
    )


class _ChunkTranslator:
    """The chunks of one streamed reply → model parts."""

    def __init__(self) -> None:
        self._calls = _CallIndexer()
        self.finish_reason: str | None = None

    def end(self) -> StreamEnd:
        finish = self.finish_reason
        if finish is None:
            raise stream_cut(PROVIDER)
        if finish == "content_filter":
            raise ModelError("openai: the reply was stopped by the provider's content filter")
        return StreamEnd(FINISH_REASONS.get(finish, "stop"))

    def translate(self, chunk: Any) -> Iterator[ModelPart]:
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            yield _usage(usage)
        for choice in getattr(chunk, "choices", None) or ():
            if getattr(choice, "index", 0) not in (0, None):
                continue  # n > 1 is not supported: keep the first choice
            delta = getattr(choice, "delta", None)
            if delta is not None:
                yield from self._delta(delta)
            finish = getattr(choice, "finish_reason", None)
            if isinstance(finish, str) and finish:
                self.finish_reason = finish

    def _delta(self, delta: Any) -> Iterator[ModelPart]:
        reasoning = _reasoning(delta)
        if reasoning:
            yield ThinkingPart(reasoning)
        for name in ("content", "refusal"):
            text = getattr(delta, name, None)
            if isinstance(text, str) and text:
                yield TextPart(text)
        for call in getattr(delta, "tool_calls", None) or ():
            function = getattr(call, "function", None)
            call_id = getattr(call, "id", None) or None
            yield ToolCallPart(
                index=self._calls.index(getattr(call, "index", None), call_id),
                id=call_id,
                name=getattr(function, "name", None) or None,
                arguments=getattr(function, "arguments", None) or "",
            )


class OpenAIModel(SDKModelBase):
    """A model behind an OpenAI-compatible Chat Completions endpoint.

    ``api_key`` defaults to ``$OPENAI_API_KEY`` for OpenAI's own API only; a
    custom ``base_url`` (a local vLLM, Ollama, llama.cpp or LM Studio server,
    a gateway) without ``api_key`` gets the placeholder ``not-needed``, never
    the environment's key (:mod:`steerline.models.keys`). ``request_options``
    are passed to every ``chat.completions.create`` call (``top_p``,
    ``reasoning_effort``, ``max_completion_tokens``, ``extra_body={...}`` for
    server-specific fields, ...). Pass ``client`` to reuse a configured
    ``AsyncOpenAI`` (its retries should be off).
    """

    provider = PROVIDER
    errors = ERRORS
    client: openai.AsyncOpenAI

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout: float | None = None,
        default_headers: Mapping[str, str] | None = None,
        stream_usage: bool = True,
        client: openai.AsyncOpenAI | None = None,
        **request_options: Any,
    ) -> None:
        if not model:
            raise ModelError("openai: a model name is required")
        self.model = model
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.stream_usage = stream_usage
        self.request_options = request_options
        self._owns_client = client is None
        if client is None:
            settings = client_settings(PROVIDER, api_key, base_url, timeout, default_headers)
            client = openai.AsyncOpenAI(**settings)
        self.client = client
        self._accepted = accepted_keywords(self.client.chat.completions.create)

    def request_params(self, request: ModelRequest) -> dict[str, Any]:
        """The keyword arguments of ``chat.completions.create`` for ``request``."""
        params: dict[str, Any] = {
            "model": self.model,
            "messages": to_openai_messages(request.system_prompt, list(request.messages)),
            "stream": True,
        }
        if self.stream_usage:
            params["stream_options"] = {"include_usage": True}
        if request.tools:
            params["tools"] = to_openai_tools(list(request.tools))
        if self.temperature is not None:
            params["temperature"] = self.temperature
        if self.max_tokens is not None:
            params["max_tokens"] = self.max_tokens
        params.update(self.request_options)
        return fit_request(params, self._accepted)

    async def _open_stream(self, params: dict[str, Any]) -> Any:
        return await self.client.chat.completions.create(**params)

    def _translator(self) -> _ChunkTranslator:
        return _ChunkTranslator()

    async def check(self) -> EndpointCheck:
        """Reach the endpoint once (``GET /models``) and look for the model in its list.

        Raises ``KeyRefusedError`` for 401/403 and ``ModelError`` when the
        endpoint cannot be used. A 404 counts as reachable: some compatible
        servers have no model list. Ollama serves ``name`` as ``name:latest``.
        """
        try:
            page = await self.client.models.list()
        except openai.NotFoundError:
            return EndpointCheck()
        except SDK_ERRORS as exc:
            raise check_error(exc, PROVIDER, ERRORS) from exc
        served = tuple(str(item.id) for item in page.data if getattr(item, "id", None))
        if not served:
            return EndpointCheck(served)
        names = {self.model, f"{self.model}:latest"}
        return EndpointCheck(served, any(name in names for name in served))
