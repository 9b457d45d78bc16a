"""Operational routes: the configured agents, liveness, Prometheus metrics."""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from steerline.server.deps import API, Tenant, client_address, server_state
from steerline.server.errors import HTTPError
from steerline.server.settings import is_loopback_address
from steerline.server.state import ServerState

router = APIRouter()


@router.get(f"{API}/agents")
async def agents(request: Request, tenant_name: Tenant) -> dict[str, Any]:
    """The configured agents; ``default`` is the one a request without ``agent_name`` gets."""
    registry = server_state(request).registry
    default = registry.default
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
            for spec in registry.specs()
        ],
    }


@router.get("/healthz", tags=["ops"])
async def healthz(request: Request) -> Response:
    """Liveness: 503 while starting, stopping, or while the store cannot write."""
    state = server_state(request)
    if state.service is None:
        return JSONResponse({"status": "starting"}, status_code=503)
    if not state.log.available:
        return JSONResponse(
            {"status": "unavailable", "reason": "the store cannot write"}, status_code=503
        )
    return JSONResponse({"status": "ok"})


@router.get("/metrics", tags=["ops"])
async def metrics(request: Request) -> Response:
    """Prometheus text format: loopback clients only, unless a metrics key is set."""
    state = server_state(request)
    _check_metrics_access(request, state)
    service = state.service
    live = service.live_conversations() if service else []
    if service is not None:
        state.metrics.sync_runs(service.runs_started)
    state.metrics.queue_depth.set(sum(len(c.agent.inbox) for c in live))
    state.metrics.running.set(sum(1 for c in live if c.busy))
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")


def _check_metrics_access(request: Request, state: ServerState) -> None:
    """With ``metrics_key``: its bearer token (failures count like any failed
    authentication); without: loopback clients only."""
    key = state.settings.metrics_key
    client = client_address(request)
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
