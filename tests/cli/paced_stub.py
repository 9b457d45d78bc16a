"""An OpenAI-compatible provider on loopback that streams one token every 50 ms.

The chat under test runs in another process, so this stub is a small threaded
stdlib HTTP server (its own threads, no event loop to share). Replies are
queued with :meth:`PacedStub.push`: a list of text tokens, streamed with
``delay`` seconds between chunks (the pacing of a real model, not test
synchronisation), or :data:`FOREVER`: tokens until the client hangs up.
Frames are those of ``tests/providers/stub.py``.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.providers.stub import OpenAIWire

FOREVER = "forever"
MAX_FOREVER = 60.0
"""Seconds after which a forever reply gives up (a test that forgot it)."""


class PacedStub:
    def __init__(self, delay: float = 0.05) -> None:
        self.delay = delay
        self.replies: deque[list[str] | str] = deque()
        self.requests: list[dict[str, Any]] = []
        self.disconnected = threading.Event()
        """Set when a client hung up in the middle of a reply."""
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    listing = {"object": "list", "data": [{"id": "stub-model", "object": "model"}]}
                    self._json(200, listing)
                else:
                    self._json(404, OpenAIWire.error("no such path"))

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length) or b"null")
                stub.requests.append(body)
                if not stub.replies:
                    self._json(500, OpenAIWire.error("stub: no reply queued"))
                    return
                stub.stream(self, stub.replies.popleft())

            def _json(self, status: int, body: Any) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        host, port = self.server.server_address[:2]
        self.base_url = f"http://{host}:{port}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def push(self, *replies: list[str] | str) -> None:
        self.replies.extend(replies)

    def stream(self, handler: BaseHTTPRequestHandler, reply: list[str] | str) -> None:
        # HTTP/1.0: the body ends when the connection closes (no chunked framing)
        handler.send_response(200)
        handler.send_header("content-type", "text/event-stream")
        handler.send_header("cache-control", "no-cache")
        handler.end_headers()
        W = OpenAIWire
        try:
            handler.wfile.write(W.role())
            handler.wfile.flush()
            if reply == FOREVER:
                started = time.monotonic()
                n = 0
                while time.monotonic() - started < MAX_FOREVER:
                    time.sleep(self.delay)
                    handler.wfile.write(W.text(f"tick{n} "))
                    handler.wfile.flush()
                    n += 1
                return
            for token in reply:
                time.sleep(self.delay)
                handler.wfile.write(W.text(token))
                handler.wfile.flush()
            for frame in (W.finish("stop"), W.usage(10, len(reply)), W.done):
                handler.wfile.write(frame)
            handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.disconnected.set()

    def __enter__(self) -> PacedStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
