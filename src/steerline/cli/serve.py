"""``steerline serve``: uvicorn with a SIGTERM that drains streams first.

uvicorn waits for open connections before it runs the lifespan shutdown, and
a live SSE stream never closes by itself; so on the first SIGTERM/SIGINT we
end every stream with a resume hint, then let uvicorn drain as usual.

Start-up order matters (SPEC §4): uvicorn would run the lifespan (open the
store, recover "lost" runs) before it binds the port, so a second server on
the same port and file would first mark the live server's run as lost. Here
the port is bound first, then the store's ownership lock is taken, and only
then does uvicorn start: a second server exits 2 having changed nothing.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
from types import FrameType

import uvicorn

from steerline.config import ConfigError, EndpointCheckError, SteerlineConfig, check_agent
from steerline.core.errors import PortInUseError as PortInUseError
from steerline.server.app import ServerState, create_app
from steerline.server.serving import uvicorn_options
from steerline.server.settings import ServerSettings, check_bind, resolve_bind


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


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (an empty host means every interface)."""
    try:
        infos = resolve_bind(host, port)
    except socket.gaierror as exc:
        raise PortInUseError(f"cannot resolve host {host!r}: {exc}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(2048)  # listening, not just bound: the next bind now fails
    except OSError as exc:
        sock.close()
        raise PortInUseError(f"cannot listen on {host or '*'}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


_UNTIL: dict[str, str] = {
    "unreachable": "until it is reachable",
    "key_refused": "until the endpoint accepts the key",
    "model_not_served": "until the endpoint serves that model",
}


async def check_agents(config: SteerlineConfig) -> None:
    """Reach every configured agent's endpoint once at start-up and say so.

    An unreachable endpoint, a refused key or a model the endpoint does not
    serve is a clear warning now rather than a stack trace mid-run; the
    server still starts (the endpoint may come up later).
    """
    for agent in config.agents.values():
        try:
            logger.info("%s", await check_agent(agent, within=5.0))
        except EndpointCheckError as exc:
            until = _UNTIL.get(exc.reason, _UNTIL["unreachable"])
            logger.warning("%s (runs of this agent will fail %s)", exc.message, until)
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
    sock = bind_socket(settings.host, settings.port)
    try:
        state.log.acquire()  # before anything opens the store
    except BaseException:
        sock.close()
        raise
    uvicorn_config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        timeout_graceful_shutdown=int(settings.service.shutdown_grace) + 5,
        **uvicorn_options(settings),  # header/keep-alive timeouts, WebSocket limits
    )
    calm_garbage_collector()
    _DrainingServer(uvicorn_config, state).run(sockets=[sock])


GC_FIRST_THRESHOLD = 7000
"""Allocations between young collections (CPython's default: 700)."""


def calm_garbage_collector() -> None:
    """Keep the collector's full passes short on a server with many streams.

    Everything imported and built before serving (modules, the app, the
    agents) is moved out of the collector's sight with :func:`gc.freeze`, and
    young collections run ten times less often: with 1,000 open streams the
    full collections took 130-300 ms about once a second, which every viewer
    felt as a stall (benchmarks/README.md, viewers figure).
    """
    gc.collect()
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(GC_FIRST_THRESHOLD, second, third)
