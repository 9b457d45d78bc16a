"""Vercel AI SDK UI message stream v1 (SPEC §3.5): ``useChat``'s endpoints.

(Being built: see docs/protocols.md.)
"""

from __future__ import annotations

from fastapi import APIRouter

from steerline.server.deps import API

router = APIRouter(prefix=f"{API}/vercel", tags=["vercel"])
