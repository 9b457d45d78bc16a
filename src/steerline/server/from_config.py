"""Turn a loaded ``steerline.toml`` into :class:`ServerSettings`, in one place.

The file and the ``STEERLINE_*`` variables are validated by one schema
(:class:`steerline.config.ServerConfig` / :class:`~steerline.config.LimitsConfig`:
unknown keys and bad values are a ``ConfigError`` when the config is loaded);
this module only maps it. ``[server]`` keys set the settings of the same
name; each ``[server.limits]`` key sets the setting :data:`LIMIT_SETTINGS`
names. A test checks that every setting has exactly one key and that the
schema's defaults are the settings' defaults, so nothing can be configured
in one way and not in another.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from steerline.config import SteerlineConfig
from steerline.log.base import LogSettings
from steerline.runtime.inbox import InboxLimits
from steerline.server.settings import ServerSettings, TenantLimits
from steerline.service.service import ServiceLimits
from steerline.transports.tail import StreamSettings

LIMIT_SETTINGS: dict[str, str] = {
    "max_body_bytes": "max_body_bytes",
    "header_timeout": "header_timeout",
    "body_timeout": "body_timeout",
    "keep_alive_timeout": "keep_alive_timeout",
    "max_drain_bytes": "max_drain_bytes",
    "auth_failures_per_minute": "auth_failures_per_minute",
    "requests_per_minute": "tenant_limits.requests_per_minute",
    "max_streams_per_tenant": "tenant_limits.max_streams",
    "max_running_per_tenant": "service.max_running_per_tenant",
    "ping_interval": "stream.ping_interval",
    "retry_ms": "stream.retry_ms",
    "max_lag_events": "stream.max_lag_events",
    "send_timeout": "stream.send_timeout",
    "stream_batch_limit": "stream.batch_limit",
    "stream_linger": "stream.linger",
    "auto_continue": "service.auto_continue",
    "shutdown_grace": "service.shutdown_grace",
    "max_live_conversations": "service.max_live_conversations",
    "idle_unload_after": "service.idle_unload_after",
    "max_queued_messages": "service.inbox.max_messages",
    "max_message_bytes": "service.inbox.max_message_bytes",
    "dedup_window": "service.inbox.dedup_window",
    "retention_events": "log.retention_events",
    "retention_age": "log.retention_age",
    "synchronous": "log.synchronous",
    "store_batch_size": "log.batch_size",
    "hot_tail_events": "log.hot_tail",
    "hot_tail_bytes": "log.hot_tail_bytes",
    "store_retry_max_delay": "log.retry_max_delay",
    "store_close_timeout": "log.close_timeout",
}
"""``[server.limits]`` key → the :class:`ServerSettings` field it sets (dotted path)."""


def settings_from_config(config: SteerlineConfig, **overrides: Any) -> ServerSettings:
    """Settings from ``[server]`` and ``[server.limits]``; ``overrides`` (CLI flags) win."""
    server = config.server
    groups: dict[str, dict[str, Any]] = {
        "": {
            "host": server.host,
            "port": server.port,
            "store": server.store,
            "insecure": server.insecure,
            "cors_origins": tuple(server.cors_origins),
            "api_keys": dict(server.api_keys),
            "metrics_key": server.metrics_key,
        },
        "tenant_limits": {},
        "stream": {},
        "log": {},
        "service": {},
        "service.inbox": {},
    }
    for key, path in LIMIT_SETTINGS.items():
        group, _, name = path.rpartition(".")
        groups[group][name] = getattr(server.limits, key)
    settings = ServerSettings(
        **groups[""],
        tenant_limits=TenantLimits(**groups["tenant_limits"]),
        stream=StreamSettings(**groups["stream"]),
        log=LogSettings(**groups["log"]),
        service=ServiceLimits(**groups["service"], inbox=InboxLimits(**groups["service.inbox"])),
    )
    return dataclasses.replace(settings, **{k: v for k, v in overrides.items() if v is not None})
