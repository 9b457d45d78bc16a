"""API keys → tenants, per-tenant rate limits and stream caps (SPEC §4).

Failed authentications are limited per client address (a token bucket of
``auth_failures_per_minute``): once an address has used its budget, every
request from it is 429 until the bucket refills, a correct key included
(otherwise guessing would go on at full speed, told apart by the status).
"""

from __future__ import annotations

import hmac
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


_MAX_FAILURE_BUCKETS = 10_000
"""Failure buckets kept before the refilled ones are forgotten."""


class TenantGate:
    """Authenticates requests and enforces the per-tenant limits."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self._buckets: dict[str, _Bucket] = {}
        self._streams: dict[str, int] = {}
        self._failures: dict[str, _Bucket] = {}

    def authenticate(
        self, headers: Mapping[str, str], query: Mapping[str, str], client: str | None = None
    ) -> str:
        """The tenant of a request; 401 if keys are configured and none matches,
        429 if ``client`` (its address) failed too often.

        Browsers cannot set headers on a WebSocket or EventSource, so
        ``?access_token=`` is accepted too.
        """
        keys = self.settings.api_keys
        if not keys:
            return DEFAULT_TENANT
        self.check_failures(client)
        token = bearer_token(headers, query)
        if token is None:
            self.failed(client)
            raise HTTPError(401, "unauthorized", "missing bearer token", dict(_CHALLENGE))
        tenant = None
        for key, name in keys.items():  # every key compared, in constant time
            if hmac.compare_digest(key.encode(), token.encode("utf-8", "surrogateescape")):
                tenant = name
        if tenant is None:
            self.failed(client)
            raise HTTPError(401, "unauthorized", "invalid API key", dict(_CHALLENGE))
        return tenant

    def check_failures(self, client: str | None) -> None:
        """429 if ``client`` used up its failed authentications."""
        bucket = self._failures.get(client or "")
        if bucket is None:
            return
        rate = self.settings.auth_failures_per_minute
        self._refill(bucket, rate)
        if bucket.tokens < 1.0:
            retry_after = max(1, math.ceil((1.0 - bucket.tokens) * 60.0 / rate))
            raise HTTPError(
                429,
                "rate_limited",
                f"more than {rate} failed authentications per minute from this address",
                {"Retry-After": str(retry_after)},
            )

    def failed(self, client: str | None) -> None:
        """Charge one failed authentication to ``client``."""
        rate = self.settings.auth_failures_per_minute
        key = client or ""
        bucket = self._failures.get(key)
        if bucket is None:
            if len(self._failures) >= _MAX_FAILURE_BUCKETS:
                self._forget_refilled(rate)
            bucket = self._failures[key] = _Bucket(tokens=float(rate), updated=time.monotonic())
        self._refill(bucket, rate)
        bucket.tokens = max(0.0, bucket.tokens - 1.0)

    @staticmethod
    def _refill(bucket: _Bucket, rate: int) -> None:
        now = time.monotonic()
        bucket.tokens = min(float(rate), bucket.tokens + (now - bucket.updated) * rate / 60.0)
        bucket.updated = now

    def _forget_refilled(self, rate: int) -> None:
        for key, bucket in list(self._failures.items()):
            self._refill(bucket, rate)
            if bucket.tokens >= rate:
                del self._failures[key]

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


def bearer_token(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """``Authorization: Bearer <token>``, else ``?access_token=``, else None."""
    token = query.get("access_token")
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        token = value.strip()
    return token
