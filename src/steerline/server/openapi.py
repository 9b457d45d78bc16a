"""The OpenAPI document of the HTTP API (``/openapi.json``), made true.

FastAPI describes what it sees: the request bodies and parameters it parses,
and a JSON answer for every route. The rest is declared here, per operation,
and merged into the document it generates:

- errors: ``{"error": {"code", "message"}}`` with the statuses and codes each
  route really answers, FastAPI's request validation errors included
  (``_install_error_handlers`` turns them into 400/415/422 with that body);
- streams: ``text/event-stream`` or ``application/x-ndjson``, never JSON;
- what routes read from the request themselves: ``Last-Event-ID``, ``after``;
- id patterns, the enum of ``on_disconnect``, the bearer security scheme;
- schemas of the JSON answers.

Every operation needs an entry in :data:`OPERATIONS`. One without gets the
common errors and is marked ``x-undeclared`` (the tests fail on that mark, and
schemathesis on what the guess gets wrong); the document is still served.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import models_json_schema

from steerline.server.settings import ServerSettings

CONVERSATION_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
"""Conversation ids: what ``POST /agents/stream`` accepts in ``conversation_id``."""
EVENT_ID_PATTERN = r"^[0-9]{1,19}$"
"""``Last-Event-ID`` and ``after``: ASCII digits, at most 2^63 - 1."""

API = "/api/v1"
CONV = f"{API}/conversations/{{conversation_id}}"


# -- schemas of the answers (documentation only: the routes build plain dicts) ----
class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str
    """Stable, machine-readable: ``conversation_not_found``, ``rate_limited``, ..."""
    message: str


class ErrorBody(BaseModel):
    """Every error answer of the HTTP API."""

    model_config = ConfigDict(extra="forbid")
    error: ErrorDetail


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ImagePart(BaseModel):
    type: Literal["image"]
    data: str
    """Base64-encoded image bytes."""
    mime_type: str


class QueuedMessage(BaseModel):
    id: str
    content: list[TextPart | ImagePart]
    priority: int = 0
    created_at: float = 0.0


class QueueLanes(BaseModel):
    steering: list[QueuedMessage]
    follow_up: list[QueuedMessage]


DeliveryModeName = Literal["one-at-a-time", "all"]


class ConversationStatus(BaseModel):
    conversation_id: str
    agent_name: str
    status: Literal["idle", "running"]
    active_run_id: str | None
    queue: QueueLanes
    steering_mode: DeliveryModeName
    follow_up_mode: DeliveryModeName
    steering_policy: Literal["immediate", "after_tool", "after_turn"]
    last_seq: int
    created_at: float


class MessageAccepted(BaseModel):
    """The acknowledgement of SPEC §2.9."""

    conversation_id: str
    message_id: str
    duplicate: bool
    queued: bool
    """False when the message started a run as its prompt."""
    lane: Literal["steering", "follow_up"] | None
    position: int | None
    """0-based position in its lane when queued (at acceptance)."""
    run_id: str | None
    """The run that takes it: the active run, the run it started, or null (a future run)."""
    queue: QueueLanes


class QueueChanged(BaseModel):
    """A queue edit, removal, move, clear or abort: what changed, and the queue."""

    conversation_id: str
    message: QueuedMessage | None = None
    removed: list[QueuedMessage] = []
    queue: QueueLanes


class RunStarted(BaseModel):
    conversation_id: str
    run_id: str
    queue: QueueLanes


class QueueContents(QueueLanes):
    conversation_id: str


class History(BaseModel):
    conversation_id: str
    items: list[dict[str, Any]]
    """In order; chunks merged per ``item_id``. ``type``: ``user_message``,
    ``message``, ``reasoning``, ``tool_call``, ``system_failed``, ``task_failed``."""
    last_seq: int


class ConversationSummary(BaseModel):
    conversation_id: str
    agent_name: str
    status: Literal["idle", "running"]
    created_at: float
    updated_at: float


class ConversationList(BaseModel):
    conversations: list[ConversationSummary]
    limit: int
    offset: int
    next_offset: int | None


class AgentInfo(BaseModel):
    name: str
    description: str
    provider: str
    model: str


class AgentList(BaseModel):
    agents: list[AgentInfo]


class Envelope(BaseModel):
    """One event of a conversation's log, as streams carry it (SPEC §3.3)."""

    event: str
    """``conversation_started``, ``message_chunk``, ``done``, ... (SPEC §2.6)."""
    data: dict[str, Any]
    seq: int
    """The event's id in its conversation: what ``Last-Event-ID`` and ``after`` name."""


