"""The durable, per-conversation event log: the single source of truth.

The runtime's events are translated to wire events and appended here;
streaming, resume, history and fan-out are all reads of this log. Backends:
``memory://`` and ``sqlite:///path`` (see :func:`open_log`).
"""

from steerline.log.base import (
    ConversationExistsError,
    ConversationRecord,
    EventLog,
    LogSettings,
    StoredEvent,
)
from steerline.log.factory import open_log

__all__ = [
    "ConversationExistsError",
    "ConversationRecord",
    "EventLog",
    "LogSettings",
    "StoredEvent",
    "open_log",
]
