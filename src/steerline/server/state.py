"""What every request handler reaches through ``request.app.state.steerline``."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.responses import JSONResponse

from steerline.core.errors import SteerlineError
from steerline.log.base import EventLog
from steerline.server.auth import TenantGate
from steerline.server.errors import HTTPError, steerline_error_response
from steerline.server.metrics import Metrics
from steerline.server.settings import ServerSettings
from steerline.service.agents import AgentRegistry
from steerline.service.service import ConversationService
from steerline.transports.tail import StreamRegistry


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

    def error_response(self, exc: SteerlineError) -> JSONResponse:
        """The JSON answer to ``exc``, counted in the error metrics (the app's
        error handler and the routes served in front of FastAPI use it)."""
        self.metrics.errors.labels(exc.code).inc()
        return steerline_error_response(exc)

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
