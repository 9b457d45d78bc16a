"""The options of a ``redis://`` store URL, checked before anything connects."""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from steerline.core.errors import InvalidValueError
from steerline.core.ids import new_id

DEFAULT_LEASE_TTL = 10.0


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{new_id('proc')}"


@dataclass(frozen=True, slots=True)
class RedisOptions:
    """What the URL's query may set: ``redis://host:6379/0?lease_ttl=10&prefix=steerline``."""

    url: str
    lease_ttl: float = DEFAULT_LEASE_TTL
    prefix: str = "steerline"

    @property
    def database(self) -> int:
        """The database number of the URL (0 when it names none)."""
        path = urlsplit(self.url).path
        return int(path[1:]) if path not in ("", "/") else 0

    @property
    def display(self) -> str:
        """The URL for messages and logs: its password, if any, masked."""
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, "", ""))

    @classmethod
    def parse(cls, url: str) -> RedisOptions:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise InvalidValueError(f"not a redis URL: {url!r}")
        try:
            port = parts.port  # ValueError for a port that is not a number
        except ValueError:
            port = -1
        if not parts.hostname or port == -1 or port == 0:
            raise InvalidValueError(
                f"a redis URL needs a host and port: redis://host:6379/0, not {url!r}"
            )
        if parts.path not in ("", "/") and not parts.path[1:].isdigit():
            raise InvalidValueError(
                f"the database of a redis URL is a number: redis://host:6379/0, not {url!r}"
            )
        options: dict[str, Any] = {}
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name == "lease_ttl":
                try:
                    ttl = float(value)
                except ValueError:
                    ttl = math.nan
                if not 0.5 <= ttl <= 3600:
                    raise InvalidValueError("lease_ttl must be a number of seconds, 0.5 to 3600")
                options["lease_ttl"] = ttl
            elif name == "prefix":
                if not value or any(c in value for c in "{}: "):
                    raise InvalidValueError("prefix must be a non-empty name without {}: or space")
                options["prefix"] = value
            else:
                raise InvalidValueError(
                    f"unknown redis URL option {name!r}; expected lease_ttl or prefix"
                )
        bare = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        return cls(url=bare, **options)
