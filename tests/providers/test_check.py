"""The start-up endpoint check tells a refused key and a model the endpoint does not
serve from an unreachable endpoint; and a config loads only the SDKs it uses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import pytest

from steerline.config import ConfigError, SteerlineConfig, check_agent, config_from_dict
from tests.server.harness import free_port, wait_healthy

from .stub import Stub

STEERLINE = str(Path(sys.executable).parent / "steerline")


def one_agent(provider: str, stub: Stub, model: str, **extra: Any) -> SteerlineConfig:
    base_url = f"{stub.base_url}/v1" if provider == "openai" else stub.base_url
    table = {"provider": provider, "model": model, "base_url": base_url, **extra}
    return config_from_dict({"agents": {"a": table}}, env={"STUB_KEY": "sk-wrong"})


def url_of(provider: str, stub: Stub) -> str:
    return f"{stub.base_url}/v1" if provider == "openai" else stub.base_url


@pytest.mark.anyio
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("status", [401, 403])
async def test_a_refused_key_is_said_to_be_refused(stub: Stub, provider: str, status: int) -> None:
    stub.keys = {"sk-right"}
    stub.auth_status = status
    config = one_agent(provider, stub, "stub-model", api_key_env="STUB_KEY")
    try:
        with pytest.raises(ConfigError) as info:
            await check_agent(config.agent("a"))
    finally:
        await config.aclose()
    message = str(info.value)
    assert f"the endpoint refused the API key (HTTP {status})" in message, message
    assert url_of(provider, stub) in message
    assert "STUB_KEY" in message  # where the key came from
    assert "unreachable" not in message and "connection" not in message.lower()


@pytest.mark.anyio
async def test_a_refused_placeholder_key_says_that_no_key_was_sent(stub: Stub) -> None:
    stub.keys = {"sk-right"}
    config = one_agent("openai", stub, "stub-model")
    try:
        with pytest.raises(ConfigError, match=r"refused the API key \(HTTP 401\)") as info:
            await check_agent(config.agent("a"))
    finally:
        await config.aclose()
    assert "api_key_env" in str(info.value)


@pytest.mark.anyio
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_a_model_the_endpoint_does_not_serve_is_named(stub: Stub, provider: str) -> None:
    stub.models = ["alpha", "beta", "gamma"]
    config = one_agent(provider, stub, "qwen-typo")
    try:
        with pytest.raises(ConfigError) as info:
            await check_agent(config.agent("a"))
    finally:
        await config.aclose()
    assert str(info.value) == (
        f"agent 'a': model 'qwen-typo' is not served by {url_of(provider, stub)}; "
        "it serves: alpha, beta, gamma"
    )


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("provider", "model"),
    [("openai", "beta"), ("anthropic", "beta"), ("anthropic", "claude-stub")],
)
async def test_a_served_model_passes(stub: Stub, provider: str, model: str) -> None:
    # Anthropic lists dated ids; an alias ("claude-stub") is resolved by GET /v1/models/{id}
    stub.models = ["alpha", "beta", "claude-stub-20250101"]
    config = one_agent(provider, stub, model)
    try:
        status = await check_agent(config.agent("a"))
    finally:
        await config.aclose()
    assert "reachable" in status and f"serves {model!r}" in status


@pytest.mark.anyio
async def test_a_long_model_list_is_shortened(stub: Stub) -> None:
    stub.models = [f"m{i:02}" for i in range(30)]
    config = one_agent("openai", stub, "x")
    try:
        with pytest.raises(ConfigError, match=r"it serves: m00, m01, .*m09 and 20 more$"):
            await check_agent(config.agent("a"))
    finally:
        await config.aclose()


@pytest.mark.anyio
async def test_an_endpoint_that_lists_no_models_is_not_blamed(stub: Stub) -> None:
    stub.models = []
    config = one_agent("openai", stub, "x")
    try:
        assert "reachable" in await check_agent(config.agent("a"))
    finally:
        await config.aclose()


def _config(tmp_path: Path, stub: Stub, port: int | None = None) -> Path:
    path = tmp_path / "steerline.toml"
    server = f'[server]\nport = {port}\nstore = "memory://"\n' if port else ""
    path.write_text(
        server
        + textwrap.dedent(
            f"""
            [agents.locked]
            provider = "openai"
            model = "stub-model"
            base_url = "{stub.base_url}/v1"
            api_key_env = "STUB_WRONG_KEY"

            [agents.typo]
            provider = "openai"
            model = "stub-modle"
            base_url = "{stub.base_url}/v1"
            api_key_env = "STUB_RIGHT_KEY"
            """
        )
    )
    return path


ENV = {**os.environ, "STUB_WRONG_KEY": "sk-wrong", "STUB_RIGHT_KEY": "sk-right"}


@pytest.mark.anyio
async def test_serve_warns_about_a_refused_key_and_a_model_not_served(
    stub: Stub, tmp_path: Path
) -> None:
    stub.keys = {"sk-right"}
    stub.models = ["stub-model"]
    port = free_port()
    log = tmp_path / "stderr.txt"
    with log.open("wb") as stderr:
        process = await anyio.open_process(
            [STEERLINE, "serve", "--config", str(_config(tmp_path, stub, port))],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        # the checks run at start-up, before the server answers healthy
        await wait_healthy(f"http://127.0.0.1:{port}", lambda: process.returncode is None)
        text = log.read_text()
        assert "agent 'locked': the endpoint refused the API key (HTTP 401)" in text
        assert f"agent 'typo': model 'stub-modle' is not served by {stub.base_url}/v1" in text
        assert "it serves: stub-model" in text
        assert "until it is reachable" not in text
        assert "Traceback" not in text
        assert process.returncode is None  # warnings, the server runs
    finally:
        process.send_signal(signal.SIGTERM)
        with anyio.move_on_after(15) as timer:
            await process.wait()
        if timer.cancelled_caught:
            process.kill()
            await process.wait()
        await process.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("agent", "expected"),
    [
        ("locked", "agent 'locked': the endpoint refused the API key (HTTP 401)"),
        ("typo", "agent 'typo': model 'stub-modle' is not served by"),
    ],
)
async def test_chat_refuses_a_refused_key_and_a_model_not_served(
    stub: Stub, tmp_path: Path, agent: str, expected: str
) -> None:
    stub.keys = {"sk-right"}
    stub.models = ["stub-model"]
    result = await anyio.run_process(
        [STEERLINE, "chat", "--config", str(_config(tmp_path, stub)), "--agent", agent],
        env=ENV,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert result.returncode == 2
    assert expected.encode() in result.stderr, result.stderr
    assert b"Traceback" not in result.stderr


SDKS_LOADED = """
import sys
from steerline.config import config_from_dict
agents = {name: {"provider": name, "model": "m", "base_url": "http://127.0.0.1:9"}
          for name in sys.argv[1:]}
config = config_from_dict({"agents": agents}, env={})
config.registry()
config.agent(sys.argv[1] if len(sys.argv) > 1 else "demo").build()
print(",".join(sorted({"openai", "anthropic"} & set(sys.modules))))
"""


@pytest.mark.parametrize(
    ("providers", "loaded"),
    [
        ([], ""),
        (["openai"], "openai"),
        (["anthropic"], "anthropic"),
        (["openai", "anthropic"], "anthropic,openai"),
    ],
)
def test_a_config_imports_only_the_sdks_its_agents_use(providers: list[str], loaded: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SDKS_LOADED, *providers],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert result.stdout.strip() == loaded
