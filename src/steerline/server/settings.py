"""Server settings; every limit is configurable and has a tested default."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from steerline.log.base import LogSettings
from steerline.service.service import ServiceLimits
from steerline.transports.tail import StreamSettings


@dataclass(frozen=True, slots=True)
class TenantLimits:
    max_streams: int = 32
    """Concurrent streams (SSE, NDJSON, WebSocket) per tenant."""
    requests_per_minute: int = 600


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    store: str = "sqlite:///steerline.db"
    api_keys: dict[str, str] = field(default_factory=dict)
    """Bearer token → tenant name. Empty: no auth, single tenant ``default``."""
    insecure: bool = False
    """Allow a non-loopback bind without API keys."""
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = 1024 * 1024
    tenant_limits: TenantLimits = field(default_factory=TenantLimits)
    stream: StreamSettings = field(default_factory=StreamSettings)
    service: ServiceLimits = field(default_factory=ServiceLimits)
    log: LogSettings = field(default_factory=LogSettings)


class InsecureBindError(ValueError):
    pass


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(settings: ServerSettings) -> None:
    """Refuse to expose an unauthenticated server beyond this machine (SPEC §4)."""
    if not settings.api_keys and not settings.insecure and not is_loopback(settings.host):
        raise InsecureBindError(
            f"refusing to bind {settings.host!r} without API keys; configure api_keys "
            "or pass --insecure"
        )
