"""The HTTP API of SPEC §3.4 (FastAPI for validation and the OpenAPI page at /docs).

Routes only parse, authenticate and call the service; streaming responses are
views of the event log built by :mod:`steerline.transports`.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import msgspec
from fastapi import Body, Depends, FastAPI, Query, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from steerline.core.errors import SteerlineError
from steerline.log.base import EventLog
from steerline.log.factory import open_log
from steerline.runtime.inbox import QueuedMessage
from steerline.server.auth import TenantGate
from steerline.server.body_limit import BodyLimitMiddleware
from steerline.server.docs_page import install_docs_page
from steerline.server.errors import HTTPError, error_response, steerline_error_response
from steerline.server.history import build_history
from steerline.server.metrics import Metrics
from steerline.server.openapi import CONVERSATION_ID_PATTERN, install_openapi
from steerline.server.serving import install_log_filter
from steerline.server.settings import ServerSettings, is_loopback_address
from steerline.service.agents import AgentRegistry
from steerline.service.commands import (
    Abort,
    ClearQueue,
    Command,
    EditQueued,
    FollowUp,
    MoveQueued,
    RemoveQueued,
    SendNow,
    SetModes,
    Steer,
)
from steerline.service.conversation import (
    SUBMIT_MODES,
    Acceptance,
    Conversation,
    check_message_size,
    check_submit_mode,
)
from steerline.service.service import ConversationNotFoundError, ConversationService
from steerline.transports.framing import choose_framing
from steerline.transports.http_stream import LogStreamResponse
from steerline.transports.tail import EndReason, LogTail, StreamPlan, StreamRegistry
from steerline.transports.websocket import WebSocketSession, refuse_websocket

logger = logging.getLogger("steerline.server")

_CONVERSATION_ID = re.compile(CONVERSATION_ID_PATTERN)

MAX_INT = 2**63 - 1
"""Largest integer a client may send (event ids, offsets): storage integers are 64-bit."""
MAX_PRIORITY = 2**31 - 1
"""Message priorities are within ±MAX_PRIORITY."""
_EVENT_ID = re.compile(r"[0-9]{1,19}", re.ASCII)


@dataclass(eq=False)
class ServerState:
    """Everything a request handler needs, created once per app."""

    settings: ServerSettings
    log: EventLog
    registry: AgentRegistry
    gate: TenantGate
    metrics: Metrics = field(default_factory=Metrics)
    streams: StreamRegistry = field(default_factory=StreamRegistry)
    service: ConversationService | None = None

    def begin_shutdown(self) -> None:
        """Stop streams with a resume hint (called on SIGTERM, before connections drain)."""
        self.streams.shutdown()
        if self.service is not None:
            self.service.shutting_down.set()

    @property
    def conversations(self) -> ConversationService:
        if self.service is None:
            raise HTTPError(503, "unavailable", "the server is starting or stopping")
        return self.service


# -- request bodies --------------------------------------------------------------
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


class MessageRequest(BaseModel):
    content: str = Field(min_length=1)
    mode: Literal["steer", "follow_up", "interrupt"] = "follow_up"
    """``interrupt`` (an extension): steer with the ``immediate`` policy for this
    message only, as on ``/agents/stream``."""
    id: str | None = Field(default=None, min_length=1, max_length=200)
    priority: int = Field(default=0, ge=-MAX_PRIORITY, le=MAX_PRIORITY)
    expected_run_id: str | None = Field(default=None, min_length=1, max_length=200)
    """Race-safe steering: 409 ``run_mismatch`` (nothing queued) unless this run
    is the active one."""


class QueuedEditRequest(BaseModel):
    """``PATCH …/queue/{message_id}``: edit and/or move one queued message."""

    content: str | None = Field(default=None, min_length=1)
    priority: int | None = Field(default=None, ge=-MAX_PRIORITY, le=MAX_PRIORITY)
    lane: Literal["steering", "follow_up"] | None = None
    before: str | None = Field(default=None, min_length=1, max_length=200)


class AbortRequest(BaseModel):
    clear_queues: bool = False


class ModesRequest(BaseModel):
    steering_mode: Literal["one-at-a-time", "all"] | None = None
    follow_up_mode: Literal["one-at-a-time", "all"] | None = None
    steering_policy: Literal["immediate", "after_tool", "after_turn"] | None = None


def _queued(messages: list[QueuedMessage]) -> list[Any]:
    return [msgspec.to_builtins(m.view()) for m in messages]


def _parse_event_id(value: str | None, source: str) -> int | None:
    if value is None:
        return None
    value = value.strip()
    # ASCII digits only: str.isdigit() also accepts "²", which int() refuses
    if not _EVENT_ID.fullmatch(value) or int(value) > MAX_INT:
        raise HTTPError(400, "invalid_event_id", f"{source} must be an integer from 0 to {MAX_INT}")
    return int(value)


def _resume_point(request: Request) -> int | None:
    """``Last-Event-ID`` or ``?after=`` (the header wins: a reconnecting
    EventSource repeats its original URL, ``after=`` included)."""
    header = _parse_event_id(request.headers.get("last-event-id"), "Last-Event-ID")
    if header is not None:
        return header
    return _parse_event_id(request.query_params.get("after"), "after")


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.steerline
    return state


def _client_address(connection: Request | WebSocket) -> str | None:
    """The client's address (behind a trusted proxy, the one it forwarded)."""
    return connection.client.host if connection.client else None


