"""The per-conversation inbox: two lanes of queued user messages.

Order is deterministic: the steering lane before the follow-up lane, and
inside a lane higher ``priority`` first, then arrival order. Every accepted
message id is remembered in a bounded dedup window so that a client retrying
a request (same idempotency key) never queues a message twice.
"""

from __future__ import annotations

import bisect
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal, get_args

from steerline.core.errors import InvalidValueError, MessageTooLargeError, QueueFullError
from steerline.core.events import QueuedMessageView
from steerline.core.ids import new_id
from steerline.core.messages import UserContent, as_user_content, content_size

Lane = Literal["steering", "follow_up"]
DeliveryMode = Literal["one-at-a-time", "all"]
LANES: tuple[Lane, ...] = get_args(Lane)
DELIVERY_MODES: tuple[DeliveryMode, ...] = get_args(DeliveryMode)


def check_lane(value: str) -> Lane:
    if value not in LANES:
        raise InvalidValueError(f"unknown lane {value!r}; expected one of {', '.join(LANES)}")
    return value


def check_delivery_mode(value: str) -> DeliveryMode:
    if value not in DELIVERY_MODES:
        raise InvalidValueError(
            f"unknown delivery mode {value!r}; expected one of {', '.join(DELIVERY_MODES)}"
        )
    return value


@dataclass(frozen=True, slots=True)
class InboxLimits:
    """Every limit is configurable; these defaults are SPEC §2.1's."""

    max_messages: int = 100
    """Queued messages per conversation, both lanes together."""
    max_message_bytes: int = 64 * 1024
    dedup_window: int = 10_000
    """How many accepted message ids are remembered for deduplication."""


@dataclass(slots=True)
class QueuedMessage:
    id: str
    content: list[UserContent]
    lane: Lane
    priority: int = 0
    created_at: float = field(default_factory=time.time)
    arrival: int = 0
    interrupt: bool = False
    """Steer with the ``immediate`` policy for this message only."""

    def sort_key(self) -> tuple[int, int]:
        return (-self.priority, self.arrival)

    def view(self) -> QueuedMessageView:
        return QueuedMessageView(
            id=self.id, content=self.content, priority=self.priority, created_at=self.created_at
        )


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    message: QueuedMessage
    duplicate: bool
    position: int
    """0-based position in its lane when accepted (-1 for a duplicate)."""


@dataclass(frozen=True, slots=True)
class InboxSnapshot:
    steering: list[QueuedMessageView]
    follow_up: list[QueuedMessageView]