class Health(BaseModel):
    status: Literal["ok", "starting", "unavailable"]
    reason: str | None = None


# -- what each operation answers ---------------------------------------------------
@dataclass(frozen=True, slots=True)
class Operation:
    errors: Mapping[int, tuple[str, ...]]
    """Error status -> the codes it carries."""
    body: type[BaseModel] | None = None
    """Schema of the JSON success answer (None: no body, or a stream)."""
    stream: bool = False
    """The success answer is an SSE or NDJSON stream of the conversation's events."""
    auth: bool = True
    """Authenticated with the API keys (401 when they are configured)."""
    content: Mapping[str, Any] | None = None
    """The success answer's content when it is another protocol's stream (a
    protocol view of the log, SPEC §3.5), with its description."""
    description: str | None = None
    no_content: str | None = None
    """Also answers 204 without a body: when."""


_BODY = {
    408: ("request_timeout",),
    413: ("body_too_large",),
    415: ("unsupported_media_type",),
    422: ("invalid_request",),
}
"""Every route with a request body (the body limit, FastAPI's validation)."""

_SEND_AND_STREAM_ERRORS: dict[int, tuple[str, ...]] = {
    **_BODY,
    400: ("invalid_json", "invalid_value", "invalid_event_id"),
    404: ("unknown_agent", "conversation_not_found"),
    409: (
        "conversation_busy",
        "conversation_exists",
        "resume_too_old",
        "queue_full",
        "run_mismatch",
    ),
    413: ("body_too_large", "message_too_large"),
    429: ("rate_limited", "too_many_streams", "too_many_runs"),
    503: ("unavailable", "storage_unavailable", "conversation_unloaded"),
}
"""Sending a message and streaming its run: native, Vercel and AG-UI alike."""

_JOIN_ERRORS: dict[int, tuple[str, ...]] = {
    400: ("invalid_value", "invalid_event_id"),
    404: ("conversation_not_found",),
    409: ("resume_too_old",),
    422: ("invalid_request",),
    429: ("rate_limited", "too_many_streams"),
    503: ("unavailable", "storage_unavailable"),
}
"""Joining or resuming a conversation's stream: native, Vercel and AG-UI alike."""

_VERCEL_DESCRIPTION = (
    "The run as a Vercel AI SDK UI message stream v1 (header "
    "`x-vercel-ai-ui-message-stream: v1`): one `data: <chunk JSON>` block per chunk, "
    "`data: [DONE]` last (docs/protocols.md)."
)
_VERCEL_CONTENT = {
    "text/event-stream": {
        "schema": {"type": "string"},
        "example": 'data: {"type":"start","messageId":"run-1"}\n\n...data: [DONE]\n\n',
    }
}

_AGUI_DESCRIPTION = (
    "The run as AG-UI 1.0 events: one `data: <event JSON>` block per event, "
    "`id: <seq>` on the last event of each log event (resume with Last-Event-ID); "
    "RUN_STARTED first, RUN_FINISHED or RUN_ERROR last (docs/protocols.md)."
)
_AGUI_CONTENT = {
    "text/event-stream": {
        # one event, as for the native stream (before OpenAPI 3.2's itemSchema)
        "schema": {
            "type": "object",
            "properties": {
                "id": {"type": "string", "pattern": "^[0-9]+$", "description": "A log seq."},
                "data": {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": {
                        "type": "object",
                        "properties": {"type": {"type": "string"}},
                        "required": ["type"],
                    },
                },
                "event": {"type": "string", "enum": ["message"]},
                "retry": {"type": "integer", "description": "Reconnection delay (ms)."},
            },
            "required": ["data"],
        },
        "example": 'data: {"type":"RUN_STARTED","threadId":"t","runId":"r"}\n\n...',
    }
}

