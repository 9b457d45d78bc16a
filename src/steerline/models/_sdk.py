"""What the two SDK-based providers share: request options, error mapping
and the streaming skeleton.

:class:`SDKModelBase` is the template of a streamed reply: open the SDK
stream, feed each event to the provider's :class:`ReplyTranslator`, map SDK
and transport failures through :func:`to_model_error`, close the response
even when the consumer is cancelled or stops early, and end with the
translator's :class:`StreamEnd`. A provider supplies only its request
(``request_params`` and ``_open_stream``) and its event → part translation.

:func:`fit_request` moves request options an SDK method does not declare
into ``extra_body``, so a configured option (``top_k``, ``repetition_penalty``,
``min_p``, ...) reaches the server whatever the SDK version knows about.

:func:`to_model_error` maps provider SDK and transport failures to
:class:`ModelError`.

Both official SDKs (``openai`` and ``anthropic``) are built on httpx2 and
share the shape of their exceptions (``status_code``, ``response``, ``body``),
so one mapping serves both: each provider module hands its SDK's exception
classes in (:class:`SDKErrors`). Neither SDK is imported here, so a
configuration that uses one provider never loads the other's SDK. The SDKs'
own retries are switched off
(``max_retries=0``): the runtime retries what is marked ``transient`` here,
honouring ``retry_after``.

Transient: HTTP 408, 409, 429 and 5xx, connection failures and timeouts,
a stream cut before its end, and in-stream errors of a retryable type
(``overloaded_error``, ``rate_limit_error``, ``api_error``, ``server_error``).
A provider's ``x-should-retry`` header overrides the status code, as it does
for the SDKs' own retry logic. Everything else (400, 401, 403, 404, 422, ...)
is permanent and keeps the provider's message.
"""

from __future__ import annotations

import email.utils
import inspect
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Self

import anyio
import httpx2

from steerline.core.errors import ModelError
from steerline.models.base import KeyRefusedError, ModelPart, ModelRequest, StreamEnd
from steerline.models.keys import PROVIDER_APIS, api_key_for, endpoint

TRANSIENT_STATUS = frozenset({408, 409, 429})
TRANSIENT_ERROR_TYPES = frozenset(
    {
        "overloaded_error",
        "rate_limit_error",
        "rate_limit_exceeded",
        "api_error",
        "server_error",
        "internal_server_error",
        "timeout_error",
    }
)
MAX_MESSAGE_CHARS = 2000

KEY_REFUSED_STATUS = frozenset({401, 403})


@dataclass(frozen=True, slots=True)
class SDKErrors:
    """One SDK's exception classes (``openai`` and ``anthropic`` have the same tree)."""

    base: type[Exception]
    """``OpenAIError`` / ``AnthropicError``: everything the SDK raises."""
    status: type[Exception]
    """``APIStatusError``: an HTTP error status (``status_code``, ``body``, ``response``)."""
    connection: type[Exception]
    """``APIConnectionError``."""
    timeout: type[Exception]
    """``APITimeoutError`` (a kind of connection error)."""
    response_validation: type[Exception]
    """``APIResponseValidationError``: an answer of an unexpected shape."""
    api: type[Exception]
    """``APIError``: the base of the above, and an error object in a stream."""

    @property
    def catch(self) -> tuple[type[BaseException], ...]:
        """The exceptions :func:`to_model_error` understands (catch these, then map)."""
        return (
            self.base,
            httpx2.HTTPError,
            httpx2.StreamError,
            OSError,
            TimeoutError,
        )


def accepted_keywords(method: Callable[..., Any]) -> frozenset[str] | None:
    """The keyword arguments ``method`` declares (None: it takes any)."""
    try:
        parameters = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return frozenset(p.name for p in parameters)


