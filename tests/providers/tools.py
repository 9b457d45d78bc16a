"""Tools the provider tests give their agents."""

from __future__ import annotations

from steerline import tool


@tool
def lookup(key: str) -> str:
    """Look a key up.

    Args:
        key: The key to look up.
    """
    return f"value-of-{key}"


@tool
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: The first addend.
        b: The second addend.
    """
    return a + b
