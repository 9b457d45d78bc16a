"""Prometheus metrics (prometheus_client: the reference implementation of the format).

A registry per app, not the global one, so several apps (tests) never share
counters.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._runs_reported = 0
        self.runs = Counter(
            "steerline_runs", "Runs started by this process.", registry=self.registry
        )
        self.events = Counter(
            "steerline_stream_events",
            "Wire events delivered to stream clients.",
            ["transport"],
            registry=self.registry,
        )
        self.live_streams = Gauge(
            "steerline_live_streams", "Open streams.", ["transport"], registry=self.registry
        )
        self.queue_depth = Gauge(
            "steerline_queue_depth",
            "Queued messages across live conversations.",
            registry=self.registry,
        )
        self.running = Gauge(
            "steerline_running_conversations",
            "Conversations with an active run.",
            registry=self.registry,
        )
        self.errors = Counter(
            "steerline_http_errors", "Error responses by code.", ["code"], registry=self.registry
        )
        self.dropped = Counter(
            "steerline_slow_consumers_dropped",
            "Streams ended because the client fell behind.",
            registry=self.registry,
        )

    def sync_runs(self, started: int) -> None:
        """Bring the runs counter up to the service's count (runs start from
        HTTP routes and WebSocket frames alike; the service counts them all)."""
        if started > self._runs_reported:
            self.runs.inc(started - self._runs_reported)
            self._runs_reported = started

    def render(self) -> bytes:
        return generate_latest(self.registry)
