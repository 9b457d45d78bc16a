"""Identifier generation.

Ids are prefixed (``conv-``, ``run-``, ``msg-``, ``call-``) so that a person
reading a log line can tell what an id refers to without context.
"""

from __future__ import annotations

import os
import threading

_ID_BYTES = 8
_POOL_BYTES = 4096
"""Random bytes fetched from the OS at once: ids for 512 calls."""


class _RandomPool:
    """OS randomness fetched a page at a time.

    ``os.urandom`` releases the GIL around its system call; on the event
    loop's thread that hands the GIL to any other runnable thread (the
    sqlite writer) and the loop then waits to get it back: profiles of
    short runs showed ~9 % of the server's samples in ``new_id`` for nine
    ids per run. One call per 512 ids keeps the bytes just as random.
    After a fork the child starts a new pool, so two processes never share
    the bytes (ids must differ across the processes of one Redis store).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buffer = b""
        self._offset = 0
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._buffer, self._offset = b"", 0

    def take(self, size: int) -> bytes:
        with self._lock:
            start = self._offset
            if start + size > len(self._buffer):
                self._buffer, start = os.urandom(_POOL_BYTES), 0
            self._offset = start + size
            return self._buffer[start : start + size]


_pool = _RandomPool()


def new_id(prefix: str) -> str:
    """Return a random, URL-safe id such as ``run-3f9a0c1e2b7d4a5c``."""
    return f"{prefix}-{_pool.take(_ID_BYTES).hex()}"