def _tenant(request: Request) -> str:
    """Authenticate the request and charge it to the tenant's rate limit."""
    state = _state(request)
    name = state.gate.authenticate(request.headers, request.query_params, _client_address(request))
    state.gate.check_rate(name)
    return name


def _check_metrics_access(request: Request, state: ServerState) -> None:
    """With ``metrics_key``: its bearer token (failures count like any failed
    authentication); without: loopback clients only."""
    key = state.settings.metrics_key
    client = _client_address(request)
    if key is None:
        if client is None or not is_loopback_address(client):
            raise HTTPError(
                403,
                "forbidden",
                "/metrics answers loopback clients only; configure a metrics key to "
                "read it from elsewhere",
            )
        return
    state.gate.check_failures(client)
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode("utf-8", "surrogateescape"), key.encode()
    ):
        state.gate.failed(client)
        raise HTTPError(
            401, "unauthorized", "/metrics needs the metrics key", {"WWW-Authenticate": "Bearer"}
        )


Tenant = Annotated[str, Depends(_tenant)]


def _check_on_disconnect(value: str) -> None:
    if value not in ("continue", "cancel"):
        raise HTTPError(400, "invalid_value", "on_disconnect must be continue or cancel")


def _check_conversation_id(conversation_id: str) -> str:
    """Refuse ``.`` and ``..``: clients normalise such path segments away
    (``/conversations/../stream`` becomes ``/stream``), so no URL could reach them."""
    if conversation_id in (".", ".."):
        raise HTTPError(
            400,
            "invalid_value",
            f"conversation id {conversation_id!r} is a dot segment, which URLs cannot carry",
        )
    return conversation_id


async def _conversation(
    conversation_id: str, request: Request, tenant_name: Tenant
) -> Conversation:
    _check_conversation_id(conversation_id)
    return await _state(request).conversations.get(tenant_name, conversation_id)


Conv = Annotated[Conversation, Depends(_conversation)]


Hook = Callable[[], Awaitable[None]]


