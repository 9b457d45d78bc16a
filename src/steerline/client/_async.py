"""The asynchronous client (``httpx2.AsyncClient``; runs on asyncio or trio through anyio)."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import anyio
import httpx2

from steerline.client import _calls
from steerline.client._calls import Call, json_object
from steerline.client._models import Reconnect, WireEvent
from steerline.client._sansio import ResumeCore, StreamState


class AsyncEventStream(StreamState):
    """The events of one stream, each exactly once and in order, across reconnections.

    ``async with client.stream(...) as events: async for event in events: ...``.
    Leaving the block closes the connection (the run on the server goes on).
    """

    def __init__(self, http: httpx2.AsyncClient, core: ResumeCore, timeout: httpx2.Timeout) -> None:
        self._http = http
        self._core = core
        self._timeout = timeout
        self._response: httpx2.Response | None = None
        self._chunks: AsyncIterator[bytes] | None = None
        self._pending: deque[WireEvent] = deque()
        self._closed = False

    async def __aenter__(self) -> AsyncEventStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop reading and close the connection."""
        self._closed = True
        self._pending.clear()
        await self._drop_response()

    def __aiter__(self) -> AsyncEventStream:
        return self

    async def __anext__(self) -> WireEvent:
        core = self._core
        while True:
            if self._pending:
                return self._pending.popleft()
            if self._closed or core.finished:
                await self._drop_response()
                raise StopAsyncIteration
            if self._chunks is None:
                await self._connect()
                continue
            try:
                chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                await self._drop_response()
                core.ended()
                continue
            except httpx2.TransportError as exc:
                await self._drop_response()
                core.failed(exc)
                continue
            try:
                self._pending.extend(core.feed(chunk))
            except BaseException:
                await self._drop_response()
                raise

    async def _connect(self) -> None:
        core = self._core
        if core.delay > 0:
            await anyio.sleep(core.delay)
        spec = core.request()
        request = self._http.build_request(
            spec.method,
            spec.path,
            headers=spec.headers,
            params=spec.params,
            json=spec.json,
            timeout=self._timeout,
        )
        try:
            response = await self._http.send(request, stream=True)
        except httpx2.TransportError as exc:
            core.failed(exc)
            return
        if response.status_code >= 300:
            try:
                body = await response.aread()
            except httpx2.TransportError as exc:
                core.failed(exc)
                return
            finally:
                await response.aclose()
            core.refused(response.status_code, response.headers, body)
            return
        try:
            core.opened(response.headers.get("content-type"))
        except BaseException:
            await response.aclose()
            raise
        self._response = response
        self._chunks = response.aiter_bytes()

    async def _drop_response(self) -> None:
        response, chunks = self._response, self._chunks
        self._response = self._chunks = None
        if chunks is not None:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        if response is not None:
            await response.aclose()


