"""Checks for text that crosses a trust boundary (ids, message content).

Python strings can hold lone UTF-16 surrogates (``"\\ud800"``: JSON allows
the escape, ``json.loads`` accepts it), but such a string cannot be encoded
to UTF-8, so it would fail much later, far from the request that brought it
(in a log append, in a state save). Every surface checks text once, at the
edge, and refuses it with a clear error instead.
"""

from __future__ import annotations

from steerline.core.errors import InvalidValueError
from steerline.core.messages import ImageContent, TextContent, UserContent

MAX_ID_LENGTH = 200
"""Longest client-supplied id (message ids, conversation ids are shorter)."""


def check_text(value: str, what: str) -> str:
    """``value`` if it is encodable as UTF-8, else ``InvalidValueError``."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidValueError(
            f"{what} is not valid Unicode text (lone surrogate at position {exc.start})"
        ) from None
    return value


def check_id(value: str, what: str, max_length: int = MAX_ID_LENGTH) -> str:
    """A client-supplied id: non-empty, bounded, valid text."""
    if not value:
        raise InvalidValueError(f"{what} must not be empty")
    if len(value) > max_length:
        raise InvalidValueError(f"{what} is {len(value)} characters; the limit is {max_length}")
    return check_text(value, what)


def check_content(content: str | list[UserContent], what: str = "content") -> None:
    """Every text of a message (and an image's fields) is valid Unicode text."""
    if isinstance(content, str):
        check_text(content, what)
        return
    for part in content:
        if isinstance(part, TextContent):
            check_text(part.text, what)
        elif isinstance(part, ImageContent):
            check_text(part.data, f"{what} image data")
            check_text(part.mime_type, f"{what} image mime_type")
