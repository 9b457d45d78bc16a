"""API keys → tenants, per-tenant rate limits and stream caps (SPEC §4)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from steerline.server.errors import HTTPError
from steerline.server.settings import ServerSettings

DEFAULT_TENANT = "default"
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class TenantGate:
    """Authenticates requests and enforces the per-tenant limits."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self._buckets: dict[str, _Bucket] = {}
        self._streams: dict[str, int] = {}

    def authenticate(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str:
        """The tenant of a request; 401 if keys are configured and none matches.

        Browsers cannot set headers on a WebSocket or EventSource, so
        ``?access_token=`` is accepted too.
        """
        keys = self.settings.api_keys
        if not keys:
            return DEFAULT_TENANT
        token = query.get("access_token")
        authorization = headers.get("authorization", "")
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value:
            token = value.strip()
        if token is None:
            raise HTTPError(
                401, "unauthorized", "missing bearer token", {"WWW-Authenticate": "Bearer"}
            )
        tenant = keys.get(token)
        if tenant is None:
            raise HTTPError(401, "unauthorized", "invalid API key", {"WWW-Authenticate": "Bearer"})
        return tenant

    def check_rate(self, tenant: str) -> None:
        """Token bucket: ``requests_per_minute`` per tenant, bursts up to that."""
        rate = self.settings.tenant_limits.requests_per_minute
        now = time.monotonic()
        bucket = self._buckets.get(tenant)
        if bucket is None:
            bucket = self._buckets[tenant] = _Bucket(tokens=float(rate), updated=now)
        bucket.tokens = min(float(rate), bucket.tokens + (now - bucket.updated) * rate / 60.0)
        bucket.updated = now
        if bucket.tokens < 1.0:
            retry_after = max(1, math.ceil((1.0 - bucket.tokens) * 60.0 / rate))
            raise HTTPError(
                429,
                "rate_limited",
                f"more than {rate} requests per minute",
                {"Retry-After": str(retry_after)},
            )
        bucket.tokens -= 1.0

    def open_stream(self, tenant: str) -> Callable[[], None]:
        """Take one of the tenant's concurrent-stream slots (429 when none is
        free); returns the function that gives it back (idempotent)."""
        limit = self.settings.tenant_limits.max_streams
        if self._streams.get(tenant, 0) >= limit:
            raise HTTPError(
                429,
                "too_many_streams",
                f"at most {limit} concurrent streams per tenant",
                {"Retry-After": "1"},
            )
        self._streams[tenant] = self._streams.get(tenant, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._streams[tenant] -= 1

        return release

    def streams(self, tenant: str) -> int:
        return self._streams.get(tenant, 0)
