"""One typed schema for ``[server]`` / ``[server.limits]``, the file and ``STEERLINE_*`` alike.

Unknown keys and bad values are a ``ConfigError`` naming the key; every key
lands on exactly one :class:`ServerSettings` field, whether it came from the
file or the environment; the defaults are the settings' defaults; and
docs/server.md documents every key.
"""

from __future__ import annotations

import dataclasses
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from steerline.config import (
    ConfigError,
    LimitsConfig,
    ServerConfig,
    config_from_dict,
    load_config,
)
from steerline.log.base import LogSettings
from steerline.runtime.inbox import InboxLimits
from steerline.server.from_config import LIMIT_SETTINGS, settings_from_config
from steerline.server.settings import ServerSettings, TenantLimits
from steerline.service.service import ServiceLimits
from steerline.transports.tail import StreamSettings

DOCS = Path(__file__).resolve().parents[1] / "docs" / "server.md"


def server_settings(data: dict[str, Any], env: dict[str, str] | None = None) -> ServerSettings:
    return settings_from_config(config_from_dict(data, env=env or {}))


def error_of(data: dict[str, Any], env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        server_settings(data, env)
    return str(info.value)


# -- the file ------------------------------------------------------------------------------
def test_a_typo_in_the_file_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    path = tmp_path / "steerline.toml"
    path.write_text("[server]\nprot = 8020\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value) == f"{path}: server.prot: unknown key (did you mean port?)"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"server": {"prot": 8020}}, "server.prot: unknown key (did you mean port?)"),
        (
            {"server": {"limits": {"max_lag_event": 5}}},
            "server.limits.max_lag_event: unknown key (did you mean max_lag_events?)",
        ),
        (
            {"server": {"limits": {"max_queued": 50}}},
            "server.limits.max_queued: unknown key (did you mean max_queued_messages?)",
        ),
        ({"server": {"frobnicate": 1}}, "server.frobnicate: unknown key"),
        (
            {"server": {"limits": {"ping_interval": "soon"}}},
            "server.limits.ping_interval: expected a number, got 'soon'",
        ),
        (
            {"server": {"limits": {"max_lag_events": -5}}},
            "server.limits.max_lag_events: must be >= 0",
        ),
        (
            {"server": {"limits": {"max_body_bytes": 0}}},
            "server.limits.max_body_bytes: must be > 0",
        ),
        ({"server": {"limits": {"send_timeout": 0}}}, "server.limits.send_timeout: must be > 0"),
        (
            {"server": {"limits": {"retry_ms": 1.5}}},
            "server.limits.retry_ms: expected an integer, got 1.5",
        ),
        (
            {"server": {"limits": {"header_timeout": True}}},
            "server.limits.header_timeout: expected a number, got True",
        ),
        (
            {"server": {"limits": {"synchronous": "OFF"}}},
            "server.limits.synchronous: expected one of 'NORMAL', 'FULL', got 'OFF'",
        ),
        (
            {"server": {"limits": {"auto_continue": "yes"}}},
            "server.limits.auto_continue: expected true or false, got 'yes'",
        ),
        ({"server": {"limits": 5}}, "server.limits: expected a table, got 5"),
        (
            {"server": {"cors_origins": "http://a"}},
            "server.cors_origins: expected a list of strings, got 'http://a'",
        ),
        (
            {"server": {"cors_origins": ["http://a", 5]}},
            "server.cors_origins.1: expected a string, got 5",
        ),
        (
            {"server": {"cors_origins": ["http://localhost:5173/"]}},
            "server.cors_origins.0: 'http://localhost:5173/' is not an origin: "
            "scheme://host[:port] with no path or trailing slash (e.g. 'http://localhost:5173'), "
            "or '*'",
        ),
        (
            {"server": {"cors_origins": ["localhost:5173"]}},
            "server.cors_origins.0: 'localhost:5173' is not an origin: scheme://host[:port] "
            "with no path or trailing slash (e.g. 'http://localhost:5173'), or '*'",
        ),
        ({"server": {"port": "8020"}}, "server.port: expected an integer, got '8020'"),
        ({"server": {"port": 70000}}, "server.port: must be <= 65535"),
        ({"server": {"insecure": 1}}, "server.insecure: expected true or false, got 1"),
        ({"server": {"host": 127}}, "server.host: expected a string, got 127"),
        ({"server": 5}, "server: expected a table, got 5"),
        ({"defualt_agent": "demo"}, "defualt_agent: unknown key (did you mean default_agent?)"),
    ],
)
def test_unknown_keys_and_bad_values_name_the_key(data: dict[str, Any], expected: str) -> None:
    assert error_of(data) == expected


