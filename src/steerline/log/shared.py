"""What a log shared by several server processes adds to :class:`EventLog`.

With ``memory://`` and ``sqlite://`` one process owns the store and runs
every conversation. A shared store (``redis://``) lets any number of
processes serve the same conversations; each conversation is run by at most
one of them at a time, the holder of its *lease*, and only that process's
writes reach the conversation (fenced by an epoch token: a process whose
lease was lost or taken over has every later write refused).

The service layer uses this interface to decide, per request, whether it
runs the conversation here (it holds or takes the lease) or hands the
command to the process that does (a control request through the store).
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from steerline.log.base import StoredEvent


class LeaseState(enum.Enum):
    ACQUIRED = "acquired"
    """This process holds the lease (it just took it, or already held it)."""
    HELD = "held"
    """Another process holds it."""
    GONE = "gone"
    """No such conversation (or it was deleted)."""


@dataclass(frozen=True, slots=True)
class Lease:
    state: LeaseState
    holder: str | None = None
    """The owner id of the process holding it (for ``HELD``)."""
    taken_over: bool = False
    """For ``ACQUIRED``: the lease was free, so this process just became the
    owner (the conversation's state must be loaded from the store now)."""


@dataclass(frozen=True, slots=True)
class ControlRequest:
    """A command another process asks the lease holder to run."""

    conversation_id: str
    request_id: str
    body: bytes
    reply_to: str
    entry_id: str


ControlHandler = Callable[[ControlRequest], Awaitable[None]]
ForeignHandler = Callable[[str, list[StoredEvent]], None]
"""Told of events of a conversation held here that came into its log from
elsewhere (a message another process queued), in log order; it may also be
told of events this process wrote (it ignores what it knows)."""


class IntakeOutcome(enum.Enum):
    QUEUED = "queued"
    """Another process runs the conversation: the message is queued and logged."""
    ACQUIRED = "acquired"
    """The lease was free and is now held here: run the request here."""
    MINE = "mine"
    """This process already holds the lease: run the request here."""
    IDLE = "idle"
    """Another process holds the lease of the idle conversation: whether the
    message starts a run is its decision (send it a control request)."""
    DUPLICATE = "duplicate"
    """The id is in the conversation's dedup window: nothing changed."""
    FULL = "full"
    """The conversation's queue is at its limit: nothing changed."""
    GONE = "gone"


@dataclass(frozen=True, slots=True)
class Intake:
    """A message to queue while another process runs its conversation.

    The stored item and the ``message_queued`` envelope come in parts
    around the values only the store knows when it writes them: the item's
    ``arrival`` (after every queued message's) and ``since`` (the seq before
    the message), the envelope's ``position`` (its place in its lane).
    """

    message_id: str
    lane: str
    priority: int
    item: tuple[bytes, bytes, bytes]
    envelope: tuple[bytes, bytes]
    """Unsealed (no ``seq``), like :meth:`EventLog.append`'s."""
    max_queued: int
    queue_collection: str
    seen_collection: str


@dataclass(frozen=True, slots=True)
class IntakeResult:
    outcome: IntakeOutcome
    seq: int = 0
    """``QUEUED``: the seq of its ``message_queued``."""
    position: int = -1
    run_id: str | None = None
    """``QUEUED``: the run the record names as active."""
    acceptance: bytes = b""
    """``DUPLICATE``: what the dedup window stores for the id."""
    queue: tuple[bytes, ...] = ()
    """``QUEUED``: the stored queue items after it, in insertion order."""


class NotHeldError(Exception):
    """The conversation has no lease holder: take the lease and run it here."""


class SharedLog(abc.ABC):
    """The coordination part of a log shared by several processes."""

    owner: str
    """This process's owner id (lease values and control replies name it)."""

    lease_ttl: float
    """Seconds a lease lives without renewal (a dead owner's runs end within it)."""

    @abc.abstractmethod
    async def acquire_lease(self, conversation_id: str) -> Lease:
        """Hold the conversation's lease here if it is free (or already ours)."""

    @abc.abstractmethod
    async def release_lease(self, conversation_id: str) -> bool:
        """Give the lease up after writing what is queued; False while control
        requests wait for this process (it must answer them first) or when
        the lease was lost anyway."""

    @abc.abstractmethod
    def holds(self, conversation_id: str) -> bool:
        """Whether this process holds the lease (as far as it knows)."""

    @abc.abstractmethod
    def set_handlers(
        self,
        on_control: ControlHandler,
        on_lease_lost: Callable[[str], None],
        on_foreign: ForeignHandler | None = None,
    ) -> None:
        """``on_control`` runs each control request for a conversation held
        here, in order per conversation; ``on_lease_lost`` is told when a
        write was refused or a renewal found the lease gone; ``on_foreign``
        of what other processes appended to a conversation held here."""

    @abc.abstractmethod
    async def send_control(self, conversation_id: str, body: bytes, patience: float) -> bytes:
        """Ask the lease holder to run ``body``; its reply within ``patience`` seconds.

        ``NotHeldError`` when nobody holds the lease (checked atomically with
        the request being queued), or when the holder's lease expired with
        the request unanswered (the holder died): the request is withdrawn
        first, so nobody runs it, and the caller may take the lease and run
        it itself. ``TimeoutError`` when no reply came in time (or the holder
        ran it and its answer was lost).
        """

    @abc.abstractmethod
    async def intake(self, conversation_id: str, intake: Intake) -> IntakeResult:
        """Queue and log a message in one atomic step if another process runs
        the conversation; else take a free lease, or say who decides."""

    @abc.abstractmethod
    async def claim(self, conversation_id: str, collection: str, message_id: str) -> bool:
        """Add ``message_id`` to the dedup window item ``collection`` at once
        (True), unless it is there already (False): atomic with :meth:`intake`."""

    @abc.abstractmethod
    async def reply(self, request: ControlRequest, body: bytes) -> None:
        """Answer a control request (after its effects are written)."""

    @abc.abstractmethod
    async def poll_control(self) -> None:
        """Pick up control requests waiting for leases held here whose
        wake-up was lost (the requester died between queueing and waking)."""

    @abc.abstractmethod
    async def orphaned_runs(self) -> list[str]:
        """Conversations recorded as running whose lease nobody holds."""
