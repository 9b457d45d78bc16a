"""The per-conversation inbox: two lanes of queued user messages.

Order is deterministic: the steering lane before the follow-up lane, and
inside a lane higher ``priority`` first, then arrival order. Every accepted
message id is remembered in a bounded dedup window so that a client retrying
a request (same idempotency key) never queues a message twice.

A queued message is addressable by its id until it is taken for delivery
(SPEC §2.9): ``edit_queued``, ``remove_queued`` and ``move_queued`` change
it; an id taken for delivery (or a prompt's id) is remembered in a second
bounded window so that a late change says ``already_delivered`` rather than
"not found". Every change calls ``on_change`` exactly once, with its cause.
"""

from __future__ import annotations

import bisect
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal, get_args

from steerline.core.errors import (
    AlreadyDeliveredError,
    InvalidValueError,
    MessageTooLargeError,
    QueuedMessageNotFoundError,
    QueueFullError,
)
from steerline.core.events import QueueChange, QueueChangeKind, QueuedMessageView
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
    """Orders messages of equal priority. ``push`` gives each a higher one than
    any before; ``move_queued`` may renumber (see there)."""
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
    """The acknowledgement of ``steer`` / ``follow_up`` (SPEC §2.9)."""

    message: QueuedMessage
    duplicate: bool
    position: int
    """0-based position in its lane when accepted (-1 for a duplicate)."""
    lane: Lane
    """The lane it was queued in (a duplicate: the lane it is in now, or was
    asked for when it is no longer queued)."""
    run_id: str | None = None
    """The run that will take it: the active run, unless none is active or it
    is ending (aborted, or decided to stop); ``None``: a future run. Set by
    ``Agent``; the bare ``Inbox`` knows no runs."""


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
        on_change: Callable[[QueueChange], None] | None = None,
    ) -> None:
        self.limits = limits or InboxLimits()
        self._lanes: dict[Lane, list[QueuedMessage]] = {"steering": [], "follow_up": []}
        self._modes: dict[Lane, DeliveryMode] = {
            "steering": check_delivery_mode(steering_mode),
            "follow_up": check_delivery_mode(follow_up_mode),
        }
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._delivered: OrderedDict[str, None] = OrderedDict()
        """Ids taken for delivery (or delivered as a prompt), bounded like the
        dedup window: a change to one is ``already_delivered``."""
        self._arrivals = 0
        self.on_change = on_change
        """Called once after every change, with its cause (``QueueChange``)."""
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
            return EnqueueResult(message=message, duplicate=True, position=-1, lane=message.lane)
        self._check_size(parts)
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
        self._changed("queued", [message], lane, position)
        return EnqueueResult(message=message, duplicate=False, position=position, lane=lane)

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

    def mark_delivered(self, message_id: str) -> None:
        """Record an id as taken for delivery: ``take`` does for what it takes,
        ``Agent.prompt`` for its prompt (never queued, delivered at once)."""
        self._delivered[message_id] = None
        self._delivered.move_to_end(message_id)
        while len(self._delivered) > self.limits.dedup_window:
            self._delivered.popitem(last=False)

    def is_delivered(self, message_id: str) -> bool:
        """Taken for delivery (within the window); False again if put back."""
        return message_id in self._delivered

    def take(self, lane: Lane) -> list[QueuedMessage]:
        """Remove and return what one delivery point takes from ``lane``."""
        queue = self._lanes[lane]
        if not queue:
            return []
        if self._modes[lane] == "all":
            taken, self._lanes[lane] = queue, []
        else:
            taken = [queue.pop(0)]
        for message in taken:
            self.mark_delivered(message.id)
        self.last_taken = [m.id for m in taken]
        try:
            self._changed("taken", taken, lane, None)
        finally:
            self.last_taken = []
        return taken

    def put_back(self, messages: Iterable[QueuedMessage]) -> None:
        """Return taken messages that were never delivered (a run aborted first).

        Each goes back to its own lane with its id, priority and arrival, so it
        takes its original position. The size limit is not checked: these
        messages were accepted already and must not be lost.
        """
        returned = list(messages)
        for message in returned:
            self._delivered.pop(message.id, None)
            self._insert(message, before_equals=True)
        if returned:
            lanes = {message.lane for message in returned}
            self._changed("returned", returned, lanes.pop() if len(lanes) == 1 else None, None)

    def clear(self, lane: Lane | None = None) -> list[QueuedMessage]:
        """Remove and return the messages of one lane, or of both."""
        lanes = LANES if lane is None else (check_lane(lane),)
        removed: list[QueuedMessage] = []
        for name in lanes:
            removed += self._lanes[name]
            self._lanes[name] = []
        if removed:
            self._changed("cleared", removed, lane, None)
        return removed

    # -- changing one queued message (SPEC §2.9) ----------------------------------
    def edit_queued(
        self,
        message_id: str,
        content: str | list[UserContent] | None = None,
        priority: int | None = None,
    ) -> QueuedMessage:
        """Replace a queued message's content and/or priority; return it.

        A new priority re-sorts it within its lane (its arrival is kept, so
        among equal priorities it keeps its place by arrival). New content
        is checked against the size limit first (``MessageTooLargeError``,
        nothing changed) and replaces the old list (never mutated in place).
        """
        message = self._queued(message_id)
        if content is None and priority is None:
            raise InvalidValueError("nothing to edit: give content and/or priority")
        parts = as_user_content(content) if content is not None else None
        if parts is not None:
            self._check_size(parts)
        queue = self._lanes[message.lane]
        if parts is not None:
            message.content = parts
        if priority is not None and priority != message.priority:
            queue.remove(message)
            message.priority = priority
            position = self._insert(message)
        else:
            position = queue.index(message)
        self._changed("edited", [message], message.lane, position)
        return message

    def remove_queued(self, message_id: str) -> QueuedMessage:
        """Take a queued message out without delivering it; return it.

        Its id stays in the dedup window: sending it again is a duplicate.
        """
        message = self._queued(message_id)
        queue = self._lanes[message.lane]
        position = queue.index(message)
        del queue[position]
        self._changed("removed", [message], message.lane, position)
        return message

    def move_queued(
        self, message_id: str, lane: Lane | None = None, before: str | None = None
    ) -> QueuedMessage:
        """Change a queued message's lane and/or place it before another; return it.

        - ``lane`` (promote a follow-up to a steer, or demote): without
          ``before`` the message joins the target lane as if it arrived now,
          after the messages of its priority. Demoting clears ``interrupt``.
        - ``before``: the id of a message queued in the target lane (``lane``,
          or the message's own lane). The moved message takes that message's
          priority and the place right before it. Arrivals inside that
          priority group are renumbered upwards where there is no gap, so the
          order holds and later pushes still come after.

        ``lane`` equal to the message's own lane and no ``before`` changes
        nothing (still one ``on_change``). ``before`` naming an id that is not
        queued in the target lane, or the message itself, is an
        ``InvalidValueError``.
        """
        message = self._queued(message_id)
        if lane is None and before is None:
            raise InvalidValueError("nothing to move: give lane and/or before")
        target = check_lane(lane) if lane is not None else message.lane
        anchor: QueuedMessage | None = None
        if before is not None:
            if before == message.id:
                raise InvalidValueError("a message cannot be placed before itself")
            anchor = next((m for m in self._lanes[target] if m.id == before), None)
            if anchor is None:
                raise InvalidValueError(
                    f"no message with id {before!r} is queued in the {target} lane"
                )
        source = self._lanes[message.lane]
        if anchor is None and target == message.lane:
            self._changed("moved", [message], target, source.index(message))
            return message
        source.remove(message)
        if target != message.lane:
            message.lane = target
            if target == "follow_up":
                message.interrupt = False
        if anchor is not None:
            position = self._place_before(message, anchor)
        else:
            self._arrivals += 1
            message.arrival = self._arrivals
            position = self._insert(message)
        self._changed("moved", [message], target, position)
        return message

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

    def _queued(self, message_id: str) -> QueuedMessage:
        """The queued message with this id, or the error that says why not."""
        message = self.find(message_id)
        if message is not None:
            return message
        if message_id in self._delivered:
            raise AlreadyDeliveredError(
                f"message {message_id!r} was already taken for delivery; it can no longer change"
            )
        raise QueuedMessageNotFoundError(
            f"no queued message has id {message_id!r} (never queued, or removed or cleared)"
        )

    def _check_size(self, parts: list[UserContent]) -> None:
        size = content_size(parts)
        if size > self.limits.max_message_bytes:
            raise MessageTooLargeError(
                f"message is {size} bytes; the limit is {self.limits.max_message_bytes}"
            )

    def _place_before(self, message: QueuedMessage, anchor: QueuedMessage) -> int:
        """Insert ``message`` (out of every lane) right before ``anchor``; return
        its position. It takes the anchor's priority and the lowest arrival
        after its new predecessor's (``_settle`` renumbers upwards if the
        integers leave no gap)."""
        queue = self._lanes[message.lane]
        index = queue.index(anchor)
        message.priority = anchor.priority
        previous = queue[index - 1] if index > 0 else None
        if previous is not None and previous.priority == anchor.priority:
            message.arrival = previous.arrival + 1
        else:
            message.arrival = anchor.arrival - 1
        queue.insert(index, message)
        self._settle(queue, index)
        return index

    def _insert(self, message: QueuedMessage, *, before_equals: bool = False) -> int:
        """Place ``message`` in its lane by (priority, arrival); return its position.

        Among equal keys it goes last, or first with ``before_equals`` (a
        returned message, which was there before).
        """
        queue = self._lanes[message.lane]
        keys = [m.sort_key() for m in queue]
        find = bisect.bisect_left if before_equals else bisect.bisect_right
        position = find(keys, message.sort_key())
        queue.insert(position, message)
        self._settle(queue, position)
        return position

    def _settle(self, queue: list[QueuedMessage], index: int) -> None:
        """Keep arrivals strictly increasing along the priority group of
        ``queue[index]``, from there on, by renumbering upwards (the order of
        the list is kept). Later pushes still come after the whole group."""
        priority = queue[index].priority
        previous = queue[index - 1] if index > 0 else None
        floor = previous.arrival if previous is not None and previous.priority == priority else None
        for message in queue[index:]:
            if message.priority != priority:
                break
            if floor is not None and message.arrival <= floor:
                message.arrival = floor + 1
            floor = message.arrival
        if floor is not None:
            self._arrivals = max(self._arrivals, floor)

    def _changed(
        self,
        kind: QueueChangeKind,
        messages: list[QueuedMessage],
        lane: Lane | None,
        position: int | None,
    ) -> None:
        if self.on_change is not None:
            self.on_change(
                QueueChange(
                    kind=kind,
                    message_ids=[m.id for m in messages],
                    lane=lane,
                    position=position,
                )
            )