def test_good_values_are_taken() -> None:
    settings = server_settings(
        {
            "server": {
                "cors_origins": ["http://a", "https://b.example:8443", "*"],
                "insecure": True,
                "limits": {"ping_interval": 5, "max_lag_events": 0, "retention_events": 10},
            }
        }
    )
    assert settings.cors_origins == ("http://a", "https://b.example:8443", "*")
    assert settings.insecure is True
    assert settings.stream.ping_interval == 5.0 and settings.stream.max_lag_events == 0
    assert settings.log.retention_events == 10


# -- the environment -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"STEERLINE_PORT": "80x"},
            "STEERLINE_PORT: server.port: expected an integer, got '80x'",
        ),
        (
            {"STEERLINE_SERVER__PROT": "8020"},
            "STEERLINE_SERVER__PROT: server.prot: unknown key (did you mean port?)",
        ),
        (
            {"STEERLINE_SERVER__LIMITS__MAX_LAG_EVENTS": "-5"},
            "STEERLINE_SERVER__LIMITS__MAX_LAG_EVENTS: server.limits.max_lag_events: must be >= 0",
        ),
        (
            {"STEERLINE_SERVER__LIMITS__PING_INTERVAL": "soon"},
            "STEERLINE_SERVER__LIMITS__PING_INTERVAL: server.limits.ping_interval: "
            "expected a number, got 'soon'",
        ),
        (
            {"STEERLINE_SERVER__LIMITS__NOPE": "1"},
            "STEERLINE_SERVER__LIMITS__NOPE: server.limits.nope: unknown key",
        ),
        (
            {"STEERLINE_SERVER__INSECURE": "maybe"},
            "STEERLINE_SERVER__INSECURE: server.insecure: expected true or false, got 'maybe'",
        ),
        (
            {"STEERLINE_SERVER__LIMITS": '{"max_lag_events": -1}'},
            "STEERLINE_SERVER__LIMITS: server.limits.max_lag_events: must be >= 0",
        ),
    ],
)
def test_environment_overrides_are_checked_the_same_way(env: dict[str, str], expected: str) -> None:
    assert error_of({}, env) == expected


def test_environment_overrides_win_over_the_file() -> None:
    settings = server_settings(
        {"server": {"port": 8001, "limits": {"max_lag_events": 7, "send_timeout": 3}}},
        {
            "STEERLINE_PORT": "8123",
            "STEERLINE_HOST": "localhost",
            "STEERLINE_SERVER__LIMITS__MAX_LAG_EVENTS": "9",
            "STEERLINE_SERVER__CORS_ORIGINS": "http://a, http://b",
            "STEERLINE_SERVER__INSECURE": "true",
            "STEERLINE_SERVER__STORE": "memory://",
        },
    )
    assert (settings.host, settings.port, settings.store) == ("localhost", 8123, "memory://")
    assert settings.stream.max_lag_events == 9
    assert settings.stream.send_timeout == 3.0  # the file's, not overridden
    assert settings.cors_origins == ("http://a", "http://b")
    assert settings.insecure is True
    json_list = server_settings({}, {"STEERLINE_SERVER__CORS_ORIGINS": '["http://c"]'})
    assert json_list.cors_origins == ("http://c",)
    # a string setting takes the text as it is (a host that looks like a number stays text)
    assert server_settings({}, {"STEERLINE_SERVER__STORE": "123"}).store == "123"


