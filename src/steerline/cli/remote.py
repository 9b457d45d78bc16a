"""``steerline chat --url``: a :class:`~steerline.cli.session.ChatSession` on a server.

Everything shown comes from the conversation's log, read with the SDK's
self-resuming ``events(follow=True)`` stream: the user's own messages, a
steer sent from the web page, the queue (``queue_updated``), the answer. The
commands are the SDK's HTTP calls; they change what the log says and the
stream shows the result, so two chats (or a chat and a page) on one
conversation show the same thing.

A new conversation does not exist on the server until its first message:
the session picks its id at once, sends the first message through
``POST /agents/stream`` (which creates it), and only then opens the stream
from the log's start.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from steerline.cli.transcript import QueueItem, Transcript, Who
from steerline.client import (
    AsyncClient,
    AsyncEventStream,
    ClientError,
    NotFound,
    StreamFailed,
    WireEvent,
)
from steerline.core.ids import new_id
from steerline.runtime.inbox import Lane
from steerline.wire.translate import tool_result_text

_WHO: dict[str, Who] = {"prompt": "prompt", "steer": "steer", "follow_up": "follow_up"}


def _text(content: Any) -> str:
    """The text of a queued message's content parts (images shown as ``[image]``)."""
    if isinstance(content, str):
        return content
    parts = []
    for part in content if isinstance(content, list) else []:
        if isinstance(part, dict) and part.get("type") == "text":
            parts.append(str(part.get("text", "")))
        else:
            parts.append("[image]")
    return "".join(parts)


def _queue_items(lane: Lane, entries: Any) -> list[QueueItem]:
    if not isinstance(entries, list):
        return []
    return [
        QueueItem(id=str(e.get("id", "")), lane=lane, text=str(e.get("preview", "")))
        for e in entries
        if isinstance(e, dict)
    ]


class WireFeed:
    """Feeds a :class:`Transcript` with wire events (SPEC §3.2), one at a time.

    The translation is kept apart from the I/O so it can be tested on a list
    of events. Chunks of one item are one block; a new ``item_id`` closes the
    previous block (the wire has no per-block end for text).
    """

    def __init__(self, transcript: Transcript) -> None:
        self.transcript = transcript
        self._item: str | None = None
        self._failure: str | None = None
        """The error of a ``task_failed``, shown with the ``done`` that follows it."""
        self._noticed: str | None = None
        """The text of this run's ``system_failed``, already shown as a notice."""
        self.history_until = 0
        """Events up to this seq are history (replayed on attach): the wire has no
        times, so a replayed run's duration is not shown (it would say 0.0s)."""

    def __call__(self, event: WireEvent) -> None:
        name, data = event.event, event.data
        payload = data.get("payload")
        payload = payload if isinstance(payload, dict) else {}
        t = self.transcript
        if name in ("message_chunk", "reasoning"):
            kind: Any = "text" if name == "message_chunk" else "thinking"
            item = data.get("item_id")
            if item != self._item:
                t.block_ended()
                self._item = item
            t.delta(kind, str(payload.get("content", "")))
            return
        self._item = None
        if name == "reasoning_started":
            t.block_started("thinking")
        elif name == "reasoning_completed":
            t.block_ended()
        elif name == "task_started":
            t.run_started(str(data.get("task_id") or ""))
        elif name == "thread_started":
            metadata = data.get("metadata")
            delivery = metadata.get("delivery") if isinstance(metadata, dict) else None
            t.user_message(_WHO.get(str(delivery), "prompt"), str(payload.get("content", "")))
        elif name == "tool_call_started":
            args = payload.get("tool_args")
            t.tool_started(
                str(payload.get("tool_call_id", "")),
                str(payload.get("tool_name", "")),
                args if isinstance(args, dict) else {},
            )
        elif name == "tool_call_completed":
            t.tool_ended(
                str(payload.get("tool_call_id", "")),
                str(payload.get("tool_name", "")),
                tool_result_text(str(payload.get("tool_result", ""))),
                is_error=bool(payload.get("is_error")),
                skipped=bool(payload.get("skipped")),
            )
        elif name == "task_failed":
            failure = str(payload.get("error") or payload.get("content") or "")
            # a lost or failed run says it twice (system_failed, then task_failed)
            self._failure = None if failure == self._noticed else failure
        elif name == "done":
            t.run_ended(
                str(payload.get("stop_reason", "completed")),
                self._failure,
                timed=event.seq > self.history_until,
            )
            self._failure = self._noticed = None
        elif name == "queue_updated":
            t.queue_changed(
                [
                    *_queue_items("steering", payload.get("steering")),
                    *_queue_items("follow_up", payload.get("follow_up")),
                ]
            )
        elif name == "system_failed":
            self._noticed = str(payload.get("content") or payload.get("message") or "")
            t.notice(self._noticed, error=True)


