"""Commands sent together in one round trip, on one Redis or on a cluster.

On one Redis a batch is a pipeline. redis-py refuses scripts in a cluster
pipeline (a script's node is only known from its keys, and a ``NOSCRIPT``
reply cannot be retried inside one), so on a cluster the scripts of a batch
run concurrently, each on its node's connection, and its plain commands go
in one cluster pipeline beside them: still one round trip per node, and the
replies come back in the order the commands were added.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.commands.core import AsyncScript


class Batch:
    def __init__(self, client: Any, cluster: bool) -> None:
        self._cluster = cluster
        self._pipe = client.pipeline(transaction=False)
        self._scripts: list[tuple[int, AsyncScript, list[Any], list[Any]]] = []
        self._size = 0
        self._piped: list[int] = []
        """The positions of the commands that went to the pipeline."""

    async def script(self, script: AsyncScript, keys: list[Any], args: list[Any]) -> None:
        if self._cluster:
            self._scripts.append((self._size, script, keys, args))
        else:
            await script(keys=keys, args=args, client=self._pipe)
            self._piped.append(self._size)
        self._size += 1

    def command(self, name: str, *args: Any, **kwargs: Any) -> None:
        getattr(self._pipe, name)(*args, **kwargs)
        self._piped.append(self._size)
        self._size += 1

    def __len__(self) -> int:
        return self._size

    async def execute(self) -> list[Any]:
        """Every reply in order; a command's error is its reply (as
        ``raise_on_error=False``), except that an unreachable Redis raises."""

        if not self._scripts:  # one Redis (or no script): the pipeline alone
            if not self._piped:
                return []
            everything: list[Any] = await self._pipe.execute(raise_on_error=False)
            return everything

        async def piped() -> list[Any]:
            if not self._piped:
                return []
            replies: list[Any] = await self._pipe.execute(raise_on_error=False)
            return replies

        async def scripted() -> list[Any]:
            return await asyncio.gather(
                *(script(keys=keys, args=args) for _, script, keys, args in self._scripts),
                return_exceptions=True,
            )

        from_pipe, from_scripts = await asyncio.gather(piped(), scripted())
        replies: list[Any] = [None] * self._size
        for position, reply in zip(self._piped, from_pipe, strict=True):
            replies[position] = reply
        for (position, *_), reply in zip(self._scripts, from_scripts, strict=True):
            replies[position] = reply
        return replies
