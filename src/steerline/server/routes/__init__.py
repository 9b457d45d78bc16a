"""The routers of the HTTP/WebSocket API (SPEC §3.4), included by ``create_app``.

- :mod:`.streams`: ``POST /agents/stream``, ``GET …/stream``
- :mod:`.queue`: messages, the queue (get, edit, remove, send now, clear), abort
- :mod:`.conversations`: status, modes, list, delete, history
- :mod:`.ops`: ``/agents``, ``/healthz``, ``/metrics``
- :mod:`.ws`: the WebSocket of a conversation
"""

from __future__ import annotations

from fastapi import APIRouter

from steerline.server.routes import conversations, ops, queue, streams, ws

ROUTERS: tuple[APIRouter, ...] = (
    streams.router,
    queue.router,
    conversations.router,
    ops.router,
    ws.router,
)
"""Every router of the API, in the order ``create_app`` includes them (their
routes carry the full path: each router's prefix is part of it)."""
