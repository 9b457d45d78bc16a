"""Vercel AI SDK UI message stream v1 (SPEC §3.5): ``useChat``'s endpoints.

- ``POST /api/v1/vercel/chat``: ``DefaultChatTransport.sendMessages``. The
  body's ``id`` is the conversation (created with that id when new); the last
  user message's text parts are the prompt, sent with the UI message's id as
  the message id in ``auto`` mode (a busy conversation queues it as a
  follow-up; a repeated id answers the same stream again). The answer is the
  run that handles it, as UI message stream chunks.
- ``GET /api/v1/vercel/chat/{id}/stream``: ``reconnectToStream`` (the default
  URL ``useChat({resume: true})`` asks). 204 when no run is active (also for
  a chat the tenant has no conversation of yet: a new chat's page mounts and
  reconnects before its first message creates the conversation), else the
  active run from its ``start`` chunk (the run's ``task_started``) to its
  ``finish``; ``?startIndex=N`` continues exactly after chunk N.

Auth, tenants, stream limits and ``on_disconnect`` are the native routes'.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from steerline.core.errors import ConversationNotFoundError
from steerline.log.base import EventLog
from steerline.server.deps import (
    API,
    MAX_INT,
    Tenant,
    check_body_conversation_id,
    check_on_disconnect,
    server_state,
)
from steerline.server.errors import HTTPError
from steerline.server.openapi import CONVERSATION_ID_PATTERN
from steerline.server.routes.streams import StreamingEndpoint, accept_message, stream_response
from steerline.transports.tail import StreamPlan
from steerline.transports.vercel import STREAM_HEADERS, VercelEncoder
from steerline.wire.envelope import EventName

router = APIRouter(prefix=f"{API}/vercel", tags=["vercel"])

_INDEX = re.compile(r"[0-9]{1,19}", re.ASCII)


class UIMessage(BaseModel):
    """A ``UIMessage`` of the AI SDK; only ``id``, ``role`` and text parts are read."""

    model_config = ConfigDict(extra="allow")
    id: str = Field(min_length=1, max_length=200)
    role: str
    parts: list[dict[str, Any]] = Field(default_factory=list)


class ChatRequest(BaseModel):
    """``useChat``'s request body (``DefaultChatTransport``); extra fields are ignored."""

    model_config = ConfigDict(extra="allow")
    id: str = Field(
        description="The chat id = the conversation id (created when new)",
        json_schema_extra={"pattern": CONVERSATION_ID_PATTERN, "maxLength": 128},
    )
    messages: list[UIMessage] = Field(min_length=1)
    trigger: str | None = None
    messageId: str | None = None
    agent_name: str | None = Field(
        default=None, description="The agent of a new conversation (default: the default agent)"
    )


def _prompt(body: ChatRequest) -> tuple[str, str]:
    """The last user message: its id and the text of its text parts."""
    for message in reversed(body.messages):
        if message.role != "user":
            continue
        texts = [
            part["text"]
            for part in message.parts
            if part.get("type") == "text" and isinstance(part.get("text"), str)
        ]
        text = "\n".join(texts)
        if not text.strip():
            raise HTTPError(400, "invalid_value", "the last user message has no text")
        return message.id, text
    raise HTTPError(400, "invalid_value", "messages has no user message")


@router.post(
    "/chat",
    response_model=None,
    responses={200: {"content": {"text/event-stream": {}}, "description": "UI message stream"}},
)
async def chat(
    request: Request,
    body: ChatRequest,
    tenant_name: Tenant,
    on_disconnect: str = "continue",
) -> StreamingEndpoint:
    """Send the last user message and stream the run that handles it (UI message stream v1)."""
    state = server_state(request)
    check_on_disconnect(on_disconnect)  # before the message is accepted
    check_body_conversation_id(body.id, "id (the conversation id)")
    message_id, text = _prompt(body)
    conv, plan = await accept_message(
        state, tenant_name, body.id, body.agent_name, text, mode="auto", message_id=message_id
    )
    return stream_response(
        request,
        state,
        tenant_name,
        conv,
        plan,
        on_disconnect,
        encoder=VercelEncoder(),
        headers=STREAM_HEADERS,
    )


@router.get(
    "/chat/{conversation_id}/stream",
    response_model=None,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "UI message stream"},
        204: {"description": "No run is active"},
    },
)
async def chat_stream(
    request: Request,
    conversation_id: str,
    tenant_name: Tenant,
    start_index: Annotated[
        str | None,
        Query(
            alias="startIndex",
            description="Continue after this chunk index (0-based)",
            json_schema_extra={"pattern": r"^[0-9]{1,19}$"},
        ),
    ] = None,
    on_disconnect: str = "continue",
) -> Response | StreamingEndpoint:
    """Reconnect to the active run: from its ``start`` chunk (or after chunk
    ``startIndex``) to its ``finish``; 204 when no run is active, or no
    conversation of the tenant has this id (not yet created: ``useChat``
    reconnects as a new chat's page mounts; another tenant's: nothing shows)."""
    state = server_state(request)
    check_on_disconnect(on_disconnect)
    skip = -1
    if start_index is not None:
        if not _INDEX.fullmatch(start_index) or int(start_index) > MAX_INT:
            raise HTTPError(
                400, "invalid_value", f"startIndex must be an integer from 0 to {MAX_INT}"
            )
        skip = int(start_index)
    # an id no conversation can have is an error, one not used (yet) is no run
    check_body_conversation_id(conversation_id, "conversation id")
    try:
        conv = await state.conversations.open(tenant_name, conversation_id)
    except ConversationNotFoundError:
        return Response(status_code=204)
    state.conversations.check_writable()  # the stream would end at once with a hint
    run_id = conv.pending_run_id
    if run_id is None:
        return Response(status_code=204)
    after = await _before_run(state.log, conv.id, run_id)
    plan = StreamPlan(after=after, stop="run_done", start_run_id=run_id, run_id=run_id)
    return stream_response(
        request,
        state,
        tenant_name,
        conv,
        plan,
        on_disconnect,
        encoder=VercelEncoder(skip_through=skip),
        headers=STREAM_HEADERS,
    )


async def _before_run(log: EventLog, conversation_id: str, run_id: str) -> int:
    """The seq just before ``run_id``'s ``task_started``, searched backwards
    from the log's head in doubling windows (the cost is that of the run's
    own events, which the stream replays anyway).

    When it is not committed yet (the run is starting), the head: the stream
    skips to the run's first event. When retention dropped it, the oldest
    retained event: the stream starts at the run's first retained event (its
    chunk indexes then count from there).
    """
    head = log.committed_seq(conversation_id)
    floor = max(await log.oldest_seq(conversation_id) - 1, 0)
    top = head
    span = 256
    seen_run = False
    while top > floor:
        low = max(top - span, floor)
        cursor = low
        while cursor < top:
            batch = await log.read(conversation_id, cursor, min(top - cursor, 1000))
            if not batch:
                break
            for event in batch:
                if event.run_id == run_id:
                    seen_run = True
                    if event.event == EventName.TASK_STARTED:
                        return event.seq - 1
            cursor = batch[-1].seq
        top = low
        span *= 2
    return floor if seen_run else head
