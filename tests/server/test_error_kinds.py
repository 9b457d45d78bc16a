"""Issue 10: one error module; the server maps an error's kind, not its class, to a status."""

from __future__ import annotations

import inspect

import pytest

import steerline.core.errors as errors
from steerline.core.errors import ErrorKind, SteerlineError
from steerline.server.errors import STATUS, HTTPError, status_for, steerline_error_response

# The status and code of every error on the wire before issue 10: unchanged.
WIRE = {
    errors.QueuedMessageNotFoundError: (404, "queued_message_not_found"),
    errors.AlreadyDeliveredError: (409, "already_delivered"),
    errors.ConversationNotFoundError: (404, "conversation_not_found"),
    errors.UnknownAgentError: (404, "unknown_agent"),
    errors.ConversationBusyError: (409, "conversation_busy"),
    errors.AgentBusyError: (409, "agent_busy"),
    errors.ConversationExistsError: (409, "conversation_exists"),
    errors.RetentionError: (409, "resume_too_old"),
    errors.MessageTooLargeError: (413, "message_too_large"),
    errors.QueueFullError: (409, "queue_full"),
    errors.InboxError: (400, "inbox_error"),
    errors.InvalidValueError: (400, "invalid_value"),
    errors.TooManyRunsError: (429, "too_many_runs"),
    errors.StorageUnavailableError: (503, "storage_unavailable"),
    errors.StoreLockedError: (503, "store_locked"),
    errors.ConversationUnloadedError: (503, "conversation_unloaded"),
    errors.ConfigError: (400, "config_error"),
}


def _make(cls: type[SteerlineError]) -> SteerlineError:
    if cls is errors.RunMismatchError:
        return errors.RunMismatchError("m", expected="a", actual=None)
    return cls("m")


@pytest.mark.parametrize("cls", list(WIRE), ids=lambda c: c.__name__)
def test_status_and_code_are_unchanged(cls: type[SteerlineError]) -> None:
    assert (status_for(_make(cls)), cls.code) == WIRE[cls]


def test_run_mismatch_is_409() -> None:
    assert status_for(_make(errors.RunMismatchError)) == 409


def test_every_error_lives_in_core_errors_and_has_a_mapped_kind() -> None:
    classes = [
        c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, SteerlineError)
    ]
    assert len(classes) >= 20
    for cls in classes:
        assert cls.__module__ == "steerline.core.errors", cls
        assert isinstance(cls.kind, ErrorKind)
        assert cls.kind in STATUS
        assert cls.__name__ in (errors.__doc__ or ""), f"{cls.__name__} missing from the tree"
    assert set(STATUS) == set(ErrorKind)


def test_old_import_locations_still_work() -> None:
    from steerline.cli.serve import PortInUseError
    from steerline.config import ConfigError, EndpointCheckError
    from steerline.log.base import (
        ConversationExistsError,
        RetentionError,
        StorageUnavailableError,
        StoreLockedError,
    )
    from steerline.models.base import KeyRefusedError
    from steerline.service.agents import UnknownAgentError
    from steerline.service.conversation import ConversationBusyError, ConversationUnloadedError
    from steerline.service.service import ConversationNotFoundError, TooManyRunsError

    for cls in (
        PortInUseError, ConfigError, EndpointCheckError, ConversationExistsError,
        RetentionError, StorageUnavailableError, StoreLockedError, KeyRefusedError,
        UnknownAgentError, ConversationBusyError, ConversationUnloadedError,
        ConversationNotFoundError, TooManyRunsError,
    ):  # fmt: skip
        assert getattr(errors, cls.__name__) is cls


def test_http_error_keeps_its_status_and_gets_a_kind() -> None:
    exc = HTTPError(401, "unauthorized", "no", {"WWW-Authenticate": "Bearer"})
    assert status_for(exc) == 401
    assert exc.kind is ErrorKind.UNAUTHORIZED
    assert HTTPError(418, "teapot", "x").kind is ErrorKind.INVALID
    response = steerline_error_response(HTTPError(503, "unavailable", "later"))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"


def test_retry_after_on_kinds_that_are_temporary() -> None:
    assert steerline_error_response(errors.TooManyRunsError("x")).headers["Retry-After"] == "1"
    assert "retry-after" not in steerline_error_response(errors.QueueFullError("x")).headers
