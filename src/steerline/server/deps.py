"""Dependencies shared by the routers of :mod:`steerline.server.routes`.

Handlers reach the app's :class:`ServerState` through the request
(``request.app.state.steerline``), never through closures, so a router is a
plain module that :func:`steerline.server.app.create_app` includes.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec
from fastapi import Depends, Request, WebSocket
from starlette.requests import HTTPConnection

from steerline.server.errors import HTTPError
from steerline.server.openapi import CONVERSATION_ID_PATTERN
from steerline.server.state import ServerState
from steerline.service.commands import Command
from steerline.service.service import ConversationHandle

API = "/api/v1"
"""Prefix of the conversation API (``/healthz`` and ``/metrics`` sit outside it)."""

CONVERSATION_ID = re.compile(CONVERSATION_ID_PATTERN)

MAX_INT = 2**63 - 1
"""Largest integer a client may send (event ids, offsets): storage integers are 64-bit."""
MAX_PRIORITY = 2**31 - 1
"""Message priorities are within ±MAX_PRIORITY."""
_EVENT_ID = re.compile(r"[0-9]{1,19}", re.ASCII)


def server_state(connection: HTTPConnection) -> ServerState:
    """The app's state, for a request or a WebSocket."""
    state: ServerState = connection.app.state.steerline
    return state


def client_address(connection: Request | WebSocket) -> str | None:
    """The client's address (behind a trusted proxy, the one it forwarded)."""
    return connection.client.host if connection.client else None


async def tenant(request: Request) -> str:
    """Authenticate the request and charge it to the tenant's rate limit.

    ``async``: FastAPI runs a sync dependency in the thread pool, a hop per
    request for work that never blocks.
    """
    state = server_state(request)
    name = state.gate.authenticate(request.headers, request.query_params, client_address(request))
    state.gate.check_rate(name)
    return name


Tenant = Annotated[str, Depends(tenant)]


def check_conversation_id(conversation_id: str) -> str:
    """Refuse ``.`` and ``..``: clients normalise such path segments away
    (``/conversations/../stream`` becomes ``/stream``), so no URL could reach them."""
    if conversation_id in (".", ".."):
        raise HTTPError(
            400,
            "invalid_value",
            f"conversation id {conversation_id!r} is a dot segment, which URLs cannot carry",
        )
    return conversation_id


def check_body_conversation_id(conversation_id: str, field: str) -> str:
    """A conversation id given in a request body (a new conversation may take
    it): the characters of a path segment, and not a dot segment."""
    # fullmatch: "$" of match() also matches before a final newline
    if not CONVERSATION_ID.fullmatch(conversation_id):
        raise HTTPError(400, "invalid_value", f"{field} has invalid characters")
    return check_conversation_id(conversation_id)


def check_on_disconnect(value: str) -> None:
    """``?on_disconnect=``: what a client leaving does to the run (every streaming route)."""
    if value not in ("continue", "cancel"):
        raise HTTPError(400, "invalid_value", "on_disconnect must be continue or cancel")


async def conversation(
    conversation_id: str, request: Request, tenant_name: Tenant
) -> ConversationHandle:
    """The tenant's conversation named by the path (404 ``conversation_not_found``)."""
    check_conversation_id(conversation_id)
    return await server_state(request).conversations.open(tenant_name, conversation_id)


Conv = Annotated[ConversationHandle, Depends(conversation)]


def parse_event_id(value: str | None, source: str) -> int | None:
    if value is None:
        return None
    value = value.strip()
    # ASCII digits only: str.isdigit() also accepts "²", which int() refuses
    if not _EVENT_ID.fullmatch(value) or int(value) > MAX_INT:
        raise HTTPError(400, "invalid_event_id", f"{source} must be an integer from 0 to {MAX_INT}")
    return int(value)


def resume_point(request: Request) -> int | None:
    """``Last-Event-ID`` or ``?after=`` (the header wins: a reconnecting
    EventSource repeats its original URL, ``after=`` included)."""
    header = parse_event_id(request.headers.get("last-event-id"), "Last-Event-ID")
    if header is not None:
        return header
    return parse_event_id(request.query_params.get("after"), "after")


async def execute(request: Request, conv: ConversationHandle, command: Command) -> dict[str, Any]:
    """Run one command of the conversation's command set (as WebSocket frames do)."""
    settings = server_state(request).settings
    result = await conv.execute(command, auto_continue=settings.service.auto_continue)
    encoded: dict[str, Any] = msgspec.to_builtins(result)
    return encoded