class Inbox:
    """Two priority lanes with dedup, limits and per-lane delivery modes."""

    def __init__(
        self,
        *,
        limits: InboxLimits | None = None,
        steering_mode: DeliveryMode = "one-at-a-time",
        follow_up_mode: DeliveryMode = "one-at-a-time",
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.limits = limits or InboxLimits()
        self._lanes: dict[Lane, list[QueuedMessage]] = {"steering": [], "follow_up": []}
        self._modes: dict[Lane, DeliveryMode] = {
            "steering": check_delivery_mode(steering_mode),
            "follow_up": check_delivery_mode(follow_up_mode),
        }
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._arrivals = 0
        self.on_change = on_change
        self.on_remember: Callable[[str], None] | None = None
        """Called with each id that enters the dedup window (a store persists it)."""
        self.on_forget: Callable[[str], None] | None = None
        """Called with each id that falls out of the window."""
        self.last_taken: list[str] = []
        """While ``on_change`` runs for a ``take``: the ids taken for delivery
        (a store keeps them until they are delivered, not just dequeued)."""

    # -- modes -------------------------------------------------------------
    def mode(self, lane: Lane) -> DeliveryMode:
        return self._modes[lane]

    def set_mode(self, lane: Lane, mode: str) -> None:
        """Change a lane's delivery mode; it applies at the next poll."""
        self._modes[check_lane(lane)] = check_delivery_mode(mode)

    # -- writing -------------------------------------------------------------
    def push(
        self,
        lane: Lane,
        content: str | list[UserContent],
        *,
        id: str | None = None,
        priority: int = 0,
        interrupt: bool = False,
    ) -> EnqueueResult:
        """Queue a message, or report it as a duplicate of an accepted id.

        Raises ``MessageTooLargeError`` / ``QueueFullError`` without touching
        what is already queued.
        """
        check_lane(lane)
        parts = as_user_content(content)
        if id is not None and id in self._seen:
            existing = self.find(id)
            message = existing or QueuedMessage(id=id, content=parts, lane=lane)
            return EnqueueResult(message=message, duplicate=True, position=-1)
        size = content_size(parts)
        if size > self.limits.max_message_bytes:
            raise MessageTooLargeError(
                f"message is {size} bytes; the limit is {self.limits.max_message_bytes}"
            )
        if len(self) >= self.limits.max_messages:
            raise QueueFullError(
                f"the inbox already holds {len(self)} messages; the limit is "
                f"{self.limits.max_messages}"
            )
        self._arrivals += 1
        message = QueuedMessage(
            id=id or new_id("msg"),
            content=parts,
            lane=lane,
            priority=priority,
            arrival=self._arrivals,
            interrupt=interrupt,
        )
        self.remember(message.id)
        position = self._insert(message)
        self._changed()
        return EnqueueResult(message=message, duplicate=False, position=position)

    def remember(self, message_id: str) -> bool:
        """Record an accepted id in the dedup window; False if it was known."""
        return self._remember(message_id, notify=True)

    def _remember(self, message_id: str, *, notify: bool) -> bool:
        if message_id in self._seen:
            return False
        self._seen[message_id] = None
        if notify and self.on_remember is not None:
            self.on_remember(message_id)
        while len(self._seen) > self.limits.dedup_window:
            forgotten, _ = self._seen.popitem(last=False)
            if notify and self.on_forget is not None:
                self.on_forget(forgotten)
        return True

    def is_duplicate(self, message_id: str) -> bool:
        return message_id in self._seen

    def take(self, lane: Lane) -> list[QueuedMessage]:
        """Remove and return what one delivery point takes from ``lane``."""
        queue = self._lanes[lane]
        if not queue:
            return []
        if self._modes[lane] == "all":
            taken, self._lanes[lane] = queue, []
        else:
            taken = [queue.pop(0)]
        self.last_taken = [m.id for m in taken]
        try:
            self._changed()
        finally:
            self.last_taken = []
        return taken

    def put_back(self, messages: Iterable[QueuedMessage]) -> None:
        """Return taken messages that were never delivered (a run aborted first).

        Each goes back to its own lane with its id, priority and arrival, so it
        takes its original position. The size limit is not checked: these
        messages were accepted already and must not be lost.
        """
        returned = False
        for message in messages:
            self._insert(message)
            returned = True
        if returned:
            self._changed()

    def clear(self, lane: Lane | None = None) -> list[QueuedMessage]:
        """Remove and return the messages of one lane, or of both."""
        lanes = LANES if lane is None else (check_lane(lane),)
        removed: list[QueuedMessage] = []
        for name in lanes:
            removed += self._lanes[name]
            self._lanes[name] = []
        if removed:
            self._changed()
        return removed

    def restore(self, messages: Iterable[QueuedMessage], seen_ids: Iterable[str] = ()) -> None:
        """Load persisted state (a restarted server's inbox); no hook is called."""
        for message_id in seen_ids:
            self._remember(message_id, notify=False)
        for message in messages:
            self._remember(message.id, notify=False)
            self._arrivals = max(self._arrivals, message.arrival)
            self._insert(message)

    # -- reading -------------------------------------------------------------
    def has(self, lane: Lane | None = None) -> bool:
        if lane is None:
            return any(self._lanes.values())
        return bool(self._lanes[lane])

    def has_interrupt(self) -> bool:
        return any(message.interrupt for message in self._lanes["steering"])

    def find(self, message_id: str) -> QueuedMessage | None:
        for queue in self._lanes.values():
            for message in queue:
                if message.id == message_id:
                    return message
        return None

    def messages(self, lane: Lane) -> list[QueuedMessage]:
        return list(self._lanes[lane])

    @property
    def seen_ids(self) -> list[str]:
        return list(self._seen)

    def snapshot(self) -> InboxSnapshot:
        return InboxSnapshot(
            steering=[m.view() for m in self._lanes["steering"]],
            follow_up=[m.view() for m in self._lanes["follow_up"]],
        )

    def __len__(self) -> int:
        return sum(len(queue) for queue in self._lanes.values())

    def _insert(self, message: QueuedMessage) -> int:
        """Place ``message`` in its lane by (priority, arrival); return its position."""
        queue = self._lanes[message.lane]
        position = bisect.bisect_right([m.sort_key() for m in queue], message.sort_key())
        queue.insert(position, message)
        return position

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()
