"""steerline.toml → agents that stream from the configured endpoint."""

from __future__ import annotations

import socket
import sys
import textwrap
from pathlib import Path

import pytest

from steerline.config import (
    AgentConfig,
    ConfigError,
    check_agent,
    config_from_dict,
    load_config,
)
from steerline.models.demo import DemoModel
from steerline.models.openai import OpenAIModel

from .recorder import Recorder
from .stub import AnthropicWire, JSONReply, OpenAIWire, StreamReply, Stub

TOOLS_MODULE = '''
def shout(text: str) -> str:
    """Shout the text.

    Args:
        text: What to shout.
    """
    return text.upper() + "!"
'''


@pytest.fixture(autouse=True)
def _isolated_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Configs add their directory to sys.path; undo it after each test."""
    monkeypatch.setattr(sys, "path", list(sys.path))


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "steerline.toml"
    path.write_text(textwrap.dedent(body))
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.anyio
async def test_openai_compatible_agent_from_toml_streams_from_the_stub(
    stub: Stub, tmp_path: Path
) -> None:
    (tmp_path / "steerline_cfg_tools.py").write_text(TOOLS_MODULE)
    path = write(
        tmp_path,
        f"""
        default_agent = "local"

        [server]
        port = 9123

        [agents.local]
        provider = "openai"
        model = "stub-model"
        base_url = "{stub.base_url}/v1"
        api_key_env = "STUB_LLM_KEY"
        description = "A local vLLM"
        system_prompt = "Be brief."
        tools = ["calculator", "steerline_cfg_tools:shout"]
        steering_policy = "immediate"
        temperature = 0.3
        max_tokens = 50
        options = {{ top_k = 20 }}
        """,
    )
    W = OpenAIWire
    stub.push(
        StreamReply(
            [
                W.role(),
                W.call_start(0, "c1", "shout"),
                W.call_args(0, '{"text": "hi"}'),
                W.call_start(1, "c2", "calculator"),
                W.call_args(1, '{"expression": "6*7"}'),
                W.finish("tool_calls"),
                W.done,
            ]
        ),
        StreamReply(W.text_reply("HI! and 42")),
    )
    config = load_config(path, env={"STUB_LLM_KEY": "sk-from-env"})
    try:
        assert config.server.port == 9123
        assert set(config.agents) == {"demo", "local"}
        agent_config = config.agent()
        assert agent_config.name == "local"
        agent = agent_config.build()
        assert isinstance(agent.model, OpenAIModel)
        assert agent.steering_policy == "immediate"
        recorder = Recorder(agent)
        result = await agent.prompt("shout hi and compute")
        assert result.stop_reason == "completed"
        results = {e.tool_call_id: e.result for e in recorder.of_type("tool_execution_end")}
        assert results == {"c1": "HI!", "c2": "42"}
        assert recorder.of_type("turn_end")[-1].message.text == "HI! and 42"
        first = stub.requests[0]
        assert first.headers["authorization"] == "Bearer sk-from-env"
        assert first.body["messages"][0] == {"role": "system", "content": "Be brief."}
        assert first.body["temperature"] == 0.3 and first.body["max_tokens"] == 50
        assert first.body["top_k"] == 20
        assert {t["function"]["name"] for t in first.body["tools"]} == {"calculator", "shout"}
        shout = next(t for t in first.body["tools"] if t["function"]["name"] == "shout")
        assert shout["function"]["description"] == "Shout the text."
        # Agents built from one config share the model (one HTTP connection pool).
        assert agent_config.build().model is agent.model
        spec = agent_config.spec()
        assert (spec.name, spec.provider, spec.model) == ("local", "openai", "stub-model")
        assert "local" in config.registry() and "demo" in config.registry()
    finally:
        await config.aclose()


@pytest.mark.anyio
async def test_anthropic_agent_from_toml(stub: Stub, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
        [agents.claude]
        provider = "anthropic"
        model = "claude-stub"
        base_url = "{stub.base_url}"
        api_key_env = "STUB_ANTHROPIC_KEY"
        options = {{ thinking_budget = 1024 }}
        max_tokens = 4096
        """,
    )
    stub.push(StreamReply(AnthropicWire.text_reply("Hello from Claude.")))
    config = load_config(path, env={"STUB_ANTHROPIC_KEY": "sk-ant-env"})
    try:
        agent = config.agent("claude").build()
        result = await agent.prompt("hi")
        assert result.stop_reason == "completed"
        assert agent.messages[-1].text == "Hello from Claude."
        body = stub.requests[0].body
        assert body["thinking"] == {"type": "enabled", "budget_tokens": 1024}
        assert body["max_tokens"] == 4096
    finally:
        await config.aclose()


def test_missing_key_variable_is_a_clear_error(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [agents.local]
        provider = "openai"
        model = "m"
        base_url = "http://127.0.0.1:1/v1"
        api_key_env = "STUB_MISSING_KEY"
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert "agents.local.api_key_env" in message
    assert "STUB_MISSING_KEY" in message and "not set" in message
    assert str(path) in message


def test_hosted_provider_without_any_key_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"agents\.claude\.api_key_env.*ANTHROPIC_API_KEY"):
        config_from_dict(
            {"agents": {"claude": {"provider": "anthropic", "model": "claude-x"}}}, env={}
        )