class AsyncClient:
    """A steerline server's API, asynchronously (SPEC §5; docs/client.md).

    ``base_url`` is the server's root (``http://127.0.0.1:8000``); the client
    adds the ``/api/v1`` prefix. ``timeout`` bounds every request (connect,
    write, and the answer of a plain call); a stream's read timeout is
    ``reconnect.stall_timeout``. ``transport`` replaces httpx2's (tests,
    proxies, ``httpx2.MockTransport``).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = 30.0,
        *,
        reconnect: Reconnect | None = None,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url
        self.reconnect = reconnect or Reconnect()
        self._stream_timeout = httpx2.Timeout(timeout, read=self.reconnect.stall_timeout)
        self._http = httpx2.AsyncClient(
            base_url=_calls.api_base(base_url),
            headers=_calls.auth_headers(api_key),
            timeout=timeout,
            transport=transport,
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- streams ------------------------------------------------------------------------
    def stream(
        self,
        query: str,
        conversation_id: str | None = None,
        agent_name: str | None = None,
        mode: str = "auto",
        message_id: str | None = None,
    ) -> AsyncEventStream:
        """Send ``query`` (``POST /agents/stream``) and stream until the ``done`` of the
        run that handles it. ``mode``: ``auto``, ``steer``, ``follow_up``,
        ``interrupt`` or ``reject``. Without ``conversation_id`` a new conversation
        is created (named by the SDK); without ``message_id`` one is generated."""
        body = _calls.stream_body(query, conversation_id, agent_name, mode, message_id)
        core = ResumeCore.for_message(body, self.reconnect)
        return AsyncEventStream(self._http, core, self._stream_timeout)

    def events(
        self, conversation_id: str, after: int | None = None, follow: bool = False
    ) -> AsyncEventStream:
        """The conversation's events after ``after`` (None: the retained log from its
        start), then live: until the ``done`` of the run active when the server
        answered (at once when idle), or for as long as you read with ``follow``."""
        core = ResumeCore.for_conversation(
            conversation_id, self.reconnect, after=after, follow=follow
        )
        return AsyncEventStream(self._http, core, self._stream_timeout)

    # -- messages and the queue ---------------------------------------------------------
    async def steer(
        self,
        conversation_id: str,
        content: str,
        interrupt: bool = False,
        id: str | None = None,
        priority: int = 0,
        expected_run_id: str | None = None,
    ) -> dict[str, Any]:
        """Steer the running agent (``interrupt``: with the ``immediate`` policy for this
        message); the acknowledgement ``{message_id, lane, position, run_id, queue, ...}``."""
        mode = "interrupt" if interrupt else "steer"
        call = _calls.message(conversation_id, content, mode, id, priority, expected_run_id)
        return json_object(await self._call(call))

    async def follow_up(
        self,
        conversation_id: str,
        content: str,
        id: str | None = None,
        priority: int = 0,
        expected_run_id: str | None = None,
    ) -> dict[str, Any]:
        """Queue a follow-up (starts a run on an idle conversation); the acknowledgement."""
        call = _calls.message(conversation_id, content, "follow_up", id, priority, expected_run_id)
        return json_object(await self._call(call))

    async def abort(self, conversation_id: str, clear_queues: bool = False) -> dict[str, Any]:
        """Abort the active run; the queue is kept unless ``clear_queues``."""
        return json_object(await self._call(_calls.abort(conversation_id, clear_queues)))

    async def queue(self, conversation_id: str) -> dict[str, Any]:
        """``{conversation_id, steering, follow_up}`` with each queued message whole."""
        return json_object(await self._call(_calls.queue(conversation_id)))

    async def edit_queued(
        self,
        conversation_id: str,
        message_id: str,
        *,
        content: str | None = None,
        priority: int | None = None,
        lane: str | None = None,
        before: str | None = None,
    ) -> dict[str, Any]:
        """Edit and/or move one queued message; ``{conversation_id, message, removed, queue}``."""
        call = _calls.edit_queued(
            conversation_id,
            message_id,
            content=content,
            priority=priority,
            lane=lane,
            before=before,
        )
        return json_object(await self._call(call))

    async def remove_queued(self, conversation_id: str, message_id: str) -> dict[str, Any]:
        """Remove one queued message; ``message`` in the answer is the removed one."""
        return json_object(await self._call(_calls.remove_queued(conversation_id, message_id)))

    async def move_queued(
        self,
        conversation_id: str,
        message_id: str,
        *,
        lane: str | None = None,
        before: str | None = None,
    ) -> dict[str, Any]:
        """Move one queued message to ``lane`` and/or before another one."""
        call = _calls.edit_queued(conversation_id, message_id, lane=lane, before=before)
        return json_object(await self._call(call))

    async def send_now(self, conversation_id: str) -> dict[str, Any]:
        """Start a run with the kept queue (idle only); ``{conversation_id, run_id, queue}``."""
        return json_object(await self._call(_calls.send_now(conversation_id)))

    async def clear_queue(self, conversation_id: str, lane: str = "all") -> dict[str, Any]:
        """Remove the queued messages of ``lane`` (``steering``, ``follow_up``, ``all``)."""
        return json_object(await self._call(_calls.clear_queue(conversation_id, lane)))

    # -- conversations --------------------------------------------------------------------
    async def conversation(self, conversation_id: str) -> dict[str, Any]:
        """``{status, active_run_id, queue, steering_mode, follow_up_mode, steering_policy,
        last_seq, ...}``."""
        return json_object(await self._call(_calls.conversation(conversation_id)))

    async def set_modes(
        self,
        conversation_id: str,
        *,
        steering_mode: str | None = None,
        follow_up_mode: str | None = None,
        steering_policy: str | None = None,
    ) -> dict[str, Any]:
        """Change delivery modes / steering policy; the conversation's status after it."""
        call = _calls.set_modes(conversation_id, steering_mode, follow_up_mode, steering_policy)
        return json_object(await self._call(call))

    async def history(self, conversation_id: str) -> dict[str, Any]:
        """``{items, last_seq}``: the persisted items, chunks merged per ``item_id``."""
        return json_object(await self._call(_calls.history(conversation_id)))

    async def conversations(self, limit: int = 50, offset: int = 0) -> dict[str, Any]:
        """``{conversations, limit, offset, next_offset}``, most recently updated first."""
        return json_object(await self._call(_calls.conversations(limit, offset)))

    async def delete_conversation(self, conversation_id: str) -> None:
        """Delete a conversation (its id is never reused)."""
        await self._call(_calls.delete_conversation(conversation_id))

    async def agents(self) -> dict[str, Any]:
        """``{default, agents: [{name, description, provider, model, default}]}``."""
        return json_object(await self._call(_calls.agents()))

    async def _call(self, call: Call) -> Any:
        try:
            response = await self._http.request(
                call.method, call.path, json=call.json, params=call.params
            )
        except httpx2.TransportError as exc:
            raise _calls.connection_failed(call, exc) from exc
        return _calls.result(response.status_code, response.headers, response.content)
