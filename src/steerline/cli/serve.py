"""``steerline serve``: uvicorn with a SIGTERM that drains streams first.

uvicorn waits for open connections before it runs the lifespan shutdown, and
a live SSE stream never closes by itself; so on the first SIGTERM/SIGINT we
end every stream with a resume hint, then let uvicorn drain as usual.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from types import FrameType

import uvicorn

from steerline.config import ConfigError, SteerlineConfig, check_agent
from steerline.server.app import ServerState, create_app
from steerline.server.settings import ServerSettings, check_bind


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


logger = logging.getLogger("steerline")


async def check_agents(config: SteerlineConfig) -> None:
    """Reach every configured agent's endpoint once at start-up and say so.

    An unreachable endpoint is a clear warning now rather than a stack trace
    mid-run; the server still starts (the endpoint may come up later).
    """
    for agent in config.agents.values():
        try:
            logger.info("%s", await check_agent(agent, within=5.0))
        except ConfigError as exc:
            logger.warning("%s (runs of this agent will fail until it is reachable)", exc.message)
        except Exception as exc:  # a check must never keep the server from starting
            logger.warning("agent %r: endpoint check failed: %s", agent.name, exc)


def serve(settings: ServerSettings, config: SteerlineConfig | None = None) -> None:
    check_bind(settings)
    logging.basicConfig(level=logging.INFO, format="%(levelname)-9s %(message)s")
    app = create_app(
        settings,
        registry=config.registry() if config is not None else None,
        on_startup=[lambda: check_agents(config)] if config is not None else [],
        on_shutdown=[config.aclose] if config is not None else [],
    )
    state: ServerState = app.state.steerline
    uvicorn_config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        timeout_graceful_shutdown=int(settings.service.shutdown_grace) + 5,
        ws_max_size=1024 * 1024,
    )
    _DrainingServer(uvicorn_config, state).run()