# -- one mapping ----------------------------------------------------------------------------
def test_the_defaults_are_the_settings_defaults() -> None:
    assert server_settings({}) == ServerSettings()


def _setting_paths() -> set[str]:
    """Every configurable ServerSettings field, as a dotted path."""
    nested = {
        "tenant_limits": TenantLimits,
        "stream": StreamSettings,
        "log": LogSettings,
        "service": ServiceLimits,
        "service.inbox": InboxLimits,
    }
    secrets = {"api_keys", "metrics_key"}  # from the environment only, by name
    paths = {f.name for f in dataclasses.fields(ServerSettings)} - set(nested) - secrets
    for prefix, kind in nested.items():
        paths |= {f"{prefix}.{f.name}" for f in dataclasses.fields(kind)} - set(nested)
    return paths


def test_every_setting_has_exactly_one_key() -> None:
    direct = set(ServerConfig.model_fields) - {"limits", "api_keys_env", "metrics_key_env"}
    direct -= {"api_keys", "metrics_key"}
    targets = sorted([*direct, *LIMIT_SETTINGS.values()])
    assert len(targets) == len(set(targets)), "two keys set the same setting"
    assert set(targets) == _setting_paths()
    assert set(LIMIT_SETTINGS) == set(LimitsConfig.model_fields)


def _other_value(value: Any, key: str) -> Any:
    if key == "synchronous":
        return "FULL"
    if isinstance(value, bool):
        return not value
    if value is None:
        return 123
    if isinstance(value, int):
        return value + 3
    if isinstance(value, float):
        return value + 0.5
    raise AssertionError(f"no other value for {key}={value!r}")


def _get(settings: ServerSettings, path: str) -> Any:
    value: Any = settings
    for part in path.split("."):
        value = getattr(value, part)
    return value


def test_every_limit_reaches_its_setting_from_the_file_and_from_the_environment() -> None:
    defaults = LimitsConfig()
    limits = {key: _other_value(getattr(defaults, key), key) for key in LimitsConfig.model_fields}
    from_file = server_settings({"server": {"limits": limits}})
    env = {f"STEERLINE_SERVER__LIMITS__{key.upper()}": str(value) for key, value in limits.items()}
    env["STEERLINE_SERVER__LIMITS__AUTO_CONTINUE"] = "false"
    from_env = server_settings({}, env)
    assert from_file == from_env
    for key, path in LIMIT_SETTINGS.items():
        assert _get(from_file, path) == limits[key], key
        assert _get(from_file, path) != _get(ServerSettings(), path), key


# -- the documentation -------------------------------------------------------------------------
def test_docs_document_every_key() -> None:
    text = DOCS.read_text(encoding="utf-8")
    section = text[text.index("## Configuration reference") :]
    section = section[: section.index("\n## ", 1)] if "\n## " in section[1:] else section
    missing = [
        key
        for key in [*ServerConfig.model_fields, *LimitsConfig.model_fields]
        if key not in {"api_keys", "metrics_key"}
        and not re.search(rf"^\| `{re.escape(key)}` \|", section, re.MULTILINE)
    ]
    assert not missing, f"docs/server.md has no table row for: {missing}"
    # and the full example file loads
    example = re.search(r"```toml\n(.*?)```", section, re.DOTALL)
    assert example is not None
    data = textwrap.dedent(example.group(1))
    import tomllib

    parsed = tomllib.loads(data)
    assert set(parsed["server"]) - {"limits"} <= set(ServerConfig.model_fields)
    config = config_from_dict(parsed, env={"STEERLINE_API_KEYS": "k", "STEERLINE_METRICS_KEY": "m"})
    assert set(parsed["server"]["limits"]) == set(LimitsConfig.model_fields)
    settings_from_config(config)