OPERATIONS: dict[tuple[str, str], Operation] = {
    ("post", f"{API}/agents/stream"): Operation(
        stream=True,
        errors=_SEND_AND_STREAM_ERRORS,
    ),
    ("get", f"{CONV}/stream"): Operation(
        stream=True,
        errors=_JOIN_ERRORS,
    ),
    ("post", f"{CONV}/messages"): Operation(
        body=MessageAccepted,
        errors={
            **_BODY,
            400: ("invalid_json", "invalid_value"),
            404: ("conversation_not_found",),
            409: ("queue_full", "run_mismatch"),
            413: ("body_too_large", "message_too_large"),
            429: ("rate_limited", "too_many_runs"),
            503: ("unavailable", "storage_unavailable", "conversation_unloaded"),
        },
    ),
    ("patch", f"{CONV}/queue/{{message_id}}"): Operation(
        body=QueueChanged,
        errors={
            **_BODY,
            400: ("invalid_json", "invalid_value"),
            404: ("conversation_not_found", "queued_message_not_found"),
            409: ("already_delivered",),
            413: ("body_too_large", "message_too_large"),
            429: ("rate_limited",),
            503: ("unavailable", "storage_unavailable", "conversation_unloaded"),
        },
    ),
    ("delete", f"{CONV}/queue/{{message_id}}"): Operation(
        body=QueueChanged,
        errors={
            400: ("invalid_value",),
            404: ("conversation_not_found", "queued_message_not_found"),
            409: ("already_delivered",),
            429: ("rate_limited",),
            503: ("unavailable", "storage_unavailable", "conversation_unloaded"),
        },
    ),
    ("post", f"{CONV}/queue/send"): Operation(
        body=RunStarted,
        errors={
            400: ("invalid_value",),
            404: ("conversation_not_found",),
            409: ("agent_busy",),
            429: ("rate_limited", "too_many_runs"),
            503: ("unavailable", "storage_unavailable", "conversation_unloaded"),
        },
    ),
    ("post", f"{CONV}/abort"): Operation(
        body=QueueChanged,
        errors={
            **_BODY,
            400: ("invalid_json", "invalid_value"),
            404: ("conversation_not_found",),
            429: ("rate_limited",),
            503: ("unavailable",),
        },
    ),
    ("get", CONV): Operation(
        body=ConversationStatus,
        errors={
            400: ("invalid_value",),
            404: ("conversation_not_found",),
            429: ("rate_limited",),
            503: ("unavailable",),
        },
    ),
    ("patch", CONV): Operation(
        body=ConversationStatus,
        errors={
            **_BODY,
            400: ("invalid_json", "invalid_value"),
            404: ("conversation_not_found",),
            429: ("rate_limited",),
            503: ("unavailable", "storage_unavailable", "conversation_unloaded"),
        },
    ),
    ("delete", CONV): Operation(
        errors={
            400: ("invalid_value",),
            404: ("conversation_not_found",),
            429: ("rate_limited",),
            503: ("unavailable", "storage_unavailable"),
        },
    ),
    ("delete", f"{CONV}/queue"): Operation(
        body=QueueChanged,
        errors={
            400: ("invalid_value",),
            404: ("conversation_not_found",),
            422: ("invalid_request",),
            429: ("rate_limited",),
            503: ("unavailable", "storage_unavailable", "conversation_unloaded"),
        },
    ),
    ("get", f"{CONV}/queue"): Operation(
        body=QueueContents,
        errors={
            400: ("invalid_value",),
            404: ("conversation_not_found",),
            429: ("rate_limited",),
            503: ("unavailable",),
        },
    ),
    ("get", f"{CONV}/history"): Operation(
        body=History,
        errors={
            400: ("invalid_value",),
            404: ("conversation_not_found",),
            429: ("rate_limited",),
            503: ("unavailable",),
        },
    ),
    ("get", f"{API}/conversations"): Operation(
        body=ConversationList,
        errors={422: ("invalid_request",), 429: ("rate_limited",), 503: ("unavailable",)},
    ),
    ("get", f"{API}/agents"): Operation(body=AgentList, errors={429: ("rate_limited",)}),
    ("post", f"{API}/vercel/chat"): Operation(
        content=_VERCEL_CONTENT,
        description=_VERCEL_DESCRIPTION,
        errors=_SEND_AND_STREAM_ERRORS,
    ),
    ("get", f"{API}/vercel/chat/{{conversation_id}}/stream"): Operation(
        content=_VERCEL_CONTENT,
        description=_VERCEL_DESCRIPTION,
        no_content=(
            "No run is active, or no conversation has this id yet (useChat reconnects "
            "as a new chat's page mounts): nothing to reconnect to"
        ),
        errors={status: codes for status, codes in _JOIN_ERRORS.items() if status != 404},
    ),
    ("post", f"{API}/ag-ui"): Operation(
        content=_AGUI_CONTENT,
        description=_AGUI_DESCRIPTION,
        errors=_SEND_AND_STREAM_ERRORS,
    ),
    ("get", f"{API}/ag-ui/{{conversation_id}}/stream"): Operation(
        content=_AGUI_CONTENT,
        description=_AGUI_DESCRIPTION,
        errors=_JOIN_ERRORS,
    ),
    ("get", "/healthz"): Operation(body=Health, auth=False, errors={}),
    ("get", "/metrics"): Operation(auth=False, errors={}),
}

