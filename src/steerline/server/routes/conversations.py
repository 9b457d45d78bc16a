"""Conversation routes: status, delivery modes, list, delete, history."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from starlette.responses import Response

from steerline.server.deps import (
    API,
    MAX_INT,
    Conv,
    Tenant,
    check_conversation_id,
    execute,
    server_state,
)
from steerline.server.history import build_history
from steerline.service.commands import SetModes

router = APIRouter(prefix=API)


class ModesRequest(BaseModel):
    steering_mode: Literal["one-at-a-time", "all"] | None = None
    follow_up_mode: Literal["one-at-a-time", "all"] | None = None
    steering_policy: Literal["immediate", "after_tool", "after_turn"] | None = None


@router.get("/conversations/{conversation_id}")
async def get_conversation(conv: Conv) -> dict[str, object]:
    """Status, active run, queue snapshot, modes and policy."""
    return conv.status()


@router.patch("/conversations/{conversation_id}")
async def patch_conversation(request: Request, conv: Conv, body: ModesRequest) -> dict[str, object]:
    """Change delivery modes or steering policy (applies at the next poll)."""
    await execute(request, conv, SetModes(**body.model_dump()))
    return conv.status()


@router.get("/conversations/{conversation_id}/history")
async def history(request: Request, conv: Conv) -> dict[str, Any]:
    """Persisted items in order, chunks merged per ``item_id``."""
    return await build_history(server_state(request).log, conv.id)


@router.get("/conversations")
async def list_conversations(
    request: Request,
    tenant_name: Tenant,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_INT)] = 0,
) -> dict[str, Any]:
    """The tenant's conversations, most recently updated first."""
    service = server_state(request).conversations
    records = await service.list_records(tenant_name, limit=limit, offset=offset)
    return {
        "conversations": [
            {
                "conversation_id": r.id,
                "agent_name": r.agent_name,
                "status": r.status,
                "created_at": r.created_at,
                "updated_at": r.updated_at,
            }
            for r in records
        ],
        "limit": limit,
        "offset": offset,
        "next_offset": offset + len(records) if len(records) == limit else None,
    }


@router.delete("/conversations/{conversation_id}", status_code=204)
async def delete_conversation(
    request: Request, conversation_id: str, tenant_name: Tenant
) -> Response:
    """Delete a conversation; its id is never reused."""
    check_conversation_id(conversation_id)
    await server_state(request).conversations.delete(tenant_name, conversation_id)
    return Response(status_code=204)
