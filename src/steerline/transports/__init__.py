"""Transports: views of the event log over SSE, NDJSON and WebSocket.

A transport never talks to the runtime for output: it reads the log from a
``seq`` onwards (replay, then live) through :class:`LogTail`, so a live viewer
and a late joiner see exactly the same bytes.
"""

from steerline.transports.tail import EndReason, LogTail, StreamPlan, StreamRegistry, StreamSettings

__all__ = ["EndReason", "LogTail", "StreamPlan", "StreamRegistry", "StreamSettings"]
