"""Errors as JSON ``{"error": {"code", "message"}}`` with real status codes.

Every :class:`SteerlineError` has a ``kind`` (``steerline.core.errors``);
:data:`STATUS` turns it into the HTTP status. :class:`HTTPError` is a route's
error with an explicit status (its ``kind`` follows from that status).
"""

from __future__ import annotations

from starlette.responses import JSONResponse

from steerline.core.errors import ErrorKind, SteerlineError


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
        self.kind = _KIND_OF_STATUS.get(status, ErrorKind.INVALID)


STATUS: dict[ErrorKind, int] = {
    ErrorKind.INVALID: 400,
    ErrorKind.UNAUTHORIZED: 401,
    ErrorKind.FORBIDDEN: 403,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.CONFLICT: 409,
    ErrorKind.TOO_LARGE: 413,
    ErrorKind.RATE_LIMITED: 429,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.UPSTREAM: 502,
}
"""The HTTP status of each kind of error (``SteerlineError.kind``)."""

_KIND_OF_STATUS = {status: kind for kind, status in STATUS.items()}

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
    return STATUS[exc.kind]


def steerline_error_response(exc: SteerlineError) -> JSONResponse:
    status = status_for(exc)
    headers = dict(exc.headers) if isinstance(exc, HTTPError) else {}
    if status in _RETRY_AFTER:  # also an HTTPError's 503 (starting or stopping)
        headers.setdefault("Retry-After", _RETRY_AFTER[status])
    return error_response(status, exc.code, exc.message, headers or None)