_UNDECLARED = Operation(
    errors={
        400: ("invalid_json", "invalid_value"),
        404: ("conversation_not_found",),
        422: ("invalid_request",),
        429: ("rate_limited",),
        503: ("unavailable", "storage_unavailable"),
    }
)
"""A guess for a route missing from OPERATIONS (see the module's docstring)."""

_MODELS: tuple[type[BaseModel], ...] = (
    ErrorBody,
    Envelope,
    MessageAccepted,
    QueueChanged,
    RunStarted,
    ConversationStatus,
    QueueContents,
    History,
    ConversationList,
    AgentList,
    Health,
)

_SECURITY_SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key of the server (`api_keys`), as `Authorization: Bearer <key>`. "
        "Without configured keys the server checks nothing.",
    },
    "access_token": {
        "type": "apiKey",
        "in": "query",
        "name": "access_token",
        "description": "The same key as a query parameter, for browsers' EventSource "
        "and WebSocket, which cannot set headers.",
    },
}
_METRICS_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "description": "The metrics key (`metrics_key`) as `Authorization: Bearer <key>`.",
}

_STREAM_DESCRIPTION = (
    "The conversation's events, as they are committed: Server-Sent Events (`id:` is the "
    "event's seq, `data:` its JSON envelope), or NDJSON (one envelope per line) when "
    "`Accept` names `application/x-ndjson` and not `text/event-stream`. The stream ends "
    'with a resume hint (SSE `: resume after=N`, NDJSON `{"event":"resume"}`) when the '
    "server cannot keep it going."
)
_ENVELOPE = {"$ref": "#/components/schemas/Envelope"}
_STREAM_CONTENT = {
    "text/event-stream": {
        # before OpenAPI 3.2 (itemSchema), the schema of an event stream is one event's
        "schema": {
            "type": "object",
            "properties": {
                "id": {"type": "string", "pattern": "^[0-9]+$", "description": "The seq."},
                "data": {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": _ENVELOPE,
                },
                "event": {"type": "string", "enum": ["message"]},
                "retry": {"type": "integer", "description": "Reconnection delay (ms)."},
            },
            "required": ["id", "data"],
        },
        "example": 'retry: 1000\nid: 1\ndata: {"event":"conversation_started",...}\n\n',
    },
    "application/x-ndjson": {
        "schema": {
            "type": "string",
            "description": 'One Envelope per line; also `{"event":"ping"}` heartbeats '
            'and a final `{"event":"resume","after":N}` hint.',
        },
        "example": '{"event":"conversation_started","data":{...},"seq":1}\n',
    },
}
_LAST_EVENT_ID = {
    "name": "Last-Event-ID",
    "in": "header",
    "required": False,
    "description": "Resume after this event (what an EventSource sends when it reconnects); "
    "wins over `after`. 400 `invalid_event_id` for an id not yet written, 409 "
    "`resume_too_old` for one older than the retained log.",
    "schema": {"type": "string", "pattern": EVENT_ID_PATTERN},
}
_AFTER = {
    "name": "after",
    "in": "query",
    "required": False,
    "description": "Resume after this event id (as `Last-Event-ID`, for clients that "
    "cannot set headers).",
    "schema": {"type": "string", "pattern": EVENT_ID_PATTERN},
}
_ON_DISCONNECT_SCHEMA = {"type": "string", "enum": ["continue", "cancel"], "default": "continue"}
_CONVERSATION_ID_SCHEMA = {
    "type": "string",
    "pattern": CONVERSATION_ID_PATTERN,
    "minLength": 1,
    "maxLength": 128,
}
_HEADERS = {
    401: {"WWW-Authenticate": "`Bearer`"},
    429: {"Retry-After": "Seconds to wait before trying again."},
    503: {"Retry-After": "Seconds to wait before trying again."},
}


