"""Split text into word-sized tokens, as the offline models stream it."""

from __future__ import annotations

import re

_TOKEN = re.compile(r"\s*\S+|\s+")


def tokenize(text: str) -> list[str]:
    """``"a b  c"`` → ``["a", " b", "  c"]``: joining the tokens gives the text back."""
    return _TOKEN.findall(text)


def chunk(text: str, size: int) -> list[str]:
    """Fixed-size pieces (tool-call arguments stream in these)."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]
