"""The WebSocket of a conversation (SPEC §3.3; frames in docs/protocol.md)."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from steerline.core.errors import SteerlineError
from steerline.server.deps import API, check_conversation_id, client_address, server_state
from steerline.transports.tail import EndReason
from steerline.transports.websocket import WebSocketSession, refuse_websocket

router = APIRouter(prefix=API)

_CLOSE_CODES = {"conversation_not_found": 4404, "invalid_value": 4400, "rate_limited": 4429}
"""Close codes of a refused handshake by error code; any other refusal: 4403."""


@router.websocket("/conversations/{conversation_id}/ws")
async def websocket(websocket: WebSocket, conversation_id: str) -> None:
    state = server_state(websocket)
    settings = state.settings
    try:
        tenant_name = state.gate.authenticate(
            websocket.headers, websocket.query_params, client_address(websocket)
        )
        state.gate.check_rate(tenant_name)
        check_conversation_id(conversation_id)
        conv = await state.conversations.open(tenant_name, conversation_id)
        release = state.gate.open_stream(tenant_name)
    except SteerlineError as exc:
        code = _CLOSE_CODES.get(exc.code, 4403)
        await refuse_websocket(websocket, exc.code, exc.message, code)
        return
    await websocket.accept()
    detach = conv.attach()
    state.metrics.live_streams.labels("websocket").inc()
    session = WebSocketSession(
        websocket,
        conv,
        state.log,
        settings=settings.stream,
        registry=state.streams,
        auto_continue=settings.service.auto_continue,
        on_events=state.metrics.events.labels("websocket").inc,
        on_frame=lambda: state.gate.check_rate(tenant_name),
    )
    try:
        await session.run()
    finally:
        release()
        detach()
        state.metrics.live_streams.labels("websocket").dec()
        if session.end_reason is EndReason.SLOW:
            state.metrics.dropped.inc()
