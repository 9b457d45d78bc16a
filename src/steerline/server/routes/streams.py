"""Streaming routes: send a message and stream its run, join or resume a conversation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from steerline.server.deps import (
    API,
    MAX_PRIORITY,
    Conv,
    Tenant,
    check_body_conversation_id,
    check_on_disconnect,
    resume_point,
    server_state,
)
from steerline.server.errors import HTTPError
from steerline.server.openapi import CONVERSATION_ID_PATTERN
from steerline.server.state import ServerState
from steerline.service.conversation import (
    SUBMIT_MODES,
    Acceptance,
    SubmitMode,
    check_message_size,
    check_submit_mode,
)
from steerline.service.service import ConversationHandle, ConversationNotFoundError
from steerline.transports.framing import Encoder, choose_framing
from steerline.transports.http_stream import LogStreamResponse
from steerline.transports.tail import EndReason, LogTail, StreamPlan

router = APIRouter(prefix=API, tags=["streams"])


class AgentStreamRequest(BaseModel):
    """ValueCell's ``AgentStreamRequest``; extra fields are accepted and ignored."""

    model_config = ConfigDict(extra="allow")
    query: str = Field(min_length=1)
    agent_name: str | None = None
    conversation_id: str | None = Field(
        default=None,
        description="An existing conversation, or the id of a new one; empty or absent: new",
        json_schema_extra={"pattern": "^$|" + CONVERSATION_ID_PATTERN, "maxLength": 128},
    )
    mode: str = Field(default="auto", json_schema_extra={"enum": list(SUBMIT_MODES)})
    """Checked by ``check_submit_mode`` (400 ``invalid_value``), not by the schema."""
    message_id: str | None = Field(default=None, min_length=1, max_length=200)
    priority: int = Field(default=0, ge=-MAX_PRIORITY, le=MAX_PRIORITY)


class StreamingEndpoint(Response):
    """Adapts a raw ASGI streaming app to what FastAPI expects a route to return."""

    def __init__(self, app: LogStreamResponse, release: Callable[[], None]) -> None:
        super().__init__()
        self._app = app
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._app(scope, receive, send)
        finally:
            self._release()


@router.post("/agents/stream", response_model=None)
async def agents_stream(
    request: Request,
    body: AgentStreamRequest,
    tenant_name: Tenant,
    on_disconnect: str = "continue",
) -> Response | StreamingEndpoint:
    """Send a message and stream the conversation until the run handling it is done.

    A repeated ``message_id`` queues nothing and answers the same stream
    again (after ``Last-Event-ID`` / ``after`` when given); ``Last-Event-ID``
    without a new ``message_id`` on an existing conversation is a resume.
    An empty ``conversation_id`` (ValueCell's UI for a new chat) means new.
    """
    state = server_state(request)
    mode = check_submit_mode(body.mode)
    check_on_disconnect(on_disconnect)  # before the message is accepted
    conversation_id = body.conversation_id or None
    if conversation_id is not None:
        check_body_conversation_id(conversation_id, "conversation_id")
    resume_from = resume_point(request)
    service = state.conversations
    check_admission(state, tenant_name, body.query)
    if resume_from and not await _exists(state, tenant_name, conversation_id):
        # a new conversation has no event N: its stream would wait forever for a
        # done after N
        raise HTTPError(400, "invalid_event_id", f"no event {resume_from} in this conversation")
    conv, created = await service.get_or_create(tenant_name, conversation_id, body.agent_name)
    if resume_from is not None and not created:
        # also with a new message_id: a point past the log's end would be waited
        # for forever
        await check_resume_point(state, conv, resume_from)
        if body.message_id is None:  # a resume of the conversation's stream
            plan = join_plan(state, conv, resume_from, follow=False)
            return stream_response(request, state, tenant_name, conv, plan, on_disconnect)
    acceptance = await conv.submit(
        body.query,
        mode=mode,
        message_id=body.message_id,
        priority=body.priority,
        start_if_idle=True,
        fresh=created,
    )
    after = acceptance.after if resume_from is None else max(resume_from, acceptance.after)
    plan = message_plan(state, conv, acceptance, after)
    return stream_response(request, state, tenant_name, conv, plan, on_disconnect)


@router.get("/conversations/{conversation_id}/stream")
async def conversation_stream(
    request: Request,
    conv: Conv,
    tenant_name: Tenant,
    after: Annotated[str | None, Query()] = None,
    follow: bool = False,
    on_disconnect: str = "continue",
) -> StreamingEndpoint:
    """Join or resume: replay the events after ``Last-Event-ID``/``after``, then live.

    Served by :class:`steerline.server.stream_route.StreamRoute` in front of
    FastAPI (this declaration documents it and serves what that passes on).
    """
    return await join_stream(request, tenant_name, conv, follow, on_disconnect)


async def join_stream(
    request: Request,
    tenant_name: str,
    conv: ConversationHandle,
    follow: bool,
    on_disconnect: str,
) -> StreamingEndpoint:
    """The body of ``GET …/conversations/{id}/stream`` once its parameters are read."""
    state = server_state(request)
    state.conversations.check_writable()  # the stream would end at once with a hint
    start = resume_point(request)
    if start is None:
        start = max(0, await state.log.oldest_seq(conv.id) - 1)
    else:
        await check_resume_point(state, conv, start)
    plan = join_plan(state, conv, start, follow)
    return stream_response(request, state, tenant_name, conv, plan, on_disconnect)


