"""Turn a loaded ``steerline.toml`` into :class:`ServerSettings`.

``[server.limits]`` keys map one to one onto the settings below; an unknown
key is a ``ConfigError`` at start-up rather than a silently ignored typo.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from steerline.config import ConfigError, SteerlineConfig
from steerline.log.base import LogSettings
from steerline.runtime.inbox import InboxLimits
from steerline.server.settings import ServerSettings, TenantLimits
from steerline.service.service import ServiceLimits
from steerline.transports.tail import StreamSettings

_LIMITS: dict[str, tuple[str, str]] = {
    "max_body_bytes": ("server", "max_body_bytes"),
    "auth_failures_per_minute": ("server", "auth_failures_per_minute"),
    "header_timeout": ("server", "header_timeout"),
    "body_timeout": ("server", "body_timeout"),
    "keep_alive_timeout": ("server", "keep_alive_timeout"),
    "max_drain_bytes": ("server", "max_drain_bytes"),
    "max_streams_per_tenant": ("tenant", "max_streams"),
    "requests_per_minute": ("tenant", "requests_per_minute"),
    "ping_interval": ("stream", "ping_interval"),
    "retry_ms": ("stream", "retry_ms"),
    "max_lag_events": ("stream", "max_lag_events"),
    "send_timeout": ("stream", "send_timeout"),
    "retention_events": ("log", "retention_events"),
    "synchronous": ("log", "synchronous"),
    "auto_continue": ("service", "auto_continue"),
    "shutdown_grace": ("service", "shutdown_grace"),
    "max_live_conversations": ("service", "max_live_conversations"),
    "idle_unload_after": ("service", "idle_unload_after"),
    "max_running_per_tenant": ("service", "max_running_per_tenant"),
    "hot_tail_events": ("log", "hot_tail"),
    "hot_tail_bytes": ("log", "hot_tail_bytes"),
    "store_retry_max_delay": ("log", "retry_max_delay"),
    "store_close_timeout": ("log", "close_timeout"),
    "max_queued_messages": ("inbox", "max_messages"),
    "max_message_bytes": ("inbox", "max_message_bytes"),
    "dedup_window": ("inbox", "dedup_window"),
}


def settings_from_config(config: SteerlineConfig, **overrides: Any) -> ServerSettings:
    """Settings from ``[server]`` and ``[server.limits]``; ``overrides`` (CLI flags) win."""
    server = config.server
    groups: dict[str, dict[str, Any]] = {
        name: {} for name in ("server", "tenant", "stream", "log", "service", "inbox")
    }
    for key, value in server.limits.items():
        target = _LIMITS.get(key)
        if target is None:
            known = ", ".join(sorted(_LIMITS))
            raise ConfigError(f"[server.limits]: unknown key {key!r}; known keys: {known}")
        groups[target[0]][target[1]] = value
    extra = server.model_extra or {}
    if "cors_origins" in extra:
        groups["server"]["cors_origins"] = tuple(extra["cors_origins"])
    if "insecure" in extra:
        groups["server"]["insecure"] = bool(extra["insecure"])

    def build(kind: Callable[..., Any], values: dict[str, Any], section: str) -> Any:
        try:
            return kind(**values)
        except TypeError as exc:
            raise ConfigError(f"[server.limits] ({section}): {exc}") from None

    settings = ServerSettings(
        host=server.host,
        port=server.port,
        store=server.store,
        api_keys=dict(server.api_keys),
        metrics_key=server.metrics_key,
        tenant_limits=build(TenantLimits, groups["tenant"], "tenant"),
        stream=build(StreamSettings, groups["stream"], "stream"),
        log=build(LogSettings, groups["log"], "log"),
        service=build(
            ServiceLimits,
            {**groups["service"], "inbox": build(InboxLimits, groups["inbox"], "inbox")},
            "service",
        ),
        **groups["server"],
    )
    return dataclasses.replace(settings, **{k: v for k, v in overrides.items() if v is not None})
