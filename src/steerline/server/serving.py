"""How uvicorn runs the app: its log filter and its options (``steerline serve``, tests).

uvicorn's loggers get one filter (installed by :func:`create_app` and again by
``steerline serve``; idempotent):

- ``?access_token=KEY`` (the API key of a browser's EventSource or WebSocket)
  is redacted from every line uvicorn logs: the access log and the
  ``"WebSocket /path?query" [accepted]`` lines;
- what a client did wrong is logged at INFO without a traceback: a client is
  not an error of the server (uvicorn logs an invalid UTF-8 text frame, which
  it answers with close code 1007 as RFC 6455 requires, as an ERROR).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import unquote_plus

REDACTED = "[redacted]"
SECRET_PARAMETERS = frozenset({"access_token"})
_UVICORN_LOGGERS = ("uvicorn.error", "uvicorn.access")

_CLIENT_FAULTS = frozenset({"Invalid UTF-8 sequence received from client."})
"""uvicorn messages logged at ERROR that report what a client sent, not a fault
of the server."""


def redact_query(text: str) -> str:
    """``text`` with the value of every secret query parameter replaced.

    The parameter name is compared decoded, as the server decodes it
    (``access%5Ftoken=`` is the same parameter as ``access_token=``).
    """
    path, mark, query = text.partition("?")
    if not mark:
        return text
    end = len(query)
    for stop in (" ", '"'):
        position = query.find(stop)
        if position != -1:
            end = min(end, position)
    query, rest = query[:end], query[end:]
    parts = []
    for part in query.split("&"):
        name, equals, _value = part.partition("=")
        if equals and unquote_plus(name).lower() in SECRET_PARAMETERS:
            part = f"{name}={REDACTED}"
        parts.append(part)
    return f"{path}?{'&'.join(parts)}{rest}"


class UvicornLogFilter(logging.Filter):
    """Redacts API keys and turns client faults into INFO records (see the module doc)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_redact(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: _redact(value) for key, value in record.args.items()}
        if isinstance(record.msg, str):
            record.msg = _redact(record.msg)
            if record.msg in _CLIENT_FAULTS and record.levelno > logging.INFO:
                if record.exc_info and record.exc_info[1] is not None:
                    record.msg = f"{record.msg} ({record.exc_info[1]})"
                record.levelno, record.levelname = logging.INFO, "INFO"
                record.exc_info, record.exc_text = None, None
        return True


def _redact(value: Any) -> Any:
    return redact_query(value) if isinstance(value, str) and "?" in value else value


def install_log_filter() -> None:
    """Put :class:`UvicornLogFilter` on uvicorn's loggers, once.

    A logger's filters survive uvicorn's own logging set-up (``dictConfig``
    replaces handlers, not filters), so this may run before or after it.
    """
    for name in _UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, UvicornLogFilter) for f in logger.filters):
            logger.addFilter(UvicornLogFilter())
