"""AG-UI 1.0 (SPEC §3.5): ``HttpAgent``'s endpoint and a resume stream.

(Being built: see docs/protocols.md.)
"""

from __future__ import annotations

from fastapi import APIRouter

from steerline.server.deps import API

router = APIRouter(prefix=f"{API}/ag-ui", tags=["ag-ui"])