def fit_request(params: dict[str, Any], accepted: frozenset[str] | None) -> dict[str, Any]:
    """Move the keys of ``params`` the SDK method does not accept into ``extra_body``
    (sent as top-level JSON fields); an explicit ``extra_body`` wins."""
    if accepted is None:
        return params
    unknown = {key: params.pop(key) for key in list(params) if key not in accepted}
    if unknown:
        params["extra_body"] = {**unknown, **(params.get("extra_body") or {})}
    return params


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date), if sent."""
    if not headers:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(float(raw_ms) / 1000.0, 0.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _error_fields(body: object) -> tuple[str | None, str | None]:
    """(message, type) from the error bodies providers send.

    Handles ``{"error": {"message", "type"}}`` (OpenAI, Anthropic, vLLM),
    the inner ``{"message", "type"}`` (what the OpenAI SDK keeps),
    ``{"error": "text"}`` (Ollama) and ``{"detail": ...}`` (FastAPI servers).
    """
    if isinstance(body, str):
        return (body.strip() or None), None
    if not isinstance(body, Mapping):
        return None, None
    inner: Any = body.get("error", body)
    if isinstance(inner, str):
        return inner, None
    if not isinstance(inner, Mapping):
        return None, None
    message = inner.get("message")
    kind = inner.get("type") or inner.get("code")
    if not isinstance(message, str):
        detail = inner.get("detail")
        message = detail if isinstance(detail, str) else None
    return message, kind if isinstance(kind, str) else None


def _clip(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + "…"


def _describe(exc: BaseException) -> str:
    """The exception's text, followed by its cause's (connection errors hide it)."""
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text} ({type(cause).__name__}: {cause})"
    return text


def _status_error(
    provider: str, status: int, body: object, headers: Mapping[str, str] | None, fallback: str
) -> ModelError:
    message, kind = _error_fields(body)
    transient = status in TRANSIENT_STATUS or status >= 500 or kind in TRANSIENT_ERROR_TYPES
    should_retry = (headers or {}).get("x-should-retry")
    if should_retry == "true":
        transient = True
    elif should_retry == "false":
        transient = False
    where = f"HTTP {status}" if status >= 400 else "error in stream"
    text = message or fallback
    if kind and kind not in text:
        text = f"{kind}: {text}"
    return ModelError(
        _clip(f"{provider} {where}: {text}"),
        transient=transient,
        retry_after=retry_after_seconds(headers) if transient else None,
    )


def to_model_error(exc: BaseException, provider: str, sdk: SDKErrors) -> ModelError:
    """Translate one SDK/transport exception into a :class:`ModelError`."""
    if isinstance(exc, ModelError):
        return exc
    error: Any = exc  # the SDK's attributes (status_code, body, response, message)
    if isinstance(exc, sdk.status):
        return _status_error(
            provider, error.status_code, error.body, error.response.headers, error.message
        )
    if isinstance(exc, sdk.connection):
        what = "timed out" if isinstance(exc, sdk.timeout) else "connection failed"
        return ModelError(_clip(f"{provider} {what}: {_describe(exc)}"), transient=True)
    if isinstance(exc, sdk.response_validation):
        return ModelError(_clip(f"{provider} sent an unexpected response: {error.message}"))
    if isinstance(exc, sdk.api):
        # An error object in the middle of a stream (no HTTP status of its own).
        message, kind = _error_fields(error.body)
        text = message or error.message
        if kind and kind not in text:
            text = f"{kind}: {text}"
        return ModelError(
            _clip(f"{provider} error in stream: {text}"),
            transient=kind in TRANSIENT_ERROR_TYPES,
        )
    if isinstance(exc, httpx2.TimeoutException | TimeoutError):
        return ModelError(_clip(f"{provider} timed out: {_describe(exc)}"), transient=True)
    if isinstance(exc, httpx2.TransportError | OSError):
        return ModelError(_clip(f"{provider} connection lost: {_describe(exc)}"), transient=True)
    if isinstance(exc, httpx2.HTTPError | httpx2.StreamError):
        return ModelError(_clip(f"{provider} HTTP error: {_describe(exc)}"), transient=True)
    return ModelError(_clip(f"{provider} error: {_describe(exc)}"))


def check_error(exc: BaseException, provider: str, sdk: SDKErrors) -> ModelError:
    """What an endpoint check (``GET /models``) failing with ``exc`` means: a
    :class:`KeyRefusedError` for 401/403, else as :func:`to_model_error`."""
    error: Any = exc
    if isinstance(exc, sdk.status) and error.status_code in KEY_REFUSED_STATUS:
        message, kind = _error_fields(error.body)
        text = message or error.message
        if kind and kind not in text:
            text = f"{kind}: {text}"
        status = int(error.status_code)
        return KeyRefusedError(
            _clip(f"{provider} HTTP {status}: {text}"), status=status, detail=_clip(text)
        )
    return to_model_error(exc, provider, sdk)


def stream_cut(provider: str) -> ModelError:
    """The HTTP body ended before the provider's end-of-reply marker."""
    return ModelError(
        f"{provider} stream ended before the reply was complete (connection cut)",
        transient=True,
    )


