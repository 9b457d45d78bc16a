"""Security hygiene: API keys stay out of the logs, /metrics is not public, and
failed key guesses are rate limited per client address (SPEC §4 "Auth").

A client "elsewhere" is simulated with ``X-Forwarded-For``: uvicorn trusts it
from 127.0.0.1 by default (a reverse proxy on the same machine), so the server
sees the forwarded address. Nothing leaves loopback.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2
import pytest

from steerline.config import config_from_dict
from steerline.server.auth import TenantGate
from steerline.server.errors import HTTPError
from steerline.server.from_config import settings_from_config
from steerline.server.serving import redact_query
from steerline.server.settings import ServerSettings
from tests.server.clients import client, error_of, open_socket
from tests.server.harness import (
    RunningServer,
    free_port,
    server_log,
    steerline_script,
    wait_healthy,
)

pytestmark = pytest.mark.anyio

KEY = "sk-very-secret-0123456789"
ELSEWHERE = {"X-Forwarded-For": "203.0.113.7"}


# -- (a) API keys are redacted from uvicorn's log lines ----------------------------------
def test_redact_query() -> None:
    assert redact_query(f"/a?access_token={KEY}&x=1") == "/a?access_token=[redacted]&x=1"
    assert redact_query(f"/a?x=1&access%5Ftoken={KEY}") == "/a?x=1&access%5Ftoken=[redacted]"
    assert redact_query(f"/a?ACCESS_TOKEN={KEY}") == "/a?ACCESS_TOKEN=[redacted]"
    assert KEY not in redact_query(f'GET /a?access_token={KEY} HTTP/1.1" 200')
    assert redact_query("/a?x=1") == "/a?x=1"
    assert redact_query("no query") == "no query"


async def test_access_token_is_not_logged(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(ServerSettings(store="memory://", api_keys={KEY: "t1"}), log_level="info")
    with server_log() as records:
        async with client() as http:
            for params in (
                {"access_token": KEY},
                {"access%5Ftoken": KEY},  # decoded by the server: the same parameter
                {"access_token": "wrong-guess", "limit": "5"},
            ):
                query = "&".join(f"{k}={v}" for k, v in params.items())
                await http.get(f"{server.api}/conversations?{query}")
        async with open_socket(server, "conv-x", query=f"?access_token={KEY}") as socket:
            await socket.next_frame()
    lines = [record.getMessage() for record in records]
    assert any("GET /api/v1/conversations?access_token=[redacted]" in line for line in lines)
    assert any("WebSocket" in line and "access_token=[redacted]" in line for line in lines)
    assert not [line for line in lines if KEY in line or "wrong-guess" in line]


@pytest.fixture
def serve_process(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], tuple[str, Path]]]:
    processes: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str]) -> tuple[str, Path]:
        port = free_port()
        output = tmp_path / f"serve-{port}.log"
        base = {k: v for k, v in os.environ.items() if not k.startswith("STEERLINE_")}
        with output.open("wb") as log:
            processes.append(
                subprocess.Popen(
                    [steerline_script(), "serve", "--port", str(port), "--store", "memory://"],
                    cwd=tmp_path,
                    env={**base, **env},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        return f"http://127.0.0.1:{port}", output

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=15)


async def test_serve_does_not_log_the_access_token(
    serve_process: Callable[[dict[str, str]], tuple[str, Path]],
) -> None:
    url, output = serve_process({"STEERLINE_API_KEYS": KEY})
    await wait_healthy(url, lambda: True)
    async with client() as http:
        response = await http.get(f"{url}/api/v1/conversations", params={"access_token": KEY})
        assert response.status_code == 200
        # the access line is written before the response; one more request flushes nothing
        # but proves the process is still serving when the log is read
        await http.get(f"{url}/healthz")
    text = output.read_text()
    assert "/api/v1/conversations?access_token=[redacted]" in text, text
    assert KEY not in text


# -- (b) /metrics is not public ------------------------------------------------------------
async def test_metrics_answers_loopback_only_by_default(server: RunningServer) -> None:
    assert ServerSettings().metrics_key is None
    async with client() as http:
        assert (await http.get(f"{server.url}/metrics")).status_code == 200
        error_of(await http.get(f"{server.url}/metrics", headers=ELSEWHERE), 403, "forbidden")


async def test_metrics_key(make_server: Callable[..., RunningServer]) -> None:
    server = make_server(ServerSettings(store="memory://", metrics_key="mk-1"))
    url = f"{server.url}/metrics"
    async with client() as http:
        response = await http.get(url)
        error_of(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"
        error_of(await http.get(url, headers={"Authorization": "Bearer mk-2"}), 401)
        for headers in ({}, ELSEWHERE):  # with the key, from anywhere
            ok = await http.get(url, headers={"Authorization": "Bearer mk-1", **headers})
            assert ok.status_code == 200
            assert "steerline_runs_total" in ok.text


def test_metrics_key_from_the_environment() -> None:
    env = {"STEERLINE_METRICS_KEY": "mk-env"}
    assert settings_from_config(config_from_dict({}, env=env)).metrics_key == "mk-env"
    assert settings_from_config(config_from_dict({}, env={})).metrics_key is None
    named = {"server": {"metrics_key_env": "MY_METRICS"}}
    assert (
        settings_from_config(config_from_dict(named, env={"MY_METRICS": "m2"})).metrics_key == "m2"
    )
    with pytest.raises(Exception, match="MY_METRICS is not set"):
        config_from_dict(named, env={})
    with pytest.raises(Exception, match="metrics_key_env"):
        config_from_dict({"server": {"metrics_key": "in-the-file"}}, env={})
    limits = {"server": {"limits": {"auth_failures_per_minute": 7}}}
    assert settings_from_config(config_from_dict(limits, env={})).auth_failures_per_minute == 7


# -- (c) failed authentications are rate limited per address ------------------------------
async def _guesses(http: httpx2.AsyncClient, url: str, count: int, headers: dict[str, str]) -> None:
    for i in range(count):
        response = await http.get(url, headers={"Authorization": f"Bearer guess-{i}", **headers})
        error_of(response, 401, "unauthorized")


async def test_failed_authentications_are_limited_per_address(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(
        ServerSettings(store="memory://", api_keys={KEY: "t1"}, auth_failures_per_minute=5)
    )
    url = f"{server.api}/conversations"
    good = {"Authorization": f"Bearer {KEY}"}
    async with client() as http:
        await _guesses(http, url, 5, ELSEWHERE)
        refused = await http.get(url, headers={"Authorization": "Bearer guess-6", **ELSEWHERE})
        error_of(refused, 429, "rate_limited")
        assert 1 <= int(refused.headers["retry-after"]) <= 12
        # the right key from that address is refused too (else guessing goes on)
        error_of(await http.get(url, headers={**good, **ELSEWHERE}), 429, "rate_limited")
        error_of(
            await http.get(url, params={"access_token": KEY}, headers=ELSEWHERE),
            429,
            "rate_limited",
        )
        # other addresses are not affected
        assert (await http.get(url, headers=good)).status_code == 200
        other = {"X-Forwarded-For": "198.51.100.9"}
        assert (await http.get(url, headers={**good, **other})).status_code == 200
    async with open_socket(server, "conv-x", headers=ELSEWHERE) as socket:
        frame = await socket.next_frame()
        assert frame["type"] == "error" and frame["error"]["code"] == "rate_limited", frame
        await socket.ws.wait_closed()
        assert socket.ws.close_code == 4429


async def test_default_auth_failure_limit(make_server: Callable[..., RunningServer]) -> None:
    assert ServerSettings().auth_failures_per_minute == 30
    server = make_server(ServerSettings(store="memory://", api_keys={KEY: "t1"}))
    url = f"{server.api}/agents"
    async with client() as http:
        await _guesses(http, url, 30, ELSEWHERE)
        error_of(await http.get(url, headers=ELSEWHERE), 429, "rate_limited")


async def test_failed_metrics_keys_count_as_failed_authentications(
    make_server: Callable[..., RunningServer],
) -> None:
    server = make_server(
        ServerSettings(store="memory://", metrics_key="mk-1", auth_failures_per_minute=3)
    )
    async with client() as http:
        await _guesses(http, f"{server.url}/metrics", 3, ELSEWHERE)
        response = await http.get(
            f"{server.url}/metrics", headers={"Authorization": "Bearer mk-1", **ELSEWHERE}
        )
        error_of(response, 429, "rate_limited")


def test_auth_failures_refill(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bucket refills at the configured rate: a blocked address gets in again."""
    now = [1000.0]
    monkeypatch.setattr("steerline.server.auth.time.monotonic", lambda: now[0])
    gate = TenantGate(ServerSettings(api_keys={KEY: "t1"}, auth_failures_per_minute=6))
    good = {"authorization": f"Bearer {KEY}"}
    for _ in range(6):
        with pytest.raises(HTTPError) as failed:
            gate.authenticate({"authorization": "Bearer nope"}, {}, "203.0.113.7")
        assert failed.value.status == 401
    with pytest.raises(HTTPError) as limited:
        gate.authenticate(good, {}, "203.0.113.7")
    assert limited.value.status == 429
    assert limited.value.headers["Retry-After"] == "10"  # one token per 10 s at 6/min
    assert gate.authenticate(good, {}, "198.51.100.9") == "t1"
    now[0] += 10.0
    assert gate.authenticate(good, {}, "203.0.113.7") == "t1"


def test_create_app_installs_the_log_filter() -> None:
    """The filter sits on uvicorn's loggers (create_app installs it)."""
    from steerline.server.app import create_app

    create_app(ServerSettings(store="memory://"))
    for name in ("uvicorn.error", "uvicorn.access"):
        assert any(type(f).__name__ == "UvicornLogFilter" for f in logging.getLogger(name).filters)
