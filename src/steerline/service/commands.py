"""The one command set of a conversation (SPEC §2.9, §3.3, §3.4).

HTTP routes and WebSocket frames are two encodings of these commands: each
surface only decodes a request into one of them, hands it to
:meth:`steerline.service.conversation.Conversation.execute`, and encodes the
typed result or error it gets back. So both surfaces accept, refuse and
answer alike.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from steerline.core.events import QueuedMessageView
from steerline.core.text import MAX_ID_LENGTH

MAX_PRIORITY = 2**31 - 1

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
Priority = Annotated[int, msgspec.Meta(ge=-MAX_PRIORITY, le=MAX_PRIORITY)]
Text = Annotated[str, msgspec.Meta(min_length=1)]
LaneName = Literal["steering", "follow_up"]


class _Command(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, tag_field="type"):
    pass


class Prompt(_Command, tag="prompt"):
    """Start a run with this message; ``conversation_busy`` while one is active."""

    content: Text
    id: Id | None = None
    priority: Priority = 0


class Steer(_Command, tag="steer"):
    """Interrupt the running turn per the steering policy (``interrupt``: at once)."""

    content: Text
    id: Id | None = None
    priority: Priority = 0
    interrupt: bool = False
    expected_run_id: Id | None = None
    """Race-safe steering: refused with ``run_mismatch`` unless this run is active."""


class FollowUp(_Command, tag="follow_up"):
    """Wait until the agent would stop."""

    content: Text
    id: Id | None = None
    priority: Priority = 0
    expected_run_id: Id | None = None


class Abort(_Command, tag="abort"):
    clear_queues: bool = False


class ClearQueue(_Command, tag="clear_queue"):
    lane: Literal["steering", "follow_up", "all"] = "all"


class SetModes(_Command, tag="set_modes"):
    steering_mode: Literal["one-at-a-time", "all"] | None = None
    follow_up_mode: Literal["one-at-a-time", "all"] | None = None
    steering_policy: Literal["immediate", "after_tool", "after_turn"] | None = None


class EditQueued(_Command, tag="edit_queued"):
    id: Id
    content: Text | None = None
    priority: Priority | None = None


class RemoveQueued(_Command, tag="remove_queued"):
    id: Id


class MoveQueued(_Command, tag="move_queued"):
    """Change lane (promote a follow-up to a steer, or demote) and/or place
    before another queued message of the target lane."""

    id: Id
    lane: LaneName | None = None
    before: Id | None = None


class SendNow(_Command, tag="send_now"):
    """Start a run with the kept queue (idle conversations only)."""


Command = (
    Prompt
    | Steer
    | FollowUp
    | Abort
    | ClearQueue
    | SetModes
    | EditQueued
    | RemoveQueued
    | MoveQueued
    | SendNow
)


COMMAND_TYPES = frozenset(kind.__struct_config__.tag for kind in Command.__args__)
"""The ``type`` of every command (WebSocket frames name them)."""


def decode_command(frame: dict[str, object]) -> Command:
    """A command from a decoded JSON object (``msgspec.ValidationError`` if not one)."""
    command: Command = msgspec.convert(frame, type=Command, strict=True)
    return command


# -- results ---------------------------------------------------------------------
class QueueView(msgspec.Struct, kw_only=True):
    """Both lanes, each message with its whole content."""

    steering: list[QueuedMessageView]
    follow_up: list[QueuedMessageView]


class Accepted(msgspec.Struct, kw_only=True):
    """The acknowledgement of a message (SPEC §2.9): where it went and which
    run will take it (``run_id`` null: a future run)."""

    conversation_id: str
    message_id: str
    duplicate: bool
    queued: bool
    """False when it started a run (or starts the next one) as its prompt."""
    lane: LaneName | None
    position: int | None
    run_id: str | None
    queue: QueueView


class QueueChanged(msgspec.Struct, kw_only=True):
    """The result of a queue edit, removal, move, clear or abort."""

    conversation_id: str
    message: QueuedMessageView | None = None
    removed: list[QueuedMessageView] = msgspec.field(default_factory=list)
    queue: QueueView


class Modes(msgspec.Struct, kw_only=True):
    conversation_id: str
    steering_mode: str
    follow_up_mode: str
    steering_policy: str


class Started(msgspec.Struct, kw_only=True):
    conversation_id: str
    run_id: str
    queue: QueueView


Result = Accepted | QueueChanged | Modes | Started