def check_admission(state: ServerState, tenant_name: str, text: str) -> None:
    """What refuses a message before it is accepted (so a refused one creates
    no conversation): a free stream slot for its response, and its size."""
    release = state.gate.open_stream(tenant_name)
    release()  # only checks that a slot is free; the stream takes its own
    check_message_size(text, state.settings.service.inbox.max_message_bytes)


async def accept_message(
    state: ServerState,
    tenant_name: str,
    conversation_id: str | None,
    agent_name: str | None,
    text: str,
    *,
    mode: SubmitMode,
    message_id: str | None,
) -> tuple[ConversationHandle, StreamPlan]:
    """A protocol view's message: admitted, delivered to its conversation (new
    if needed), and the plan of the response that streams its run."""
    check_admission(state, tenant_name, text)
    conv, created = await state.conversations.get_or_create(
        tenant_name, conversation_id, agent_name
    )
    acceptance = await conv.submit(
        text, mode=mode, message_id=message_id, start_if_idle=True, fresh=created
    )
    return conv, message_plan(state, conv, acceptance, acceptance.after)


def stream_response(
    request: Request,
    state: ServerState,
    tenant_name: str,
    conv: ConversationHandle,
    plan: StreamPlan,
    on_disconnect: str,
    encoder: Encoder | None = None,
    headers: dict[str, str] | None = None,
) -> StreamingEndpoint:
    """The response streaming ``plan`` of the conversation's log: SSE or
    NDJSON by ``Accept``, or ``encoder``'s protocol view (labelled SSE in the
    metrics). Every stream holds one of the tenant's stream slots."""
    check_on_disconnect(on_disconnect)
    kind = "sse" if encoder is not None else choose_framing(request.headers.get("accept"))
    release_slot = state.gate.open_stream(tenant_name)
    detach = conv.attach()

    def release() -> None:
        release_slot()
        detach()

    state.metrics.live_streams.labels(kind).inc()
    tail = LogTail(state.log, conv.id, plan, state.settings.stream, state.streams)

    def closed(reason: EndReason, events: int) -> None:
        release()
        state.metrics.live_streams.labels(kind).dec()
        state.metrics.events.labels(kind).inc(events)
        if reason is EndReason.SLOW:
            state.metrics.dropped.inc()

    def disconnected() -> None:
        if on_disconnect == "cancel" and conv.busy:
            conv.abort_soon()

    return StreamingEndpoint(
        LogStreamResponse(
            tail,
            kind,
            on_disconnect=disconnected,
            on_close=closed,
            encoder=encoder,
            headers=headers,
        ),
        release,
    )


async def _exists(state: ServerState, tenant_name: str, conversation_id: str | None) -> bool:
    if conversation_id is None:
        return False
    try:
        await state.conversations.open(tenant_name, conversation_id)
    except ConversationNotFoundError:
        return False
    return True


async def check_resume_point(state: ServerState, conv: ConversationHandle, after: int) -> None:
    """409 for an id older than the retained log, 400 for one not yet written."""
    oldest = await state.log.oldest_seq(conv.id)
    if oldest and after + 1 < oldest:
        kept = (
            f"oldest kept: {oldest}"
            if oldest <= state.log.committed_seq(conv.id)
            else f"none is kept: retention dropped every event up to {oldest - 1}"
        )
        raise HTTPError(
            409,
            "resume_too_old",
            f"event {after} is older than the retained log ({kept}); "
            "fetch /history and stream from its last_seq",
        )
    if after > state.log.committed_seq(conv.id):
        raise HTTPError(400, "invalid_event_id", f"no event {after} in this conversation")


def join_plan(state: ServerState, conv: ConversationHandle, after: int, follow: bool) -> StreamPlan:
    """Joining a conversation: to the ``done`` still to come, or what is there.

    Between a run's ``done`` and the next run (or idleness) the record still
    names the run that ended; waiting for its ``done`` again would never end.
    """
    if follow:
        return StreamPlan(after=after, stop="never")
    pending = conv.pending_run_id
    if pending is not None:
        return StreamPlan(after=after, stop="run_done", run_id=pending)
    # everything appended so far (the last done may not be committed yet)
    until = max(conv.last_seq, state.log.committed_seq(conv.id))
    return StreamPlan(after=after, stop="caught_up", until_seq=until)


def message_plan(
    state: ServerState, conv: ConversationHandle, acceptance: Acceptance, after: int
) -> StreamPlan:
    """A message's response: from its accepting event to the done of its run.

    A repeated request gets the same slice (or its rest, after
    ``Last-Event-ID``). A known run ends the slice at its own ``done``, which
    is in the log already when the run is over (so a later run is never
    part of it); a message with no run yet that is over by now (the
    conversation idle) ends the slice at the log's current end.
    """
    run_id = acceptance.start_run_id
    if acceptance.duplicate and run_id is None and not conv.busy:
        return StreamPlan(after=after, stop="caught_up", until_seq=state.log.committed_seq(conv.id))
    return StreamPlan(after=after, stop="first_done", start_run_id=run_id)
