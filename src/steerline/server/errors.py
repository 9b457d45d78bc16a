"""Errors as JSON ``{"error": {"code", "message"}}`` with real status codes."""

from __future__ import annotations

from starlette.responses import JSONResponse

from steerline.core.errors import (
    AgentBusyError,
    AlreadyDeliveredError,
    InboxError,
    InvalidValueError,
    MessageTooLargeError,
    QueuedMessageNotFoundError,
    QueueFullError,
    RunMismatchError,
    SteerlineError,
)
from steerline.log.base import (
    ConversationExistsError,
    RetentionError,
    StorageUnavailableError,
    StoreLockedError,
)
from steerline.service.agents import UnknownAgentError
from steerline.service.conversation import ConversationBusyError, ConversationUnloadedError
from steerline.service.service import ConversationNotFoundError, TooManyRunsError


class HTTPError(SteerlineError):
    """An error raised by a route with an explicit status."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = headers or {}


_STATUS: list[tuple[type[SteerlineError], int]] = [
    (QueuedMessageNotFoundError, 404),
    (AlreadyDeliveredError, 409),
    (RunMismatchError, 409),
    (ConversationNotFoundError, 404),
    (UnknownAgentError, 404),
    (ConversationBusyError, 409),
    (AgentBusyError, 409),
    (ConversationExistsError, 409),
    (RetentionError, 409),
    (MessageTooLargeError, 413),
    (QueueFullError, 409),
    (InboxError, 400),
    (InvalidValueError, 400),
    (TooManyRunsError, 429),
    (StorageUnavailableError, 503),
    (StoreLockedError, 503),
    (ConversationUnloadedError, 503),
]

_RETRY_AFTER = {503: "1", 429: "1"}
"""A 503 says when to try again: the condition is temporary by design."""


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def status_for(exc: SteerlineError) -> int:
    if isinstance(exc, HTTPError):
        return exc.status
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status
    return 400


def steerline_error_response(exc: SteerlineError) -> JSONResponse:
    status = status_for(exc)
    headers = dict(exc.headers) if isinstance(exc, HTTPError) else {}
    if status in _RETRY_AFTER:  # also an HTTPError's 503 (starting or stopping)
        headers.setdefault("Retry-After", _RETRY_AFTER[status])
    return error_response(status, exc.code, exc.message, headers or None)
