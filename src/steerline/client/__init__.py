"""The Python SDK of a steerline server (SPEC §5; docs/client.md).

::

    from steerline.client import AsyncClient

    async with AsyncClient("http://127.0.0.1:8000") as client:
        async with client.stream("hello") as events:
            async for event in events:
                print(event.seq, event.event, event.data.get("payload"))

:class:`Client` is the same API, synchronous. Streams resume by themselves
after a dropped connection or a server restart and deliver every event
exactly once, in order. Errors are the classes of :mod:`._errors`, all under
:class:`ClientError`.
"""

from steerline.client._async import AsyncClient, AsyncEventStream
from steerline.client._errors import (
    APIError,
    BadRequest,
    ClientError,
    Conflict,
    ConnectionFailed,
    InvalidResponse,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    StreamFailed,
    Unauthorized,
)
from steerline.client._models import Reconnect, WireEvent
from steerline.client._sync import Client, EventStream

__all__ = [
    "APIError",
    "AsyncClient",
    "AsyncEventStream",
    "BadRequest",
    "Client",
    "ClientError",
    "Conflict",
    "ConnectionFailed",
    "EventStream",
    "InvalidResponse",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "Reconnect",
    "ServerError",
    "ServiceUnavailable",
    "StreamFailed",
    "Unauthorized",
    "WireEvent",
]
