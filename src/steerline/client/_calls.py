"""The request of each API method, built once for both clients (no I/O).

Each function returns a :class:`Call`; :meth:`AsyncClient._call` and
:meth:`Client._call` send it and hand back :func:`result` of the answer.
Paths are relative to the ``/api/v1`` prefix (docs/server.md has the table).
"""

from __future__ import annotations

import importlib.metadata
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from steerline.client._errors import (
    ConnectionFailed,
    InvalidResponse,
    decode_json,
    error_from_response,
)
from steerline.client._sansio import conversation_path

Method = Literal["GET", "POST", "PATCH", "DELETE"]


@dataclass(frozen=True, slots=True)
class Call:
    method: Method
    path: str
    json: dict[str, Any] | None = None
    params: dict[str, str | int] | None = None


def result(status: int, headers: Mapping[str, str], body: bytes) -> Any:
    """The JSON of a 2xx answer (``None`` for 204), or the typed error."""
    if status >= 400:
        raise error_from_response(status, headers, body)
    if status == 204 or not body:
        return None
    return decode_json(body)


def json_object(value: Any) -> dict[str, Any]:
    """The answer of a call that returns a JSON object (``InvalidResponse`` if not)."""
    if not isinstance(value, dict):
        raise InvalidResponse(f"expected a JSON object, the server answered {value!r:.200}")
    return value


def connection_failed(call: Call, exc: Exception) -> ConnectionFailed:
    """What a plain call raises when its request could not be sent or answered."""
    return ConnectionFailed(f"{call.method} {call.path}: {type(exc).__name__}: {exc}")


def _fields(**values: Any) -> dict[str, Any]:
    """The JSON body: fields left ``None`` are not sent."""
    return {name: value for name, value in values.items() if value is not None}


def new_message_id() -> str:
    return f"msg-{uuid.uuid4().hex}"


def new_conversation_id() -> str:
    return f"conv-{uuid.uuid4().hex}"


def stream_body(
    query: str,
    conversation_id: str | None,
    agent_name: str | None,
    mode: str,
    message_id: str | None,
) -> dict[str, Any]:
    """The ``POST /agents/stream`` body, with the ids that make a re-POST idempotent.

    Without a ``conversation_id`` the SDK names the new conversation itself:
    the server creates an unknown id, and a re-POST after a drop that came
    before the first event then finds the same conversation (and the same
    ``message_id`` in it) instead of creating a second one.
    """
    return _fields(
        query=query,
        conversation_id=conversation_id or new_conversation_id(),
        agent_name=agent_name,
        mode=mode,
        message_id=message_id or new_message_id(),
    )


def message(
    conversation_id: str,
    content: str,
    mode: str,
    id: str | None,
    priority: int,
    expected_run_id: str | None,
) -> Call:
    body = _fields(
        content=content, mode=mode, id=id, priority=priority, expected_run_id=expected_run_id
    )
    return Call("POST", conversation_path(conversation_id, "messages"), body)


def abort(conversation_id: str, clear_queues: bool) -> Call:
    return Call("POST", conversation_path(conversation_id, "abort"), {"clear_queues": clear_queues})


def queue(conversation_id: str) -> Call:
    return Call("GET", conversation_path(conversation_id, "queue"))


def edit_queued(
    conversation_id: str,
    message_id: str,
    *,
    content: str | None = None,
    priority: int | None = None,
    lane: str | None = None,
    before: str | None = None,
) -> Call:
    body = _fields(content=content, priority=priority, lane=lane, before=before)
    return Call("PATCH", conversation_path(conversation_id, "queue", message_id), body)


def remove_queued(conversation_id: str, message_id: str) -> Call:
    return Call("DELETE", conversation_path(conversation_id, "queue", message_id))


def send_now(conversation_id: str) -> Call:
    return Call("POST", conversation_path(conversation_id, "queue", "send"))


def clear_queue(conversation_id: str, lane: str) -> Call:
    return Call("DELETE", conversation_path(conversation_id, "queue"), params={"lane": lane})


def conversation(conversation_id: str) -> Call:
    return Call("GET", conversation_path(conversation_id))


def set_modes(
    conversation_id: str,
    steering_mode: str | None,
    follow_up_mode: str | None,
    steering_policy: str | None,
) -> Call:
    body = _fields(
        steering_mode=steering_mode,
        follow_up_mode=follow_up_mode,
        steering_policy=steering_policy,
    )
    return Call("PATCH", conversation_path(conversation_id), body)


def history(conversation_id: str) -> Call:
    return Call("GET", conversation_path(conversation_id, "history"))


def conversations(limit: int, offset: int) -> Call:
    return Call("GET", "/conversations", params={"limit": limit, "offset": offset})


def delete_conversation(conversation_id: str) -> Call:
    return Call("DELETE", conversation_path(conversation_id))


def agents() -> Call:
    return Call("GET", "/agents")


def api_base(base_url: str) -> str:
    """``http://host:port`` → ``http://host:port/api/v1/`` (given with the prefix: kept)."""
    base = base_url.rstrip("/")
    if not base.endswith("/api/v1"):
        base += "/api/v1"
    return base + "/"


def _version() -> str:
    try:
        return importlib.metadata.version("steerline")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a source checkout
        return "0"


USER_AGENT = f"steerline-client/{_version()}"


def auth_headers(api_key: str | None) -> dict[str, str]:
    headers = {"User-Agent": USER_AGENT}
    if api_key is not None:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers
