"""Which API key an endpoint gets (docs/providers.md, "API keys"): a key from the
environment goes only to the provider's own API; an explicit key always goes.

Requests go to the loopback stub only; the hosted APIs are never contacted
(for them the tests read the key the SDK client was given)."""

from __future__ import annotations

import pytest

from steerline import Agent
from steerline.config import config_from_dict
from steerline.models.anthropic import AnthropicModel
from steerline.models.keys import api_key_for
from steerline.models.openai import OpenAIModel

from .stub import AnthropicWire, OpenAIWire, StreamReply, Stub

pytestmark = pytest.mark.anyio

OPENAI_SECRET = "sk-hosted-openai-secret"
ANTHROPIC_SECRET = "sk-ant-hosted-secret"


@pytest.fixture
def hosted_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hosted keys are in the environment, as on a developer's machine."""
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_SECRET)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_SECRET)
    monkeypatch.setenv("ANTHROPIC_AUTH_TOKEN", "ant-token-secret")
    for name in ("OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def _all_headers(stub: Stub) -> str:
    return "\n".join(f"{k}: {v}" for r in stub.requests for k, v in r.headers.items())


async def test_openai_env_key_is_not_sent_to_a_custom_base_url(
    stub: Stub, hosted_keys: None
) -> None:
    stub.push(StreamReply(OpenAIWire.text_reply("ok")))
    async with OpenAIModel("m", base_url=f"{stub.base_url}/v1") as model:
        result = await Agent(model=model).prompt("hi")
    assert result.stop_reason == "completed"
    assert OPENAI_SECRET not in _all_headers(stub)
    assert stub.requests[0].headers["authorization"] == "Bearer not-needed"


async def test_anthropic_env_key_is_not_sent_to_a_custom_base_url(
    stub: Stub, hosted_keys: None
) -> None:
    stub.push(StreamReply(AnthropicWire.text_reply("ok")))
    async with AnthropicModel("claude-stub", base_url=stub.base_url) as model:
        result = await Agent(model=model).prompt("hi")
    assert result.stop_reason == "completed"
    headers = _all_headers(stub)
    assert ANTHROPIC_SECRET not in headers and "ant-token-secret" not in headers


async def test_openai_env_key_is_not_sent_to_an_env_base_url(
    stub: Stub, hosted_keys: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``OPENAI_BASE_URL`` is where the SDK goes when no base_url is given:
    the rule looks at that endpoint, not at the argument."""
    monkeypatch.setenv("OPENAI_BASE_URL", f"{stub.base_url}/v1")
    stub.push(StreamReply(OpenAIWire.text_reply("ok")))
    async with OpenAIModel("m") as model:
        await Agent(model=model).prompt("hi")
    assert stub.requests[0].path == "/v1/chat/completions"
    assert OPENAI_SECRET not in _all_headers(stub)


async def test_an_explicit_key_is_sent_to_a_custom_base_url(stub: Stub, hosted_keys: None) -> None:
    stub.push(StreamReply(OpenAIWire.text_reply("ok")), StreamReply(AnthropicWire.text_reply("ok")))
    async with OpenAIModel("m", api_key="sk-mine", base_url=f"{stub.base_url}/v1") as openai:
        await Agent(model=openai).prompt("hi")
    async with AnthropicModel("c", api_key="sk-ant-mine", base_url=stub.base_url) as anthropic:
        await Agent(model=anthropic).prompt("hi")
    assert stub.requests[0].headers["authorization"] == "Bearer sk-mine"
    anthropic_auth = stub.requests[1].headers
    assert "sk-ant-mine" in anthropic_auth.get("x-api-key", anthropic_auth.get("authorization", ""))


async def test_the_env_key_goes_to_the_providers_own_api(hosted_keys: None) -> None:
    for base_url in (None, "https://api.openai.com/v1", "https://API.openai.com:443/v1/"):
        async with OpenAIModel("m", base_url=base_url) as model:
            assert model.client.api_key == OPENAI_SECRET, base_url
    for base_url in (None, "https://api.anthropic.com"):
        async with AnthropicModel("c", base_url=base_url) as claude:
            assert claude.client.api_key == ANTHROPIC_SECRET, base_url


def test_key_rule_by_endpoint() -> None:
    env = {"OPENAI_API_KEY": "env-key", "ANTHROPIC_API_KEY": "env-ant"}
    sent = {
        None: "env-key",
        "https://api.openai.com/v1": "env-key",
        "http://api.openai.com/v1": "not-needed",  # not over TLS: not the provider's API
        "https://api.openai.com.evil.example/v1": "not-needed",
        "https://evil.example/api.openai.com/v1": "not-needed",
        "https://user@evil.example/v1": "not-needed",
        "http://localhost:11434/v1": "not-needed",
        "https://api.anthropic.com": "not-needed",  # another provider's host
    }
    for base_url, key in sent.items():
        assert api_key_for("openai", api_key=None, base_url=base_url, env=env) == key, base_url
    assert api_key_for("anthropic", api_key=None, base_url=None, env=env) == "env-ant"
    # an explicit key is always used
    assert api_key_for("openai", api_key="mine", base_url="http://x/v1", env=env) == "mine"
    # the provider's own API without any key: None (the caller reports it)
    assert api_key_for("openai", api_key=None, base_url=None, env={}) is None


async def test_config_and_library_follow_the_same_rule(hosted_keys: None) -> None:
    config = config_from_dict(
        {
            "agents": {
                "hosted": {"provider": "openai", "model": "m"},
                "local": {"provider": "openai", "model": "m", "base_url": "http://127.0.0.1:1/v1"},
                "named": {
                    "provider": "openai",
                    "model": "m",
                    "base_url": "http://127.0.0.1:1/v1",
                    "api_key_env": "MY_VLLM_KEY",
                },
            }
        },
        env={"OPENAI_API_KEY": OPENAI_SECRET, "MY_VLLM_KEY": "vllm-key"},
    )
    try:
        keys = {
            name: config.agent(name).resolved_model.client.api_key  # type: ignore[attr-defined]
            for name in ("hosted", "local", "named")
        }
    finally:
        await config.aclose()
    assert keys == {"hosted": OPENAI_SECRET, "local": "not-needed", "named": "vllm-key"}
