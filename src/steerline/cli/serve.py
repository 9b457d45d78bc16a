"""``steerline serve``: uvicorn with a SIGTERM that drains streams first.

uvicorn waits for open connections before it runs the lifespan shutdown, and
a live SSE stream never closes by itself; so on the first SIGTERM/SIGINT we
end every stream with a resume hint, then let uvicorn drain as usual.
"""

from __future__ import annotations

import asyncio
import socket
from types import FrameType

import uvicorn

from steerline.server.app import ServerState, create_app
from steerline.server.settings import ServerSettings, check_bind
from steerline.service.agents import AgentRegistry


class _DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, state: ServerState) -> None:
        super().__init__(config)
        self._state = state
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._state.begin_shutdown)
        super().handle_exit(sig, frame)


def serve(settings: ServerSettings, registry: AgentRegistry | None = None) -> None:
    check_bind(settings)
    app = create_app(settings, registry=registry)
    state: ServerState = app.state.steerline
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        timeout_graceful_shutdown=int(settings.service.shutdown_grace) + 5,
        ws_max_size=1024 * 1024,
    )
    _DrainingServer(config, state).run()