def install_openapi(app: FastAPI, settings: ServerSettings) -> None:
    """Make ``app.openapi()`` (and so ``/openapi.json`` and ``/docs``) the true document."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete(FastAPI.openapi(app), settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def complete(document: dict[str, Any], settings: ServerSettings) -> dict[str, Any]:
    """Merge :data:`OPERATIONS` into FastAPI's ``document`` (changed in place)."""
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    _, definitions = models_json_schema(
        [(model, "validation") for model in _MODELS],
        ref_template="#/components/schemas/{model}",
    )
    schemas.update(definitions.get("$defs", {}))
    components["securitySchemes"] = dict(_SECURITY_SCHEMES)
    if settings.metrics_key is not None:
        components["securitySchemes"]["metrics_key"] = _METRICS_SCHEME

    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            declared = OPERATIONS.get((method, path))
            if declared is None:
                operation["x-undeclared"] = True
                declared = _UNDECLARED
            _complete_operation(operation, declared, settings, path)
    text = repr(document["paths"])
    for unused in ("HTTPValidationError", "ValidationError"):
        if f"#/components/schemas/{unused}'" not in text:
            schemas.pop(unused, None)
    return document


def _complete_operation(
    operation: dict[str, Any],
    declared: Operation,
    settings: ServerSettings,
    path: str,
) -> None:
    if not operation.get("tags"):
        operation["tags"] = ["agents" if path.endswith("/agents") else "conversations"]
    responses: dict[str, Any] = operation["responses"]
    success = next(status for status in responses if status.startswith("2"))
    answer: dict[str, Any] = dict(responses[success])  # FastAPI's, unless said here
    if declared.stream:
        answer["description"] = _STREAM_DESCRIPTION
        answer["content"] = _STREAM_CONTENT
    elif declared.content is not None:
        answer["description"] = declared.description or answer["description"]
        answer["content"] = dict(declared.content)
    elif declared.body is not None:
        ref = {"$ref": f"#/components/schemas/{declared.body.__name__}"}
        answer["content"] = {"application/json": {"schema": ref}}
    elif path == "/metrics":
        answer["description"] = "Prometheus text format"
        answer["content"] = {"text/plain; version=0.0.4": {"schema": {"type": "string"}}}
    new: dict[str, Any] = {success: answer}
    if declared.no_content is not None:
        new["204"] = {"description": declared.no_content}

    errors = dict(declared.errors)
    if declared.auth and settings.api_keys:
        errors[401] = ("unauthorized",)
    if path == "/metrics":
        if settings.metrics_key is None:
            errors[403] = ("forbidden",)
        else:
            errors[401] = ("unauthorized",)
            errors[429] = ("rate_limited",)
    if path == "/healthz":
        new["503"] = {
            "description": "Starting, stopping, or the store cannot write",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}},
        }
    for status in sorted(errors):
        new[str(status)] = _error_response(status, errors[status])
    operation["responses"] = new

    parameters: list[dict[str, Any]] = operation.setdefault("parameters", [])
    for parameter in parameters:
        if parameter["name"] == "conversation_id" and parameter["in"] == "path":
            parameter["schema"] = dict(_CONVERSATION_ID_SCHEMA)
            parameter["description"] = (
                "A conversation's id (never `.` or `..`, which URLs cannot carry: 400)."
            )
        elif parameter["name"] == "on_disconnect":
            parameter["schema"] = dict(_ON_DISCONNECT_SCHEMA)
            parameter["description"] = (
                "`cancel`: abort the run when this client leaves (400 for other values)."
            )
        elif parameter["name"] == "after":
            parameter.update(_AFTER)
    if declared.stream:
        if not any(p["name"] == "after" for p in parameters):
            parameters.append(dict(_AFTER))
        parameters.append(dict(_LAST_EVENT_ID))
    if not parameters:
        del operation["parameters"]

    if declared.auth:
        security: list[dict[str, list[str]]] = [{"bearer": []}, {"access_token": []}]
        operation["security"] = security if settings.api_keys else [{}, *security]
    elif path == "/metrics" and settings.metrics_key is not None:
        operation["security"] = [{"metrics_key": []}]


def _error_response(status: int, codes: tuple[str, ...]) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": f"{HTTPStatus(status).phrase}: " + ", ".join(f"`{c}`" for c in codes),
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}},
        },
    }
    header = _HEADERS.get(status)
    if header is not None:
        response["headers"] = {
            name: {"description": text, "schema": {"type": "string"}}
            for name, text in header.items()
        }
    return response
