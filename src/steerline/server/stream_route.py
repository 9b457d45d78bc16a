"""``GET …/conversations/{id}/stream`` served as plain ASGI, in front of FastAPI.

A viewer's request stays on the stack for as long as its stream is open, so
whatever the request passes through is held per viewer: FastAPI's router,
its exception middleware and exit stacks, the dependency results and the
request object. Measured with 200-500 idle viewers, that was ~16 KiB of the
~31 KiB a viewer cost (benchmarks/README.md, RSS figure). This route reads
the same parameters with the same functions (:mod:`steerline.server.deps`)
and runs the same body (:func:`~steerline.server.routes.streams.join_stream`),
so answers and errors are the FastAPI route's; that route stays declared for
the OpenAPI document and serves anything this one passes on (``HEAD``, a
trailing slash).

It sits inside the body-limit and CORS middleware (so CORS headers and the
outer error handling still apply) and ahead of FastAPI's router.
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from steerline.core.errors import SteerlineError
from steerline.server.deps import API, conversation, server_state, tenant
from steerline.server.errors import HTTPError
from steerline.server.routes.streams import join_stream

_PATH = re.compile(rf"{re.escape(API)}/conversations/(?P<conversation_id>[^/]+)/stream")

_TRUE = frozenset(("1", "on", "t", "true", "y", "yes"))
_FALSE = frozenset(("0", "off", "f", "false", "n", "no"))


def parse_flag(value: str | None, name: str) -> bool:
    """A boolean query parameter as FastAPI reads one (pydantic's lax bool),
    with the same 422 for anything else."""
    if value is None:
        return False
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise HTTPError(
        422,
        "invalid_request",
        f"query.{name}: Input should be a valid boolean, unable to interpret input",
    )


class StreamRoute:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path: str = scope["path"]
            root = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root) :]
            match = _PATH.fullmatch(path)
            if match is not None:
                await self._serve(scope, receive, send, match["conversation_id"])
                return
        await self.app(scope, receive, send)

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, conversation_id: str
    ) -> None:
        request = Request(scope, receive)
        state = server_state(request)
        try:
            # the order of FastAPI's route: its dependencies, then its parameters
            tenant_name = await tenant(request)
            conv = await conversation(conversation_id, request, tenant_name)
            query = request.query_params
            follow = parse_flag(query.get("follow"), "follow")
            on_disconnect = query.get("on_disconnect", "continue")
            response = await join_stream(request, tenant_name, conv, follow, on_disconnect)
        except SteerlineError as exc:
            await state.error_response(exc)(scope, receive, send)
            return
        del request, conv, query  # nothing of the request is held while streaming
        await response(scope, receive, send)
