"""Open an event log from a storage URL (SQLAlchemy-style)."""

from __future__ import annotations

from steerline.core.errors import InvalidValueError
from steerline.log.base import EventLog, LogSettings
from steerline.log.memory import MemoryEventLog


def open_log(url: str, settings: LogSettings | None = None) -> EventLog:
    """``memory://``, ``sqlite:///relative.db``, ``sqlite:////absolute.db`` or
    ``redis://host:port/db[?lease_ttl=seconds&prefix=name]``.

    The returned log still has to be ``await log.open()``-ed.
    """
    if url == "memory://" or url == "memory":
        return MemoryEventLog(settings)
    if url.startswith("sqlite:///"):
        from steerline.log.sqlite import SqliteEventLog

        return SqliteEventLog(url.removeprefix("sqlite:///"), settings)
    if url.startswith(("redis://", "rediss://")):
        from steerline.log.redis import RedisEventLog

        return RedisEventLog(url, settings)
    raise InvalidValueError(
        f"unsupported storage URL {url!r}; use memory://, sqlite:///path.db or redis://host:port/db"
    )