def create_app(
    settings: ServerSettings | None = None,
    *,
    registry: AgentRegistry | None = None,
    log: EventLog | None = None,
    on_startup: Sequence[Hook] = (),
    on_shutdown: Sequence[Hook] = (),
) -> FastAPI:
    """Build the ASGI app; the service starts and stops with its lifespan.

    ``on_startup`` hooks run in the server's event loop once the service is
    up (agent endpoint checks); ``on_shutdown`` hooks after it stopped
    (closing provider HTTP clients).
    """
    settings = settings or ServerSettings()
    install_log_filter()  # API keys out of uvicorn's log lines
    state = ServerState(
        settings=settings,
        log=log or open_log(settings.store, settings.log),
        registry=registry or AgentRegistry(),
        gate=TenantGate(settings),
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with ConversationService(state.log, state.registry, settings.service) as service:
            state.service = service
            for hook in on_startup:
                await hook()
            try:
                yield
            finally:
                state.begin_shutdown()
        state.service = None
        for hook in on_shutdown:
            await hook()

    app = FastAPI(
        title="steerline",
        summary="Steerable agents with durable, resumable event streams.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # install_docs_page: Swagger UI without a CDN
        redoc_url=None,
    )
    install_docs_page(app)
    install_openapi(app, settings)
    app.state.steerline = state
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["Retry-After"],
        )
    app.add_middleware(
        BodyLimitMiddleware,
        max_body_bytes=settings.max_body_bytes,
        body_timeout=settings.body_timeout,
        max_drain_bytes=settings.max_drain_bytes,
    )
    _install_error_handlers(app, state)

    def stream(
        request: Request,
        tenant_name: str,
        conv: Conversation,
        plan: StreamPlan,
        on_disconnect: str,
    ) -> _StreamingEndpoint:
        _check_on_disconnect(on_disconnect)
        kind = choose_framing(request.headers.get("accept"))
        release_slot = state.gate.open_stream(tenant_name)
        detach = conv.attach()

        def release() -> None:
            release_slot()
            detach()

        state.metrics.live_streams.labels(kind).inc()
        tail = LogTail(state.log, conv.id, plan, settings.stream, state.streams)

        def closed(reason: EndReason, events: int) -> None:
            release()
            state.metrics.live_streams.labels(kind).dec()
            state.metrics.events.labels(kind).inc(events)
            if reason is EndReason.SLOW:
                state.metrics.dropped.inc()

        def disconnected() -> None:
            if on_disconnect == "cancel" and conv.busy:
                conv.agent.abort()

        return _StreamingEndpoint(
            LogStreamResponse(tail, kind, on_disconnect=disconnected, on_close=closed),
            release,
        )

    api = "/api/v1"

    @app.post(f"{api}/agents/stream", tags=["streams"], response_model=None)
    async def agents_stream(
        request: Request,
        body: AgentStreamRequest,
        tenant_name: Tenant,
        on_disconnect: str = "continue",
    ) -> Response | _StreamingEndpoint:
        """Send a message and stream the conversation until the run handling it is done.

        A repeated ``message_id`` queues nothing and answers the same stream
        again (after ``Last-Event-ID`` / ``after`` when given); ``Last-Event-ID``
        without a new ``message_id`` on an existing conversation is a resume.
        An empty ``conversation_id`` (ValueCell's UI for a new chat) means new.
        """
        mode = check_submit_mode(body.mode)
        _check_on_disconnect(on_disconnect)  # before the message is accepted
        conversation_id = body.conversation_id or None
        if conversation_id is not None:
            # fullmatch: "$" of match() also matches before a final newline
            if not _CONVERSATION_ID.fullmatch(conversation_id):
                raise HTTPError(400, "invalid_value", "conversation_id has invalid characters")
            _check_conversation_id(conversation_id)
        resume_from = _resume_point(request)
        service = state.conversations
        release = state.gate.open_stream(tenant_name)
        release()  # only checks that a slot is free before the message is accepted
        # before get_or_create: a refused message must not create a conversation
        check_message_size(body.query, settings.service.inbox.max_message_bytes)
        if resume_from and not await _exists(tenant_name, conversation_id):
            # a new conversation has no event N: its stream would wait forever for a
            # done after N
            raise HTTPError(400, "invalid_event_id", f"no event {resume_from} in this conversation")
        conv, created = await service.get_or_create(tenant_name, conversation_id, body.agent_name)
        if resume_from is not None and not created:
            # also with a new message_id: a point past the log's end would be waited
            # for forever
            await _check_resume_point(conv, resume_from)
            if body.message_id is None:  # a resume of the conversation's stream
                plan = _join_plan(conv, resume_from, follow=False)
                return stream(request, tenant_name, conv, plan, on_disconnect)
        acceptance = await conv.submit(
            body.query,
            mode=mode,
            message_id=body.message_id,
            priority=body.priority,
            start_if_idle=True,
            fresh=created,
        )
        after = acceptance.after if resume_from is None else max(resume_from, acceptance.after)
        plan = _message_plan(conv, acceptance, after)
        return stream(request, tenant_name, conv, plan, on_disconnect)

    @app.get(f"{api}/conversations/{{conversation_id}}/stream", tags=["streams"])
    async def conversation_stream(
        request: Request,
        conv: Conv,
        tenant_name: Tenant,
        after: Annotated[str | None, Query()] = None,
        follow: bool = False,
        on_disconnect: str = "continue",
    ) -> _StreamingEndpoint:
        """Join or resume: replay the events after ``Last-Event-ID``/``after``, then live."""
        state.conversations.check_writable()  # the stream would end at once with a hint
        start = _resume_point(request)
        if start is None:
            start = max(0, await state.log.oldest_seq(conv.id) - 1)
        else:
            await _check_resume_point(conv, start)
        return stream(request, tenant_name, conv, _join_plan(conv, start, follow), on_disconnect)

    async def _exists(tenant_name: str, conversation_id: str | None) -> bool:
        if conversation_id is None:
            return False
        try:
            await state.conversations.get(tenant_name, conversation_id)
        except ConversationNotFoundError:
            return False
        return True

    async def _check_resume_point(conv: Conversation, after: int) -> None:
        """409 for an id older than the retained log, 400 for one not yet written."""
        oldest = await state.log.oldest_seq(conv.id)
        if oldest and after + 1 < oldest:
            raise HTTPError(
                409,
                "resume_too_old",
                f"event {after} is older than the retained log (oldest kept: {oldest}); "
                "fetch /history and stream from its last_seq",
            )
        if after > state.log.committed_seq(conv.id):
            raise HTTPError(400, "invalid_event_id", f"no event {after} in this conversation")

    def _join_plan(conv: Conversation, after: int, follow: bool) -> StreamPlan:
        """Joining a conversation: to the end of the active run, or what is there."""
        if follow:
            return StreamPlan(after=after, stop="never")
        if conv.busy and conv.record.active_run_id:
            return StreamPlan(after=after, stop="run_done", run_id=conv.record.active_run_id)
        return StreamPlan(after=after, stop="caught_up", until_seq=state.log.committed_seq(conv.id))

    def _message_plan(conv: Conversation, acceptance: Acceptance, after: int) -> StreamPlan:
        """A message's response: from its accepting event to the done of its run.

        A repeated request gets the same slice (or its rest, after
        ``Last-Event-ID``); a run that is over by now ends the slice at the
        log's current end instead of waiting for a ``done`` that came already.
        """
        run_id = acceptance.start_run_id
        live_runs = {conv.record.active_run_id if conv.busy else None, conv.next_run_id}
        over = run_id not in live_runs if run_id is not None else not conv.busy
        if acceptance.duplicate and over:
            return StreamPlan(
                after=after, stop="caught_up", until_seq=state.log.committed_seq(conv.id)
            )
        return StreamPlan(after=after, stop="first_done", start_run_id=run_id)

    @app.post(f"{api}/conversations/{{conversation_id}}/messages", status_code=202)
    async def post_message(conv: Conv, body: MessageRequest) -> dict[str, Any]:
        """Steer or queue a follow-up without streaming (202 with the acknowledgement:
        lane, position and the run that takes it, and the queue)."""
        command: Command = (
            FollowUp(
                content=body.content,
                id=body.id,
                priority=body.priority,
                expected_run_id=body.expected_run_id,
            )
            if body.mode == "follow_up"
            else Steer(
                content=body.content,
                id=body.id,
                priority=body.priority,
                interrupt=body.mode == "interrupt",
                expected_run_id=body.expected_run_id,
            )
        )
        return await _execute(conv, command)

    async def _execute(conv: Conversation, command: Command) -> dict[str, Any]:
        """Run one command of the conversation's command set (as WebSocket frames do)."""
        result = await conv.execute(command, auto_continue=settings.service.auto_continue)
        encoded: dict[str, Any] = msgspec.to_builtins(result)
        return encoded

    @app.patch(f"{api}/conversations/{{conversation_id}}/queue/{{message_id}}")
    async def edit_queued(conv: Conv, message_id: str, body: QueuedEditRequest) -> dict[str, Any]:
        """Edit (content, priority) and/or move (lane, before) one queued message."""
        result: dict[str, Any] = {}
        if body.content is not None or body.priority is not None:
            edit = EditQueued(id=message_id, content=body.content, priority=body.priority)
            result = await _execute(conv, edit)
        if body.lane is not None or body.before is not None:
            move = MoveQueued(id=message_id, lane=body.lane, before=body.before)
            result = await _execute(conv, move)
        if not result:
            raise HTTPError(
                400, "invalid_value", "nothing to change: give content, priority, lane or before"
            )
        return result

    @app.delete(f"{api}/conversations/{{conversation_id}}/queue/{{message_id}}")
    async def remove_queued(conv: Conv, message_id: str) -> dict[str, Any]:
        """Remove one queued message (409 ``already_delivered`` once it was delivered)."""
        return await _execute(conv, RemoveQueued(id=message_id))

    @app.post(f"{api}/conversations/{{conversation_id}}/queue/send")
    async def send_queue_now(conv: Conv) -> dict[str, Any]:
        """Start a run with the kept queue (idle conversations; 409 while running)."""
        return await _execute(conv, SendNow())

    @app.post(f"{api}/conversations/{{conversation_id}}/abort")
    async def abort(
        conv: Conv, body: Annotated[AbortRequest | None, Body()] = None
    ) -> dict[str, Any]:
        """Abort the active run; queued messages stay unless ``clear_queues``."""
        return await _execute(conv, Abort(clear_queues=bool(body and body.clear_queues)))

    @app.get(f"{api}/conversations/{{conversation_id}}")
    async def get_conversation(conv: Conv) -> dict[str, object]:
        """Status, active run, queue snapshot, modes and policy."""
        return conv.status()

    @app.patch(f"{api}/conversations/{{conversation_id}}")
    async def patch_conversation(conv: Conv, body: ModesRequest) -> dict[str, object]:
        """Change delivery modes or steering policy (applies at the next poll)."""
        await _execute(conv, SetModes(**body.model_dump()))
        return conv.status()

    @app.delete(f"{api}/conversations/{{conversation_id}}/queue")
    async def clear_queue(
        conv: Conv, lane: Literal["steering", "follow_up", "all"] = "all"
    ) -> dict[str, Any]:
        """Remove queued messages of one lane or both; returns them."""
        return await _execute(conv, ClearQueue(lane=lane))

    @app.get(f"{api}/conversations/{{conversation_id}}/queue")
    async def get_queue(conv: Conv) -> dict[str, Any]:
        """The queued messages of both lanes, with their whole content."""
        return {"conversation_id": conv.id, **conv.status()["queue"]}  # type: ignore[dict-item]

    @app.get(f"{api}/conversations/{{conversation_id}}/history")
    async def history(conv: Conv) -> dict[str, Any]:
        """Persisted items in order, chunks merged per ``item_id``."""
        return await build_history(state.log, conv.id)

    @app.get(f"{api}/conversations")
    async def list_conversations(
        tenant_name: Tenant,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0, le=MAX_INT)] = 0,
    ) -> dict[str, Any]:
        """The tenant's conversations, most recently updated first."""
        records = await state.conversations.list_records(tenant_name, limit=limit, offset=offset)
        return {
            "conversations": [
                {
                    "conversation_id": r.id,
                    "agent_name": r.agent_name,
                    "status": r.status,
                    "created_at": r.created_at,
                    "updated_at": r.updated_at,
                }
                for r in records
            ],
            "limit": limit,
            "offset": offset,
            "next_offset": offset + len(records) if len(records) == limit else None,
        }

    @app.delete(f"{api}/conversations/{{conversation_id}}", status_code=204)
    async def delete_conversation(conversation_id: str, tenant_name: Tenant) -> Response:
        """Delete a conversation; its id is never reused."""
        _check_conversation_id(conversation_id)
        await state.conversations.delete(tenant_name, conversation_id)
        return Response(status_code=204)

    @app.get(f"{api}/agents")
    async def agents(tenant_name: Tenant) -> dict[str, Any]:
        """The configured agents; ``default`` is the one a request without ``agent_name`` gets."""
        default = state.registry.default
        return {
            "default": default,
            "agents": [
                {
                    "name": spec.name,
                    "description": spec.description,
                    "provider": spec.provider,
                    "model": spec.model,
                    "default": spec.name == default,
                }
                for spec in state.registry.specs()
            ],
        }

    @app.websocket(f"{api}/conversations/{{conversation_id}}/ws")
    async def websocket(websocket: WebSocket, conversation_id: str) -> None:
        try:
            tenant_name = state.gate.authenticate(
                websocket.headers, websocket.query_params, _client_address(websocket)
            )
            state.gate.check_rate(tenant_name)
            _check_conversation_id(conversation_id)
            conv = await state.conversations.get(tenant_name, conversation_id)
            release = state.gate.open_stream(tenant_name)
        except SteerlineError as exc:
            code = {
                "conversation_not_found": 4404,
                "invalid_value": 4400,
                "rate_limited": 4429,
            }.get(exc.code, 4403)
            await refuse_websocket(websocket, exc.code, exc.message, code)
            return
        await websocket.accept()
        detach = conv.attach()
        state.metrics.live_streams.labels("websocket").inc()
        session = WebSocketSession(
            websocket,
            conv,
            state.log,
            settings=settings.stream,
            registry=state.streams,
            auto_continue=settings.service.auto_continue,
            on_events=state.metrics.events.labels("websocket").inc,
            on_frame=lambda: state.gate.check_rate(tenant_name),
        )
        try:
            await session.run()
        finally:
            release()
            detach()
            state.metrics.live_streams.labels("websocket").dec()
            if session.end_reason is EndReason.SLOW:
                state.metrics.dropped.inc()

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> Response:
        """Liveness: 503 while starting, stopping, or while the store cannot write."""
        if state.service is None:
            return JSONResponse({"status": "starting"}, status_code=503)
        if not state.log.available:
            return JSONResponse(
                {"status": "unavailable", "reason": "the store cannot write"}, status_code=503
            )
        return JSONResponse({"status": "ok"})

    @app.get("/metrics", tags=["ops"])
    async def metrics(request: Request) -> Response:
        """Prometheus text format: loopback clients only, unless a metrics key is set."""
        _check_metrics_access(request, state)
        service = state.service
        live = service.live_conversations() if service else []
        if service is not None:
            state.metrics.sync_runs(service.runs_started)
        state.metrics.queue_depth.set(sum(len(c.agent.inbox) for c in live))
        state.metrics.running.set(sum(1 for c in live if c.busy))
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")

    return app


