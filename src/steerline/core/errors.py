"""The exception tree of steerline.

::

    SteerlineError
    ├── AgentBusyError          a run is already active on this agent
    ├── RunMismatchError        a steer named a run that is not the active one
    ├── InboxError              a message was refused by the inbox
    │   ├── QueueFullError
    │   └── MessageTooLargeError
    ├── QueuedMessageNotFoundError  no queued message has this id
    ├── AlreadyDeliveredError   the message left the queue for delivery
    ├── InvalidValueError       an unknown mode, policy or lane name
    └── ModelError              the model failed (``transient`` says whether to retry)

Every error carries a stable ``code`` string: the server turns it into
``{"error": {"code", "message"}}`` without a lookup table.
"""

from __future__ import annotations


class SteerlineError(Exception):
    """Base of every error steerline raises on purpose."""

    code = "steerline_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class AgentBusyError(SteerlineError):
    """``prompt()`` was called while a run is active (use steer / follow_up)."""

    code = "agent_busy"


class RunMismatchError(SteerlineError):
    """A steer or follow-up carried ``expected_run_id`` and that run is not
    the one that would take it (it ended, is ending, or another started).
    Nothing was queued."""

    code = "run_mismatch"

    def __init__(self, message: str, *, expected: str, actual: str | None) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual
        """The run that would take the message now (``None``: no run would)."""


class QueuedMessageNotFoundError(SteerlineError, LookupError):
    """No queued message has this id: never accepted, fallen out of the dedup
    window, or removed (``remove``, ``clear``) before it was delivered."""

    code = "queued_message_not_found"


class AlreadyDeliveredError(SteerlineError):
    """The message was queued but has been taken for delivery (it is in the
    context, or a run holds it for its next turn): it can no longer change."""

    code = "already_delivered"


class InboxError(SteerlineError):
    """The inbox refused a message; nothing already queued was touched."""

    code = "inbox_error"


class QueueFullError(InboxError):
    code = "queue_full"


class MessageTooLargeError(InboxError):
    code = "message_too_large"


class InvalidValueError(SteerlineError, ValueError):
    """An argument outside its allowed set (mode, policy, lane, ...)."""

    code = "invalid_value"


class ModelError(SteerlineError):
    """A model call failed.

    ``transient`` errors (rate limits, 5xx, connection resets, timeouts) are
    retried with backoff by the runtime; others end the run with
    ``stop_reason="error"``. ``retry_after`` (seconds) is honoured when the
    provider sent one.
    """

    code = "model_error"

    def __init__(
        self, message: str, *, transient: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.transient = transient
        self.retry_after = retry_after