def client_settings(
    provider: str,
    api_key: str | None,
    base_url: str | None,
    timeout: float | None,
    headers: Mapping[str, str] | None,
) -> dict[str, Any]:
    """Keyword arguments for an SDK client: the endpoint and the key by the
    one key rule (:mod:`steerline.models.keys`: a key from the environment
    only for the provider's own API), retries off (the runtime retries, with
    one policy for every provider), optional timeout and headers.

    Raises ``ModelError`` when the provider's own API would get no key.
    """
    url = endpoint(provider, base_url)
    key = api_key_for(provider, api_key=api_key, base_url=url)
    if key is None:
        raise ModelError(
            f"{provider}: no API key: pass api_key, set {PROVIDER_APIS[provider].key_env}, "
            "or give the base_url of a local server"
        )
    settings: dict[str, Any] = {"api_key": key, "base_url": url, "max_retries": 0}
    if timeout is not None:
        settings["timeout"] = timeout
    if headers:
        settings["default_headers"] = dict(headers)
    return settings


class ReplyTranslator(Protocol):
    """One streamed reply's SDK events → model parts (a fresh one per reply)."""

    def translate(self, event: Any) -> Iterable[ModelPart]:
        """The parts one SDK stream event brings (often none)."""
        ...

    def end(self) -> StreamEnd:
        """The reply's end once the stream is exhausted; raises ``ModelError``
        when it was cut (:func:`stream_cut`) or refused."""
        ...


class SDKModelBase(ABC):
    """What both SDK-backed models share: the streaming loop (:meth:`stream`),
    closing a client they created themselves (never one passed in) and
    ``async with`` support.

    A subclass sets ``provider`` and ``errors`` and implements
    :meth:`request_params`, :meth:`_open_stream` and :meth:`_translator`.
    """

    provider: ClassVar[str]
    errors: ClassVar[SDKErrors]
    model: str
    client: Any
    _owns_client: bool

    @property
    def name(self) -> str:
        return self.model

    @property
    def base_url(self) -> str:
        return str(self.client.base_url)

    @abstractmethod
    def request_params(self, request: ModelRequest) -> dict[str, Any]:
        """The keyword arguments of the SDK's streaming call for ``request``."""

    @abstractmethod
    async def _open_stream(self, params: dict[str, Any]) -> Any:
        """Start the SDK's streaming call; returns the async-iterable response
        (with ``close()``)."""

    @abstractmethod
    def _translator(self) -> ReplyTranslator:
        """A fresh translator for one reply."""

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelPart]:
        params = self.request_params(request)
        catch = self.errors.catch
        try:
            response = await self._open_stream(params)
        except catch as exc:
            raise to_model_error(exc, self.provider, self.errors) from exc
        translator = self._translator()
        try:
            try:
                async for event in response:
                    for part in translator.translate(event):
                        yield part
            except catch as exc:
                raise to_model_error(exc, self.provider, self.errors) from exc
        finally:
            with anyio.CancelScope(shield=True):
                await response.close()
        yield translator.end()

    async def aclose(self) -> None:
        """Close the HTTP client (only if this model created it)."""
        if self._owns_client:
            await self.client.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model!r}, base_url={self.base_url!r})"
