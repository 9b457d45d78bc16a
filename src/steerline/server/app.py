"""The HTTP API of SPEC §3.4 (FastAPI for validation and the OpenAPI page at /docs).

``create_app`` builds the state, the lifespan, the middleware and the error
handlers, and includes the routers of :mod:`steerline.server.routes`. Routes
only parse, authenticate and call the service (the commands of
:mod:`steerline.service.commands`, run by ``Conversation.execute``); streaming
responses are views of the event log built by :mod:`steerline.transports`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from steerline.core.errors import SteerlineError
from steerline.log.base import EventLog
from steerline.log.factory import open_log
from steerline.server.auth import TenantGate
from steerline.server.body_limit import BodyLimitMiddleware
from steerline.server.deps import CONVERSATION_ID, MAX_INT, MAX_PRIORITY
from steerline.server.docs_page import install_docs_page
from steerline.server.errors import error_response
from steerline.server.openapi import install_openapi
from steerline.server.routes import ROUTERS
from steerline.server.serving import install_log_filter
from steerline.server.settings import ServerSettings
from steerline.server.state import ServerState
from steerline.server.stream_route import StreamRoute
from steerline.server.web_page import install_web_page
from steerline.service.agents import AgentRegistry
from steerline.service.service import ConversationService

__all__ = ["MAX_INT", "MAX_PRIORITY", "ServerState", "create_app"]

logger = logging.getLogger("steerline.server")

_CONVERSATION_ID = CONVERSATION_ID
"""Kept under its old name for the tests that import it from here."""

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
    install_web_page(app)  # the page at /
    install_openapi(app, settings)
    app.state.steerline = state  # what the routes reach through request.app
    # added first: the innermost of the middleware, in front of FastAPI's router
    app.add_middleware(StreamRoute)
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
    for router in ROUTERS:
        app.include_router(router)
    return app


def _install_error_handlers(app: FastAPI, state: ServerState) -> None:
    def count(response: JSONResponse, code: str) -> JSONResponse:
        state.metrics.errors.labels(code).inc()
        return response

    @app.exception_handler(SteerlineError)
    async def steerline_error(_request: Request, exc: SteerlineError) -> Response:
        return state.error_response(exc)

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