class _StreamingEndpoint(Response):
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


def _install_error_handlers(app: FastAPI, state: ServerState) -> None:
    def count(response: JSONResponse, code: str) -> JSONResponse:
        state.metrics.errors.labels(code).inc()
        return response

    @app.exception_handler(SteerlineError)
    async def steerline_error(_request: Request, exc: SteerlineError) -> Response:
        return count(steerline_error_response(exc), exc.code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        content_type = request.headers.get("content-type", "")
        body_error = any(tuple(e.get("loc", ()))[:1] == ("body",) for e in errors)
        if body_error and "json" not in content_type.lower():
            # FastAPI ignores a body it was not told is JSON; say what is missing
            return count(
                error_response(
                    415,
                    "unsupported_media_type",
                    "send the request body as JSON with 'Content-Type: application/json'"
                    + (f" (got {content_type!r})" if content_type else " (none was sent)"),
                ),
                "unsupported_media_type",
            )
        if any(e.get("type") == "json_invalid" for e in errors):
            return count(
                error_response(400, "invalid_json", "request body is not valid JSON"),
                "invalid_json",
            )
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e.get('msg')}"
            for e in errors
        )
        return count(error_response(422, "invalid_request", detail), "invalid_request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = str(exc.detail)
        if exc.status_code == 400 and message == "There was an error parsing the body":
            # FastAPI's answer to a body json.loads could not read at all (too deeply
            # nested: RecursionError) or a failed form body
            code, message = "invalid_json", "request body could not be parsed (too deeply nested?)"
        return count(error_response(exc.status_code, code, message), code)

    @app.exception_handler(Exception)
    async def internal_error(_request: Request, exc: Exception) -> Response:
        logger.exception("unhandled error", exc_info=exc)
        return count(error_response(500, "internal_error", "internal server error"), "internal")
