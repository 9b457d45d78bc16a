"""Every error steerline raises on purpose, in one place.

::

    SteerlineError                  (kind)          code
    ├── AgentBusyError              CONFLICT        agent_busy
    ├── RunMismatchError            CONFLICT        run_mismatch
    ├── InboxError                  INVALID         inbox_error
    │   ├── QueueFullError          CONFLICT        queue_full
    │   └── MessageTooLargeError    TOO_LARGE       message_too_large
    ├── QueuedMessageNotFoundError  NOT_FOUND       queued_message_not_found
    ├── AlreadyDeliveredError       CONFLICT        already_delivered
    ├── InvalidValueError           INVALID         invalid_value
    ├── ModelError                  UPSTREAM        model_error
    │   └── KeyRefusedError         UPSTREAM        model_error
    ├── ConversationNotFoundError   NOT_FOUND       conversation_not_found
    ├── ConversationExistsError     CONFLICT        conversation_exists
    ├── ConversationBusyError       CONFLICT        conversation_busy
    ├── ConversationUnloadedError   UNAVAILABLE     conversation_unloaded
    ├── UnknownAgentError           NOT_FOUND       unknown_agent
    ├── TooManyRunsError            RATE_LIMITED    too_many_runs
    ├── RetentionError              CONFLICT        resume_too_old
    ├── StorageUnavailableError     UNAVAILABLE     storage_unavailable
    ├── StoreLockedError            UNAVAILABLE     store_locked
    ├── ConfigError                 INVALID         config_error
    │   └── EndpointCheckError      UPSTREAM        config_error
    └── PortInUseError              CONFLICT        port_in_use

Every error carries a stable ``code`` string (what went wrong, on the wire as
``{"error": {"code", "message"}}``) and a :class:`ErrorKind` (which sort of
failure it is). The server turns the kind into an HTTP status with one small
dict (``steerline.server.errors``), never a table of classes; a new error only
picks its kind here. ``HTTPError`` (a route's explicit status) lives in the
server, the one error outside this module.

Several classes are also importable from where they used to be defined
(``steerline.log.base``, ``steerline.service.*``, ``steerline.config``,
``steerline.cli.serve``, ``steerline.models.base``); new code imports them
from here.
"""

from __future__ import annotations

import enum
from typing import Literal


class ErrorKind(enum.StrEnum):
    """Which sort of failure an error is; the server maps it to a status."""

    INVALID = "invalid"
    """The request or an argument is wrong; retrying it unchanged fails again."""
    UNAUTHORIZED = "unauthorized"
    """No or a refused credential."""
    FORBIDDEN = "forbidden"
    """The credential is valid but not allowed this."""
    NOT_FOUND = "not_found"
    """What was named does not exist (or is not the caller's)."""
    CONFLICT = "conflict"
    """The current state forbids it (busy, exists, already delivered, full)."""
    TOO_LARGE = "too_large"
    """Over a size limit."""
    RATE_LIMITED = "rate_limited"
    """Over a concurrency or rate limit; retry later."""
    UNAVAILABLE = "unavailable"
    """Temporarily unable (storage down, unloaded, starting); retry later."""
    UPSTREAM = "upstream"
    """A model endpoint failed or refused."""


class SteerlineError(Exception):
    """Base of every error steerline raises on purpose."""

    code: str = "steerline_error"
    kind: ErrorKind = ErrorKind.INVALID

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# -- agent and inbox ------------------------------------------------------------
class AgentBusyError(SteerlineError):
    """``prompt()`` was called while a run is active (use steer / follow_up)."""

    code = "agent_busy"
    kind = ErrorKind.CONFLICT


class RunMismatchError(SteerlineError):
    """A steer or follow-up carried ``expected_run_id`` and that run is not
    the one that would take it (it ended, is ending, or another started).
    Nothing was queued."""

    code = "run_mismatch"
    kind = ErrorKind.CONFLICT

    def __init__(self, message: str, *, expected: str, actual: str | None) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual
        """The run that would take the message now (``None``: no run would)."""


class QueuedMessageNotFoundError(SteerlineError, LookupError):
    """No queued message has this id: never accepted, fallen out of the dedup
    window, or removed (``remove``, ``clear``) before it was delivered."""

    code = "queued_message_not_found"
    kind = ErrorKind.NOT_FOUND


