"""Every exception the SDK raises, in one place.

::

    ClientError                     anything the SDK raises on purpose
    ├── APIError                    the server answered with an error status
    │   ├── BadRequest              400, 422   invalid_value, invalid_request, invalid_event_id, ...
    │   ├── Unauthorized            401, 403   unauthorized, forbidden
    │   ├── NotFound                404        conversation_not_found, queued_message_not_found, ...
    │   ├── Conflict                409        run_mismatch, already_delivered, conversation_busy,
    │   │                                      agent_busy, queue_full, resume_too_old, ...
    │   ├── PayloadTooLarge         413        message_too_large, body_too_large
    │   ├── RateLimited             429        rate_limited, too_many_streams, too_many_runs
    │   └── ServerError             5xx
    │       └── ServiceUnavailable  503        storage_unavailable, ...
    ├── ConnectionFailed            a request could not be sent or its answer not read
    │                               (refused, reset, timed out); the httpx2 error is
    │                               its ``__cause__``
    ├── InvalidResponse             a 2xx answer that is not the protocol (not JSON, an
    │                               SSE ``data:`` that is not an envelope)
    └── StreamFailed                a stream gave up reconnecting (``Reconnect.max_attempts``
                                    attempts in a row without a new event)

An :class:`APIError` carries the server's ``{"error": {"code", "message"}}``
as ``code`` and ``message``, plus the HTTP ``status``. A body that is not such
JSON (a proxy's HTML page, say) still gives the class of its status, with
``code`` ``None`` and the start of the body in ``message``. Other 4xx
statuses (405, 408, ...) are a plain :class:`APIError`.

:class:`RateLimited` and :class:`ServiceUnavailable` have ``retry_after``
(seconds, from the ``Retry-After`` header; ``None`` without one).

Streams never raise :class:`ConnectionFailed` or :class:`ServerError` for a
502/503/504: they reconnect, and raise :class:`StreamFailed` (whose
``last_error`` is the last of those) once they give up.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping
from typing import Any

import msgspec


class ClientError(Exception):
    """The root of every exception the SDK raises on purpose."""


class APIError(ClientError):
    """The server answered with an error status."""

    def __init__(self, status: int, code: str | None, message: str) -> None:
        super().__init__(f"{status} {code or 'error'}: {message}")
        self.status = status
        self.code = code
        """The server's error code (``run_mismatch``, ...); ``None`` if the body had none."""
        self.message = message


class BadRequest(APIError):
    """400 or 422: the request is invalid (a value, a field, an event id)."""


class Unauthorized(APIError):
    """401 or 403: a missing or wrong API key, or access refused."""


class NotFound(APIError):
    """404: no such conversation (for this key), queued message or agent."""


class Conflict(APIError):
    """409: refused in the conversation's current state; ``code`` says why."""


class PayloadTooLarge(APIError):
    """413: the message or the request body is over the server's limit."""


class RateLimited(APIError):
    """429: too many requests, streams or running conversations."""

    def __init__(
        self, status: int, code: str | None, message: str, retry_after: float | None = None
    ) -> None:
        super().__init__(status, code, message)
        self.retry_after = retry_after
        """Seconds the server asks to wait (``Retry-After``), or ``None``."""


class ServerError(APIError):
    """5xx: the server (or a proxy in front of it) failed."""


class ServiceUnavailable(ServerError):
    """503: the server cannot take this now (starting, stopping, store unavailable)."""

    def __init__(
        self, status: int, code: str | None, message: str, retry_after: float | None = None
    ) -> None:
        super().__init__(status, code, message)
        self.retry_after = retry_after
        """Seconds the server asks to wait (``Retry-After``), or ``None``."""


class ConnectionFailed(ClientError):
    """A request could not be sent or its answer not read (the cause is the httpx2 error)."""


class InvalidResponse(ClientError):
    """The server's answer does not follow the protocol."""


class StreamFailed(ClientError):
    """A stream gave up: ``attempts`` reconnection attempts in a row brought no new event.

    ``last_error`` is what ended the last attempt (an httpx2 transport error,
    a :class:`ServerError`, :class:`RateLimited`, or ``None`` when the server
    ended the body early); ``last_seq`` is the seq of the last event the
    stream delivered (``None``: none), from which a new stream can resume
    (``client.events(conversation_id, after=last_seq)``).
    """

    def __init__(
        self,
        message: str,
        *,
        last_error: BaseException | None,
        last_seq: int | None,
        attempts: int,
        conversation_id: str | None,
    ) -> None:
        super().__init__(message)
        self.last_error = last_error
        self.last_seq = last_seq
        self.attempts = attempts
        self.conversation_id = conversation_id


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequest,
    422: BadRequest,
    401: Unauthorized,
    403: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
}
"""Statuses with a class of their own (429 and 503 are built with ``retry_after``)."""


class _ErrorDetail(msgspec.Struct):
    code: str
    message: str = ""


class _ErrorBody(msgspec.Struct):
    error: _ErrorDetail


_error_body = msgspec.json.Decoder(_ErrorBody)

_SNIPPET = 200
"""Characters of a non-JSON error body quoted in the message."""


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` in seconds: delta-seconds or an HTTP date; ``None`` if absent or bad."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def error_from_response(status: int, headers: Mapping[str, str], body: bytes) -> APIError:
    """The exception for an error answer (any status >= 400)."""
    code: str | None
    try:
        detail = _error_body.decode(body).error
        code, message = detail.code, detail.message or detail.code
    except msgspec.DecodeError:
        text = body.decode("utf-8", "replace").strip()
        if len(text) > _SNIPPET:
            text = text[:_SNIPPET] + "..."
        code, message = (
            None,
            f"HTTP {status} (not a steerline error body){': ' if text else ''}{text}",
        )
    if status == 429:
        return RateLimited(status, code, message, parse_retry_after(headers.get("retry-after")))
    if status == 503:
        retry_after = parse_retry_after(headers.get("retry-after"))
        return ServiceUnavailable(status, code, message, retry_after)
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else APIError)
    return cls(status, code, message)


def decode_json(body: bytes) -> Any:
    """A 2xx JSON answer, or :class:`InvalidResponse`."""
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise InvalidResponse(f"the server's answer is not JSON: {body[:_SNIPPET]!r}") from exc
