"""The routers of the HTTP/WebSocket API (SPEC §3.4), included by ``create_app``.

- :mod:`.streams`: ``POST /agents/stream``, ``GET …/stream``
- :mod:`.queue`: messages, the queue (get, edit, remove, send now, clear), abort
- :mod:`.conversations`: status, modes, list, delete, history
- :mod:`.ops`: ``/agents``, ``/healthz``, ``/metrics``
- :mod:`.ws`: the WebSocket of a conversation
- :mod:`.vercel`, :mod:`.agui`: the Vercel AI SDK and AG-UI protocol views (SPEC §3.5)
"""

from __future__ import annotations

from fastapi import APIRouter

from steerline.server.routes import agui, conversations, ops, queue, streams, vercel, ws

ROUTERS: tuple[APIRouter, ...] = (
    streams.router,
    queue.router,
    conversations.router,
    ops.router,
    ws.router,
    vercel.router,
    agui.router,
)
"""Every router of the API, in the order ``create_app`` includes them (their
routes carry the full path: each router's prefix is part of it)."""