def test_literal_api_key_is_rejected(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [agents.local]
        provider = "openai"
        model = "m"
        api_key = "sk-do-not-put-me-here"
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, env={"OPENAI_API_KEY": "x"})
    message = str(info.value)
    assert "agents.local.api_key" in message and "api_key_env" in message
    assert "sk-do-not-put-me-here" not in message


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ({"provider": "litellm", "model": "m"}, r"agents\.a\.provider: unknown provider 'litellm'"),
        ({"provider": "openai"}, r"agents\.a\.model: a model name is required"),
        ({"tools": ["nope"]}, r"agents\.a\.tools: unknown tool 'nope'"),
        ({"tools": ["no_such_module_x:f"]}, r"agents\.a\.tools: cannot import 'no_such_module_x'"),
        ({"tools": ["json:no_such_function"]}, r"agents\.a\.tools: 'json' has no attribute"),
        ({"tools": ["json:__doc__"]}, r"agents\.a\.tools: 'json:__doc__' is not a tool"),
        ({"tools": ["echo", "echo"]}, r"agents\.a\.tools: two tools are named 'echo'"),
        ({"steering_policy": "sometimes"}, r"agents\.a\.steering_policy: .*'sometimes'"),
        ({"follow_up_mode": "batch"}, r"agents\.a\.follow_up_mode"),
        ({"temperature": -1}, r"agents\.a\.temperature"),
        ({"max_tokens": "many"}, r"agents\.a\.max_tokens"),
        (
            {"tempreature": 0.5},
            r"agents\.a\.tempreature: unknown key \(did you mean temperature\?\)",
        ),
        ({"base_url": "http://x"}, r"agents\.a\.base_url: the demo provider"),
    ],
)
def test_bad_agent_settings_name_the_agent_and_field(
    table: dict[str, object], expected: str
) -> None:
    with pytest.raises(ConfigError, match=expected):
        config_from_dict({"agents": {"a": table}}, env={"OPENAI_API_KEY": "x"})


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.toml", env={})
    path = write(tmp_path, "[agents.a\nprovider = 1")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(path, env={})


def test_demo_agent_exists_without_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no steerline.toml here
    config = load_config(env={})
    assert config.source is None
    assert config.default_agent == "demo"
    demo = config.agent()
    agent = demo.build()
    assert isinstance(agent.model, DemoModel)
    assert sorted(t.spec.name for t in agent.tools) == ["calculator", "clock", "echo", "sleep"]


def test_steerline_config_env_and_server_overrides(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [server]
        host = "127.0.0.1"
        port = 8000
        api_keys_env = "STUB_SERVER_KEYS"
        limits = { max_queued_messages = 50 }
        """,
    )
    config = load_config(
        env={
            "STEERLINE_CONFIG": str(path),
            "STEERLINE_PORT": "8123",
            "STEERLINE_SERVER__INSECURE": "true",
            "STUB_SERVER_KEYS": "tok-a, acme:tok-b",
        }
    )
    server = config.server.as_dict()
    assert server["port"] == 8123
    assert server["insecure"] is True
    assert server["limits"]["max_queued_messages"] == 50
    assert server["api_keys"] == {"tok-a": "default", "tok-b": "acme"}
    assert "tok-a" not in repr(config.server.model_dump())  # keys are not dumped


def test_literal_server_api_keys_are_rejected() -> None:
    with pytest.raises(ConfigError, match=r"server\.api_keys.*api_keys_env"):
        config_from_dict({"server": {"api_keys": {"secret": "t"}}}, env={})


def test_default_agent_must_exist() -> None:
    with pytest.raises(ConfigError, match="default_agent: no agent named 'ghost'"):
        config_from_dict({"default_agent": "ghost"}, env={})


def test_agent_config_in_code() -> None:
    agent = AgentConfig(name="calc", tools=["calculator"], system_prompt="Compute.").build()
    assert agent.system_prompt == "Compute."
    assert [t.spec.name for t in agent.tools] == ["calculator"]


@pytest.mark.anyio
async def test_check_agent_reachable_and_unreachable(stub: Stub) -> None:
    stub.push(
        JSONReply(200, {"object": "list", "data": [{"id": "stub-model", "object": "model"}]}),
        JSONReply(200, {"data": [], "has_more": False, "first_id": None, "last_id": None}),
        JSONReply(401, AnthropicWire.error("invalid x-api-key", "authentication_error")),
    )
    config = config_from_dict(
        {
            "agents": {
                "up": {
                    "provider": "openai",
                    "model": "stub-model",
                    "base_url": f"{stub.base_url}/v1",
                },
                "claude": {"provider": "anthropic", "model": "c", "base_url": stub.base_url},
                "down": {
                    "provider": "openai",
                    "model": "m",
                    "base_url": f"http://127.0.0.1:{free_port()}/v1",
                },
            }
        },
        env={},
    )
    try:
        status = await check_agent(config.agent("up"))
        assert "reachable" in status
        assert stub.requests[0].path == "/v1/models"
        assert "reachable" in await check_agent(config.agent("claude"))
        assert stub.requests[1].path == "/v1/models"
        with pytest.raises(ConfigError, match=r"HTTP 401.*invalid x-api-key"):
            await check_agent(config.agent("claude"))
        with pytest.raises(ConfigError) as info:
            await check_agent(config.agent("down"))
        message = str(info.value)
        assert "agent 'down'" in message and "127.0.0.1" in message
        assert "connection" in message.lower()
        assert "nothing to check" in await check_agent(config.agent("demo"))
    finally:
        await config.aclose()


@pytest.mark.anyio
async def test_a_hosted_key_is_not_sent_to_a_custom_endpoint(stub: Stub) -> None:
    stub.push(StreamReply(OpenAIWire.text_reply("ok")))
    config = config_from_dict(
        {
            "agents": {
                "vllm": {"provider": "openai", "model": "m", "base_url": f"{stub.base_url}/v1"}
            }
        },
        env={"OPENAI_API_KEY": "sk-hosted-secret"},
    )
    try:
        await config.agent("vllm").build().prompt("hi")
    finally:
        await config.aclose()
    assert "sk-hosted-secret" not in stub.requests[0].headers["authorization"]
