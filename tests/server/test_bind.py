"""Without API keys the server binds loopback only (SPEC §4 "Auth"), judged by
what the socket will bind to: the host is resolved as the server's bind
resolves it, and every resulting address must be loopback.

Nothing here binds or sends anything: only name resolution (the real one for
literal addresses, ``localhost`` and an ``.invalid`` name; a stub for the rest).
"""

from __future__ import annotations

import socket
from typing import Any

import pytest

from steerline.config import config_from_dict
from steerline.server.from_config import settings_from_config
from steerline.server.settings import InsecureBindError, ServerSettings, check_bind


def test_empty_host_binds_every_interface_so_it_needs_api_keys() -> None:
    with pytest.raises(InsecureBindError, match="--insecure"):
        check_bind(ServerSettings(host=""))
    check_bind(ServerSettings(host="", api_keys={"k": "t"}))
    check_bind(ServerSettings(host="", insecure=True))


@pytest.mark.parametrize(
    "source",
    ["toml", "env", "cli"],
)
def test_empty_host_from_toml_env_or_cli_is_refused_without_keys(source: str) -> None:
    data: dict[str, Any] = {"server": {"host": ""}} if source == "toml" else {}
    env = {"STEERLINE_SERVER__HOST": ""} if source == "env" else {}
    overrides = {"host": ""} if source == "cli" else {}
    settings = settings_from_config(config_from_dict(data, env=env), **overrides)
    assert settings.host == ""
    with pytest.raises(InsecureBindError, match="refusing to bind"):
        check_bind(settings)


def test_loopback_hosts_pass_and_wildcards_do_not() -> None:
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        check_bind(ServerSettings(host=host))
    for host in ("0.0.0.0", "::"):
        with pytest.raises(InsecureBindError):
            check_bind(ServerSettings(host=host))


def _resolving(table: dict[str, list[str]]) -> Any:
    def getaddrinfo(host: str | None, port: object, *args: Any, **kwargs: Any) -> list[Any]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (
                socket.AF_INET6 if ":" in address else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (address, port),
            )
            for address in table[host]
        ]

    return getaddrinfo


def test_a_name_is_judged_by_every_address_it_resolves_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        _resolving(
            {
                "localhost": ["192.0.2.7"],  # a host file that maps localhost elsewhere
                "dual.test": ["127.0.0.1", "192.0.2.7"],
                "local.test": ["127.0.0.1", "::1"],
            }
        ),
    )
    for host in ("localhost", "dual.test"):
        with pytest.raises(InsecureBindError, match=r"192\.0\.2\.7"):
            check_bind(ServerSettings(host=host))
    check_bind(ServerSettings(host="local.test"))


def test_an_unresolvable_host_is_a_clear_error() -> None:
    with pytest.raises(InsecureBindError, match=r"'no-such-host\.invalid'.*cannot be resolved"):
        check_bind(ServerSettings(host="no-such-host.invalid"))
