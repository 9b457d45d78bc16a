"""Retry policy for transient model errors: exponential backoff with jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a transient model error is retried.

    The delay before attempt ``n`` (1-based) is ``base_delay * 2**(n-1)``
    with ±``jitter`` proportional noise, capped at ``max_delay``; a provider's
    ``Retry-After`` wins when it is longer.
    """

    max_retries: int = 3
    base_delay: float = 0.5
    max_delay: float = 30.0
    jitter: float = 0.2

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        backoff = min(self.base_delay * 2.0 ** (attempt - 1), self.max_delay)
        backoff *= 1 + random.uniform(-self.jitter, self.jitter)
        if retry_after is not None:
            backoff = max(backoff, min(retry_after, self.max_delay))
        return float(max(backoff, 0.0))
