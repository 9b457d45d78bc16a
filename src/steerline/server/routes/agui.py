"""AG-UI 1.0 (SPEC §3.5): ``HttpAgent``'s endpoint and a resume stream.

``POST /api/v1/ag-ui`` takes a ``RunAgentInput`` and answers the run that
handles its last user message as AG-UI events; ``GET
/api/v1/ag-ui/{threadId}/stream`` joins or resumes a conversation. Both are
views of the log (:mod:`steerline.wire.agui`) through the native streaming
machinery: same authentication, tenant, stream slots, rate limit and
``on_disconnect`` as ``POST /agents/stream`` and ``GET …/stream``. Steering
stays on the native endpoints. See docs/protocols.md.

Declared in the OpenAPI document as streams of AG-UI events
(``server/openapi.py``); docs/protocols.md describes them.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from steerline.core.text import MAX_ID_LENGTH, check_id, check_text
from steerline.log.base import RetentionError
from steerline.server.deps import (
    API,
    Conv,
    Tenant,
    check_body_conversation_id,
    check_on_disconnect,
    resume_point,
    server_state,
)
from steerline.server.errors import HTTPError
from steerline.server.routes.streams import (
    StreamingEndpoint,
    accept_message,
    check_resume_point,
    join_plan,
    stream_response,
)
from steerline.server.state import ServerState
from steerline.service.conversation import check_submit_mode
from steerline.service.service import ConversationHandle
from steerline.transports.agui import AguiEncoder
from steerline.wire.agui import AguiTranslator

router = APIRouter(prefix=f"{API}/ag-ui", tags=["ag-ui"])

MODES = ("auto", "steer", "follow_up")
"""``forwardedProps.steerline.mode`` (SPEC §3.5)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", alias_generator=to_camel, populate_by_name=True)


class AguiMessage(_Model):
    """One message of ``RunAgentInput.messages`` (only the prompt's is read)."""

    id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    role: str
    content: Any = None


class RunAgentInput(_Model):
    """AG-UI's ``RunAgentInput``; ``tools``, ``context``, ``state`` are accepted and ignored."""

    thread_id: str = Field(min_length=1, max_length=128)
    """The conversation (created with this id when new)."""
    run_id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    messages: list[AguiMessage]
    forwarded_props: Any = None
    """``{"steerline": {"mode": "auto" | "steer" | "follow_up", "agent": NAME}}``, both optional."""


def _options(forwarded: Any) -> tuple[str, str | None]:
    """``forwardedProps.steerline``'s mode and agent."""
    props = forwarded.get("steerline") if isinstance(forwarded, dict) else None
    if props is None:
        return "auto", None
    if not isinstance(props, dict):
        raise HTTPError(400, "invalid_value", "forwardedProps.steerline must be an object")
    mode = props.get("mode", "auto")
    if mode not in MODES:
        raise HTTPError(
            400, "invalid_value", f"forwardedProps.steerline.mode must be one of {', '.join(MODES)}"
        )
    agent = props.get("agent")
    if agent is not None and (not isinstance(agent, str) or not agent):
        raise HTTPError(400, "invalid_value", "forwardedProps.steerline.agent must be a name")
    return mode, agent


def _prompt(messages: list[AguiMessage]) -> tuple[str, str]:
    """The last user message: its id and text (text parts joined by newlines)."""
    for message in reversed(messages):
        if message.role == "user":
            break
    else:
        raise HTTPError(400, "invalid_value", "messages has no user message")
    content = message.content
    if isinstance(content, list):
        texts: list[str] = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise HTTPError(400, "invalid_value", "only text parts are supported in content")
            text = part.get("text")
            if not isinstance(text, str):
                raise HTTPError(400, "invalid_value", "a text part needs a text string")
            texts.append(text)
        content = "\n".join(texts)
    if not isinstance(content, str) or not content:
        raise HTTPError(400, "invalid_value", "the last user message has no text")
    return check_id(message.id, "message id"), content


@router.post("", response_model=None)
async def run_agent(
    request: Request,
    body: RunAgentInput,
    tenant_name: Tenant,
    on_disconnect: str = "continue",
) -> StreamingEndpoint:
    """Send the last user message and stream the run that handles it as AG-UI events."""
    state = server_state(request)
    check_on_disconnect(on_disconnect)
    thread_id = check_body_conversation_id(body.thread_id, "threadId")
    mode, agent = _options(body.forwarded_props)
    message_id, text = _prompt(body.messages)
    check_text(body.run_id, "runId")
    submit_mode = check_submit_mode(mode)
    conv, plan = await accept_message(
        state, tenant_name, thread_id, agent, text, mode=submit_mode, message_id=message_id
    )
    translator = AguiTranslator(thread_id, (m.id for m in body.messages))
    opening = translator.start(body.run_id)
    encoder = AguiEncoder(translator, opening, state.settings.stream.retry_ms)
    return stream_response(request, state, tenant_name, conv, plan, on_disconnect, encoder)


@router.get("/{conversation_id}/stream", response_model=None)
async def join_run(
    request: Request,
    conv: Conv,
    tenant_name: Tenant,
    on_disconnect: str = "continue",
) -> StreamingEndpoint:
    """Join or resume (``Last-Event-ID`` / ``?after=``): ``RUN_STARTED``, the
    messages so far, what is still open re-opened, then live to the run's end."""
    state = server_state(request)
    check_on_disconnect(on_disconnect)
    state.conversations.check_writable()  # the stream would end at once with a hint
    release = state.gate.open_stream(tenant_name)
    release()  # a free slot, before the log is read
    start = resume_point(request)
    if start is None:
        start = state.log.committed_seq(conv.id)
    else:
        await check_resume_point(state, conv, start)
    translator = AguiTranslator(conv.id)
    await _fold(state, conv, translator, start)
    plan = join_plan(state, conv, start, follow=False)
    opening = translator.resume(plan.run_id if plan.stop == "run_done" else None)
    encoder = AguiEncoder(translator, opening, state.settings.stream.retry_ms)
    return stream_response(request, state, tenant_name, conv, plan, on_disconnect, encoder)


async def _fold(
    state: ServerState, conv: ConversationHandle, translator: AguiTranslator, until: int
) -> None:
    """Feed the retained log up to ``until`` to ``translator`` (its output unused)."""
    log = state.log
    after = max(0, await log.oldest_seq(conv.id) - 1)
    while after < until:
        try:
            batch = await log.read(conv.id, after, 2000)
        except RetentionError:  # trimmed while read: what is retained
            after = max(after, await log.oldest_seq(conv.id) - 1)
            continue
        if not batch:
            break
        for stored in batch:
            if stored.seq > until:
                return
            translator.feed(stored.envelope)
        after = batch[-1].seq
