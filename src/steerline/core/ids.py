"""Identifier generation.

Ids are prefixed (``conv-``, ``run-``, ``msg-``, ``call-``) so that a person
reading a log line can tell what an id refers to without context.
"""

from __future__ import annotations

import secrets


def new_id(prefix: str) -> str:
    """Return a random, URL-safe id such as ``run-3f9a0c1e2b7d4a5c``."""
    return f"{prefix}-{secrets.token_hex(8)}"