class RemoteSession:
    """A conversation on a steerline server, driven through the SDK."""

    def __init__(
        self,
        client: AsyncClient,
        *,
        url: str,
        conversation_id: str | None = None,
        agent_name: str | None = None,
        transcript: Transcript | None = None,
    ) -> None:
        self.client = client
        self.transcript = transcript or Transcript()
        self.agent_name = agent_name
        self.conversation_id = conversation_id or new_id("conv")
        self._exists = anyio.Event()
        if conversation_id is not None:
            self._exists.set()
        self.title = f"{url} · conversation {self.conversation_id}"
        self._feed = WireFeed(self.transcript)
        self._group: TaskGroup | None = None
        self._starting = False
        """A message that starts a run was sent; its ``task_started`` is not here yet."""
        self.last_seq: int | None = None
        self._events: AsyncEventStream | None = None
        """The log stream being read (it knows whether it is reconnecting)."""
        self._gave_up = False
        """The SDK gave up reconnecting; the chat tries again in a moment."""
        self.transcript.link = self.link_problem

    @property
    def running(self) -> bool:
        return self._starting or self.transcript.running

    @property
    def has_queue(self) -> bool:
        return bool(self.transcript.queued)

    def link_problem(self) -> str | None:
        """What the status line says about the connection, ``None`` while it is fine."""
        events = self._events
        if events is not None and events.connected:
            return None
        if self._gave_up:
            return "server unreachable; trying again"
        if events is not None and events.reconnecting:
            return "reconnecting to the server"
        return None

    # -- reading the log ---------------------------------------------------------
    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as group:
            self._group = group
            task_status.started()
            try:
                await self._exists.wait()
                if self.last_seq is None and not self._starting:
                    await self._mark_history()
                await self._follow()
            finally:
                self._group = None

    async def _mark_history(self) -> None:
        """Attaching to a conversation: what its log holds now is history."""
        try:
            status = await self.client.conversation(self.conversation_id)
        except ClientError:
            return  # the stream reports what is wrong
        last = status.get("last_seq")
        self._feed.history_until = last if isinstance(last, int) else 0

    async def _follow(self) -> None:
        """Read the log from its start (history), then live, for as long as the chat runs."""
        while True:
            try:
                async with self.client.events(
                    self.conversation_id, after=self.last_seq, follow=True
                ) as events:
                    self._events = events
                    async for event in events:
                        self._gave_up = False
                        self.last_seq = event.seq
                        if event.event == "task_started":
                            self._starting = False
                        self._feed(event)
            except NotFound:
                self.transcript.notice(
                    f"conversation {self.conversation_id} does not exist on the server", error=True
                )
                return
            except StreamFailed as exc:
                self._gave_up = True
                self.transcript.notice(f"connection lost ({exc}); retrying", error=True)
            except ClientError as exc:
                self.transcript.notice(f"stream refused: {exc}", error=True)
                return
            # the SDK gave up reconnecting: wait a little before trying again
            await anyio.sleep(2.0)

    # -- commands ----------------------------------------------------------------
    def send(self, text: str) -> None:
        if self.running:
            self._call(lambda: self.client.steer(self.conversation_id, text))
        else:
            self._start(text)

    def interrupt(self, text: str) -> None:
        if self.running:
            self._call(lambda: self.client.steer(self.conversation_id, text, interrupt=True))
        else:
            self._start(text)

    def follow_up(self, text: str) -> None:
        if self._exists.is_set():
            self._call(lambda: self.client.follow_up(self.conversation_id, text))
        else:
            self._start(text)

    def abort(self) -> None:
        self._call(lambda: self.client.abort(self.conversation_id))

    def send_queue(self) -> None:
        if self.running:
            return
        self.transcript.notice("sending the kept queue")
        self._starting = True
        self._call(lambda: self.client.send_now(self.conversation_id))

    async def take_queue(self) -> list[str]:
        if not self._exists.is_set():
            return []
        try:
            result = await self.client.clear_queue(self.conversation_id)
        except ClientError as exc:
            self.transcript.notice(f"queue not taken: {exc}", error=True)
            return []
        removed = result.get("removed")
        return [_text(m.get("content")) for m in removed or [] if isinstance(m, dict)]

    async def aclose(self) -> None:
        """Stop reading (the run on the server goes on), then close the client."""
        if self._group is not None:
            self._group.cancel_scope.cancel()
        await self.client.aclose()

    # -- internals ---------------------------------------------------------------
    def _start(self, text: str) -> None:
        """Start a run with ``text`` (``auto``: a follow-up if a run began meanwhile)."""
        self._starting = True
        self._spawn(self._post_prompt, text)

    async def _post_prompt(self, text: str) -> None:
        try:
            async with self.client.stream(
                text, conversation_id=self.conversation_id, agent_name=self.agent_name
            ) as events:
                async for _ in events:  # the first event: accepted (the log shows the rest)
                    break
        except ClientError as exc:
            self._starting = False
            self.transcript.notice(f"not sent: {exc}", error=True)
            return
        self._exists.set()

    def _call(self, action: Callable[[], Awaitable[object]]) -> None:
        async def guarded() -> None:
            try:
                await action()
            except ClientError as exc:
                self._starting = False
                self.transcript.notice(f"not sent: {exc}", error=True)

        self._spawn(guarded)

    def _spawn(self, func: Callable[..., Coroutine[Any, Any, object]], *args: object) -> None:
        if self._group is None:
            self.transcript.notice("the session is not running", error=True)
            return
        self._group.start_soon(func, *args)