class AlreadyDeliveredError(SteerlineError):
    """The message was queued but has been taken for delivery (it is in the
    context, or a run holds it for its next turn): it can no longer change."""

    code = "already_delivered"
    kind = ErrorKind.CONFLICT


class InboxError(SteerlineError):
    """The inbox refused a message; nothing already queued was touched."""

    code = "inbox_error"
    kind = ErrorKind.INVALID


class QueueFullError(InboxError):
    code = "queue_full"
    kind = ErrorKind.CONFLICT


class MessageTooLargeError(InboxError):
    code = "message_too_large"
    kind = ErrorKind.TOO_LARGE


class InvalidValueError(SteerlineError, ValueError):
    """An argument outside its allowed set (mode, policy, lane, ...)."""

    code = "invalid_value"
    kind = ErrorKind.INVALID


# -- models ---------------------------------------------------------------------
class ModelError(SteerlineError):
    """A model call failed.

    ``transient`` errors (rate limits, 5xx, connection resets, timeouts) are
    retried with backoff by the runtime; others end the run with
    ``stop_reason="error"``. ``retry_after`` (seconds) is honoured when the
    provider sent one.
    """

    code = "model_error"
    kind = ErrorKind.UPSTREAM

    def __init__(
        self, message: str, *, transient: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.transient = transient
        self.retry_after = retry_after


class KeyRefusedError(ModelError):
    """The endpoint answered 401/403: it refused the API key (it is reachable).

    ``status`` is the HTTP status, ``detail`` what the endpoint said."""

    def __init__(self, message: str, *, status: int, detail: str) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


# -- conversations and the service ----------------------------------------------
class ConversationNotFoundError(SteerlineError):
    code = "conversation_not_found"
    kind = ErrorKind.NOT_FOUND


class ConversationExistsError(SteerlineError):
    """The id is in use, or was used by a conversation since deleted."""

    code = "conversation_exists"
    kind = ErrorKind.CONFLICT


class ConversationBusyError(SteerlineError):
    """``mode=reject`` on a conversation that is running (HTTP 409)."""

    code = "conversation_busy"
    kind = ErrorKind.CONFLICT


class ConversationUnloadedError(SteerlineError):
    """This object was unloaded (evicted or deleted); fetch the conversation again."""

    code = "conversation_unloaded"
    kind = ErrorKind.UNAVAILABLE


class UnknownAgentError(SteerlineError):
    """No agent of this name is offered."""

    code = "unknown_agent"
    kind = ErrorKind.NOT_FOUND


class TooManyRunsError(SteerlineError):
    """The tenant already runs ``max_running_per_tenant`` conversations (HTTP 429)."""

    code = "too_many_runs"
    kind = ErrorKind.RATE_LIMITED


# -- the event log --------------------------------------------------------------
class RetentionError(SteerlineError):
    """Asked for events older than the retained log (HTTP 409)."""

    code = "resume_too_old"
    kind = ErrorKind.CONFLICT


class StorageUnavailableError(SteerlineError):
    """The store cannot write right now (disk full, I/O error); HTTP 503.

    Nothing already accepted is lost: what was queued for the store stays
    queued and is written, in order, as soon as the store can write again.
    """

    code = "storage_unavailable"
    kind = ErrorKind.UNAVAILABLE


class StoreLockedError(SteerlineError):
    """Another process owns this store (SPEC §4: one process per sqlite file)."""

    code = "store_locked"
    kind = ErrorKind.UNAVAILABLE


# -- configuration and start-up -------------------------------------------------
class ConfigError(SteerlineError):
    """The configuration is invalid; the message names the file, agent and field."""

    code = "config_error"
    kind = ErrorKind.INVALID


CheckFailure = Literal["unreachable", "key_refused", "model_not_served"]


class EndpointCheckError(ConfigError):
    """:func:`steerline.config.check_agent` found the endpoint unusable;
    ``reason`` says how."""

    kind = ErrorKind.UPSTREAM

    def __init__(self, message: str, reason: CheckFailure) -> None:
        super().__init__(message)
        self.reason: CheckFailure = reason


class PortInUseError(SteerlineError):
    """The server cannot bind its address (in use, or the host does not resolve)."""

    code = "port_in_use"
    kind = ErrorKind.CONFLICT
