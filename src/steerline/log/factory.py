"""Open an event log from a storage URL (SQLAlchemy-style)."""

from __future__ import annotations

from steerline.core.errors import InvalidValueError
from steerline.log.base import EventLog, LogSettings
from steerline.log.memory import MemoryEventLog


def open_log(url: str, settings: LogSettings | None = None) -> EventLog:
    """``memory://``, ``sqlite:///relative.db`` or ``sqlite:////absolute.db``.

    The returned log still has to be ``await log.open()``-ed.
    """
    if url == "memory://" or url == "memory":
        return MemoryEventLog(settings)
    if url.startswith("sqlite:///"):
        from steerline.log.sqlite import SqliteEventLog

        return SqliteEventLog(url.removeprefix("sqlite:///"), settings)
    raise InvalidValueError(f"unsupported storage URL {url!r}; use memory:// or sqlite:///path.db")
