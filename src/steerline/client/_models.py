"""What the SDK hands out and takes: the wire event and the reconnect policy."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import msgspec


class WireEvent(msgspec.Struct, frozen=True):
    """One event of a conversation's log (SPEC §3.1): ``{"event", "data", "seq"}``.

    ``event`` is one of the names of SPEC §3.2 (``message_chunk``, ``done``, ...),
    ``data`` the ``UnifiedResponseData`` object as the server sent it
    (``conversation_id``, ``role``, ``item_id``, and ``payload``, ``task_id``, ...
    when set), ``seq`` the event's id in the log: strictly increasing, never reused.
    """

    event: str
    data: dict[str, Any]
    seq: int


@dataclass(frozen=True, slots=True)
class Reconnect:
    """How a stream resumes after a dropped connection, a restart or a 502/503/504.

    The delay before reconnection attempt ``n`` (1, 2, ...) since the last event
    that made progress is ``min(max_delay, initial * multiplier ** (n - 1))``,
    less up to ``jitter`` of it at random (so that many clients of a restarted
    server do not come back in the same millisecond). ``initial`` is the
    server's SSE ``retry:`` hint when it sent one (1 s by default), else
    ``initial_delay``. A ``Retry-After`` on a 429/503 raises the delay to at
    least that. Any event that makes progress resets the count.

    After ``max_attempts`` consecutive reconnection attempts without a new
    event (or a heartbeat: an idle stream the server keeps alive is not a
    failing one) the stream raises :class:`~steerline.client.StreamFailed`
    (``max_attempts=0``: never reconnect). With the defaults the waits add up
    to 90 to 180 s (jitter) before it gives up: a server restart or a short
    network outage is ridden out.

    ``stall_timeout`` is the stream's read timeout: a connection that brings
    no byte at all for this long (the server sends a ping every 15 s on an
    idle stream) is taken for dead and resumed. Keep it well above the
    server's ``ping_interval``.
    """

    initial_delay: float = 1.0
    max_delay: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.5
    max_attempts: int = 10
    stall_timeout: float = 45.0

    def __post_init__(self) -> None:
        for name in ("initial_delay", "max_delay", "stall_timeout"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"Reconnect.{name} must be a finite number >= 0, got {value!r}")
        if self.stall_timeout == 0:
            raise ValueError("Reconnect.stall_timeout must be > 0")
        if not math.isfinite(self.multiplier) or self.multiplier < 1:
            raise ValueError(f"Reconnect.multiplier must be >= 1, got {self.multiplier!r}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"Reconnect.jitter must be within 0..1, got {self.jitter!r}")
        if self.max_attempts < 0:
            raise ValueError(f"Reconnect.max_attempts must be >= 0, got {self.max_attempts!r}")
