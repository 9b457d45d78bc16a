"""Message and queue routes: steer or follow up, edit/remove/move/send queued
messages, clear the queue, abort (SPEC §2.9, §3.4).

Every route here decodes its request into a command of
:mod:`steerline.service.commands` and runs it with ``Conversation.execute``,
as the WebSocket frames do; the answer is the command's result.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Request
from pydantic import BaseModel, Field

from steerline.server.deps import API, MAX_PRIORITY, Conv, execute
from steerline.server.errors import HTTPError
from steerline.service.commands import (
    Abort,
    ClearQueue,
    Command,
    EditQueued,
    FollowUp,
    MoveQueued,
    RemoveQueued,
    SendNow,
    Steer,
)

router = APIRouter(prefix=API)


class MessageRequest(BaseModel):
    content: str = Field(min_length=1)
    mode: Literal["steer", "follow_up", "interrupt"] = "follow_up"
    """``interrupt`` (an extension): steer with the ``immediate`` policy for this
    message only, as on ``/agents/stream``."""
    id: str | None = Field(default=None, min_length=1, max_length=200)
    priority: int = Field(default=0, ge=-MAX_PRIORITY, le=MAX_PRIORITY)
    expected_run_id: str | None = Field(default=None, min_length=1, max_length=200)
    """Race-safe steering: 409 ``run_mismatch`` (nothing queued) unless this run
    is the active one."""


class QueuedEditRequest(BaseModel):
    """``PATCH …/queue/{message_id}``: edit and/or move one queued message."""

    content: str | None = Field(default=None, min_length=1)
    priority: int | None = Field(default=None, ge=-MAX_PRIORITY, le=MAX_PRIORITY)
    lane: Literal["steering", "follow_up"] | None = None
    before: str | None = Field(default=None, min_length=1, max_length=200)


class AbortRequest(BaseModel):
    clear_queues: bool = False


@router.post("/conversations/{conversation_id}/messages", status_code=202)
async def post_message(request: Request, conv: Conv, body: MessageRequest) -> dict[str, Any]:
    """Steer or queue a follow-up without streaming (202 with the acknowledgement:
    lane, position and the run that takes it, and the queue)."""
    command: Command = (
        FollowUp(
            content=body.content,
            id=body.id,
            priority=body.priority,
            expected_run_id=body.expected_run_id,
        )
        if body.mode == "follow_up"
        else Steer(
            content=body.content,
            id=body.id,
            priority=body.priority,
            interrupt=body.mode == "interrupt",
            expected_run_id=body.expected_run_id,
        )
    )
    return await execute(request, conv, command)


@router.patch("/conversations/{conversation_id}/queue/{message_id}")
async def edit_queued(
    request: Request, conv: Conv, message_id: str, body: QueuedEditRequest
) -> dict[str, Any]:
    """Edit (content, priority) and/or move (lane, before) one queued message."""
    result: dict[str, Any] = {}
    if body.content is not None or body.priority is not None:
        edit = EditQueued(id=message_id, content=body.content, priority=body.priority)
        result = await execute(request, conv, edit)
    if body.lane is not None or body.before is not None:
        move = MoveQueued(id=message_id, lane=body.lane, before=body.before)
        result = await execute(request, conv, move)
    if not result:
        raise HTTPError(
            400, "invalid_value", "nothing to change: give content, priority, lane or before"
        )
    return result


@router.delete("/conversations/{conversation_id}/queue/{message_id}")
async def remove_queued(request: Request, conv: Conv, message_id: str) -> dict[str, Any]:
    """Remove one queued message (409 ``already_delivered`` once it was delivered)."""
    return await execute(request, conv, RemoveQueued(id=message_id))


@router.post("/conversations/{conversation_id}/queue/send")
async def send_queue_now(request: Request, conv: Conv) -> dict[str, Any]:
    """Start a run with the kept queue (idle conversations; 409 while running)."""
    return await execute(request, conv, SendNow())


@router.post("/conversations/{conversation_id}/abort")
async def abort(
    request: Request, conv: Conv, body: Annotated[AbortRequest | None, Body()] = None
) -> dict[str, Any]:
    """Abort the active run; queued messages stay unless ``clear_queues``."""
    return await execute(request, conv, Abort(clear_queues=bool(body and body.clear_queues)))


@router.delete("/conversations/{conversation_id}/queue")
async def clear_queue(
    request: Request, conv: Conv, lane: Literal["steering", "follow_up", "all"] = "all"
) -> dict[str, Any]:
    """Remove queued messages of one lane or both; returns them."""
    return await execute(request, conv, ClearQueue(lane=lane))


@router.get("/conversations/{conversation_id}/queue")
async def get_queue(conv: Conv) -> dict[str, Any]:
    """The queued messages of both lanes, with their whole content."""
    return {"conversation_id": conv.id, **conv.status()["queue"]}  # type: ignore[dict-item]
