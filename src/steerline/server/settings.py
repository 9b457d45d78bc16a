"""Server settings; every limit is configurable and has a tested default."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any

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
    metrics_key: str | None = None
    """``/metrics`` needs ``Authorization: Bearer <metrics_key>``. None: it answers
    loopback clients only (403 otherwise)."""
    auth_failures_per_minute: int = 30
    """Failed authentications per client address (token bucket, bursts up to this);
    beyond it every request from that address is 429 until the bucket refills."""
    header_timeout: float = 20.0
    """Seconds from a connection's start (or its previous response) to a complete
    request head; then 408 and the connection is closed (slowloris)."""
    body_timeout: float = 30.0
    """Seconds from a request's head to the end of its body; then 408."""
    keep_alive_timeout: float = 5.0
    """Seconds an idle keep-alive connection stays open (uvicorn's ``timeout_keep_alive``)."""
    max_drain_bytes: int = 16 * 1024 * 1024
    """A body over ``max_body_bytes`` gets its 413 at once and is then read and
    discarded up to this many bytes, so the close that follows does not reset the
    connection before the client read the 413."""
    tenant_limits: TenantLimits = field(default_factory=TenantLimits)
    stream: StreamSettings = field(default_factory=StreamSettings)
    service: ServiceLimits = field(default_factory=ServiceLimits)
    log: LogSettings = field(default_factory=LogSettings)


class InsecureBindError(ValueError):
    """The server would listen beyond loopback without API keys (or the host
    cannot be resolved, so that cannot be ruled out)."""


def bind_addresses(host: str, port: int = 0) -> list[str]:
    """The addresses a server bound to ``host`` listens on.

    Resolved as the server's bind resolves them (asyncio's ``create_server``,
    which uvicorn uses): ``getaddrinfo(host or None, port, SOCK_STREAM,
    AI_PASSIVE)``, so ``""`` means every interface (``0.0.0.0`` and ``::``)
    and a name means every address it resolves to. Raises
    ``socket.gaierror`` / ``UnicodeError`` when ``host`` cannot be resolved.
    """
    return sorted({str(info[4][0]) for info in resolve_bind(host, port)})


def resolve_bind(host: str, port: int) -> list[tuple[Any, ...]]:
    """``getaddrinfo`` as a server bind resolves ``host`` (``""``: every
    interface): one place, so the loopback check judges what ``serve`` binds."""
    return socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)


def is_loopback_address(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def check_bind(settings: ServerSettings) -> None:
    """Refuse to expose an unauthenticated server beyond this machine (SPEC §4).

    Without API keys (and without ``insecure``) every address the host
    resolves to must be loopback; a host that cannot be resolved is refused
    with a clear message.
    """
    if settings.api_keys or settings.insecure:
        return
    host = settings.host
    try:
        addresses = bind_addresses(host, settings.port)
    except (OSError, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise InsecureBindError(
            f"refusing to bind {host!r} without API keys: the host cannot be resolved "
            f"({reason}), so it cannot be checked to be a loopback address; fix the host, "
            "configure api_keys or pass --insecure"
        ) from None
    public = [address for address in addresses if not is_loopback_address(address)]
    if public or not addresses:
        where = "every interface" if not host else ", ".join(public or ["nothing"])
        raise InsecureBindError(
            f"refusing to bind {host!r} ({where}) without API keys; configure api_keys "
            "or pass --insecure"
        )
