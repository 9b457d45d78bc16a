"""``steerline.toml`` plus ``STEERLINE_*`` environment variables → typed settings.

::

    default_agent = "assistant"        # optional; "demo" when absent
    python_path = ["."]                # where package.module:function tools are
                                       # imported from (relative to this file)

    [server]
    host = "127.0.0.1"
    port = 8000
    store = "sqlite:///steerline.db"
    api_keys_env = "STEERLINE_API_KEYS"  # NAME of the variable holding the keys
    metrics_key_env = "STEERLINE_METRICS_KEY"  # NAME of the variable holding the
                                       # /metrics key (none: loopback clients only)

    [agents.assistant]
    provider = "openai"                # demo | openai | anthropic
    model = "gpt-4o-mini"
    api_key_env = "OPENAI_API_KEY"     # NAME of the variable holding the key
    system_prompt = "You are terse."
    tools = ["calculator", "clock", "mytools:search"]
    steering_policy = "after_tool"

Secrets never live in the file: an ``api_key`` (or ``[server] api_keys``)
field is refused, ``api_key_env`` names the environment variable instead.
Everything is checked when the file is loaded (unknown fields, providers or
tools, bad values, missing key variables) and reported as a
:class:`ConfigError` naming the agent and the field, so a server fails at
start-up rather than at the first message.

Environment variables override the file: ``STEERLINE_CONFIG`` (the file to
read), ``STEERLINE_HOST``, ``STEERLINE_PORT``, ``STEERLINE_STORE``,
``STEERLINE_API_KEYS`` (``token`` or ``tenant:token``, comma-separated),
``STEERLINE_DEFAULT_AGENT``, and ``STEERLINE_SERVER__<KEY>`` for any other
``[server]`` key (the value is parsed as JSON when it is valid JSON).
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import sys
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pydantic

from steerline.core.errors import InvalidValueError, ModelError, SteerlineError
from steerline.models.base import Model
from steerline.models.keys import PROVIDER_APIS, api_key_for, endpoint
from steerline.models.registry import PROVIDERS, build_model
from steerline.runtime.agent import Agent
from steerline.runtime.executor import ToolExecution
from steerline.runtime.inbox import DeliveryMode
from steerline.runtime.retry import RetryPolicy
from steerline.runtime.run import SteeringPolicy
from steerline.tools.base import FunctionTool, Tool
from steerline.tools.builtin import calculator, clock, echo, sleep

if TYPE_CHECKING:
    from steerline.service.agents import AgentRegistry, AgentSpec

CONFIG_FILE = "steerline.toml"
ENV_PREFIX = "STEERLINE_"
BUILTIN_TOOLS: dict[str, Tool] = {
    "sleep": sleep,
    "clock": clock,
    "calculator": calculator,
    "echo": echo,
}
DEFAULT_TENANT = "default"


class ConfigError(SteerlineError):
    """The configuration is invalid; the message names the file, agent and field."""

    code = "config_error"


# -- schema -------------------------------------------------------------------
class ServerConfig(pydantic.BaseModel):
    """``[server]``: the basics; other keys are kept (``extra``) for the server to read."""

    model_config = pydantic.ConfigDict(extra="allow")

    host: str = "127.0.0.1"
    port: int = pydantic.Field(8000, ge=0, le=65535)
    store: str = "sqlite:///steerline.db"
    api_keys_env: str | None = None
    """The NAME of an environment variable holding ``token`` / ``tenant:token`` items."""
    api_keys: dict[str, str] = pydantic.Field(default_factory=dict, exclude=True)
    """Bearer token → tenant, read from ``api_keys_env`` / ``STEERLINE_API_KEYS``
    (never from the file)."""
    limits: dict[str, Any] = pydantic.Field(default_factory=dict)
    metrics_key_env: str | None = None
    """The NAME of an environment variable holding the ``/metrics`` bearer token."""
    metrics_key: str | None = pydantic.Field(None, exclude=True)
    """Read from ``metrics_key_env`` / ``STEERLINE_METRICS_KEY`` (never from the file)."""

    def as_dict(self) -> dict[str, Any]:
        """Every ``[server]`` setting, API keys included, as a plain dict."""
        data = self.model_dump()
        data["api_keys"] = dict(self.api_keys)
        data["metrics_key"] = self.metrics_key
        return data


class AgentConfig(pydantic.BaseModel):
    """One ``[agents.NAME]`` table. ``build()`` makes a fresh :class:`Agent`."""

    model_config = pydantic.ConfigDict(extra="forbid")

    name: str
    provider: str = "demo"
    model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    """The NAME of the environment variable holding the API key."""
    description: str = ""
    system_prompt: str = ""
    tools: list[str] = pydantic.Field(default_factory=list)
    """Built-in names (sleep, clock, calculator, echo) or ``package.module:function``."""
    steering_mode: DeliveryMode = "one-at-a-time"
    follow_up_mode: DeliveryMode = "one-at-a-time"
    steering_policy: SteeringPolicy = "after_tool"
    tool_execution: ToolExecution = "parallel"
    max_parallel_tools: int = pydantic.Field(8, ge=1)
    temperature: float | None = pydantic.Field(None, ge=0)
    max_tokens: int | None = pydantic.Field(None, ge=1)
    timeout: float | None = pydantic.Field(None, gt=0)
    """Seconds the HTTP client waits (connect, and between two streamed chunks)."""
    tool_cancel_grace: float = pydantic.Field(0.0, ge=0)
    """Seconds a cancelled tool may take to clean up before it is torn down."""
    max_retries: int = pydantic.Field(3, ge=0)
    """Retries of a transient model error (429, 5xx, connection lost)."""
    options: dict[str, Any] = pydantic.Field(default_factory=dict)
    """Extra provider options: model class arguments (``thinking_budget``,
    ``stream_usage``) or request fields (``top_p``, ``extra_body``, ...)."""

    _model: Model | None = pydantic.PrivateAttr(None)
    _tools: list[Tool] = pydantic.PrivateAttr(default_factory=list)

    # -- resolution (at load time) --------------------------------------------
    def resolve(self, env: Mapping[str, str] | None = None) -> AgentConfig:
        """Check the provider, key and tools and build the model; raise ``ConfigError``.

        Called by :func:`load_config`; call it yourself for a config built in code.
        """
        env = os.environ if env is None else env
        self._tools = self._resolve_tools()
        self._model = self._build_model(env)
        return self

    def _error(self, field: str, message: str) -> ConfigError:
        return ConfigError(f"agents.{self.name}.{field}: {message}")

    def _api_key(self, env: Mapping[str, str]) -> str | None:
        """The key from ``api_key_env`` (an explicit choice, always sent); else
        the one key rule of :func:`steerline.models.keys.api_key_for`: the
        provider's usual variable for its own API only, never for a custom
        endpoint (which gets the ``NO_KEY`` placeholder)."""
        if self.provider not in PROVIDER_APIS:
            return None
        if self.api_key_env:
            value = env.get(self.api_key_env, "").strip()
            if not value:
                raise self._error(
                    "api_key_env",
                    f"environment variable {self.api_key_env} is not set (it should hold "
                    f"the {self.provider} API key)",
                )
            return value
        key = api_key_for(self.provider, api_key=None, base_url=self.base_url, env=env)
        if key is not None:
            return key
        default = PROVIDER_APIS[self.provider].key_env
        raise self._error(
            "api_key_env",
            f"no API key: set {default} or name the variable holding the key with api_key_env",
        )

    def _build_model(self, env: Mapping[str, str]) -> Model:
        if self.provider not in PROVIDERS:
            raise self._error(
                "provider",
                f"unknown provider {self.provider!r}; expected one of {', '.join(PROVIDERS)}",
            )
        if self.provider != "demo" and not self.model:
            raise self._error("model", f"a model name is required for provider {self.provider!r}")
        options: dict[str, Any] = dict(self.options)
        if self.provider != "demo":
            options.update(
                model=self.model,
                api_key=self._api_key(env),
                # the endpoint the key was chosen for, resolved with the same ``env``
                base_url=endpoint(self.provider, self.base_url, env),
            )
            for name in ("temperature", "max_tokens", "timeout"):
                value = getattr(self, name)
                if value is not None:
                    options[name] = value
        elif self.base_url or self.api_key_env:
            field = "base_url" if self.base_url else "api_key_env"
            raise self._error(field, "the demo provider takes no endpoint or key")
        try:
            return build_model(self.provider, **options)
        except (InvalidValueError, ModelError) as exc:
            raise self._error("options", exc.message) from None

    def _resolve_tools(self) -> list[Tool]:
        tools: list[Tool] = []
        seen: set[str] = set()
        for reference in self.tools:
            try:
                found = resolve_tool(reference)
            except ConfigError as exc:
                raise self._error("tools", exc.message) from None
            for item in found:
                if item.spec.name in seen:
                    raise self._error("tools", f"two tools are named {item.spec.name!r}")
                seen.add(item.spec.name)
                tools.append(item)
        return tools

    # -- use --------------------------------------------------------------------
    @property
    def resolved_model(self) -> Model:
        """The model every agent built from this config shares (one HTTP client)."""
        if self._model is None:
            self.resolve()
        assert self._model is not None
        return self._model

    @property
    def resolved_tools(self) -> list[Tool]:
        if self._model is None:
            self.resolve()
        return list(self._tools)

    def build(self, **overrides: Any) -> Agent:
        """A fresh :class:`Agent` (own inbox and context) with this configuration.

        ``overrides`` are ``Agent`` keyword arguments (``messages=...``,
        ``inbox_limits=...``) that win over the configured ones.
        """
        settings: dict[str, Any] = {
            "model": self.resolved_model,
            "tools": self.resolved_tools,
            "system_prompt": self.system_prompt,
            "steering_mode": self.steering_mode,
            "follow_up_mode": self.follow_up_mode,
            "steering_policy": self.steering_policy,
            "tool_execution": self.tool_execution,
            "max_parallel_tools": self.max_parallel_tools,
            "tool_cancel_grace": self.tool_cancel_grace,
            "retry": RetryPolicy(max_retries=self.max_retries),
        }
        settings.update(overrides)
        return Agent(**settings)

    def spec(self) -> AgentSpec:
        """This agent as the server's ``AgentSpec`` (build, description, provider, model)."""
        from steerline.service.agents import AgentSpec

        return AgentSpec(
            name=self.name,
            build=self.build,
            description=self.description,
            provider=self.provider,
            model=self.model or self.provider,
        )

    async def aclose(self) -> None:
        """Close the model's HTTP client, if it has one."""
        aclose: Callable[[], Any] | None = getattr(self._model, "aclose", None)
        if aclose is not None:
            await aclose()


class SteerlineConfig(pydantic.BaseModel):
    """The whole configuration: ``server`` settings and ``agents`` by name."""

    model_config = pydantic.ConfigDict(extra="forbid")

    source: str | None = None
    """The file it was read from (None: defaults only)."""
    default_agent: str = "demo"
    python_path: list[str] = pydantic.Field(default_factory=lambda: ["."])
    server: ServerConfig = pydantic.Field(default_factory=ServerConfig)
    agents: dict[str, AgentConfig] = pydantic.Field(default_factory=dict)

    def agent(self, name: str | None = None) -> AgentConfig:
        """The named agent (the default agent when ``name`` is None)."""
        name = name or self.default_agent
        try:
            return self.agents[name]
        except KeyError:
            known = ", ".join(sorted(self.agents))
            raise ConfigError(f"unknown agent {name!r}; configured agents: {known}") from None

    def agent_specs(self) -> list[AgentSpec]:
        return [agent.spec() for agent in self.agents.values()]

    def registry(self) -> AgentRegistry:
        """The server's ``AgentRegistry`` with every configured agent (``demo`` included)."""
        from steerline.service.agents import AgentRegistry

        return AgentRegistry(self.agent_specs())

    async def aclose(self) -> None:
        """Close every model's HTTP client (call at server shutdown)."""
        for agent in self.agents.values():
            await agent.aclose()


def demo_agent_config() -> AgentConfig:
    """The built-in ``demo`` agent: offline model, the four demo tools."""
    return AgentConfig(
        name="demo",
        provider="demo",
        description="Offline demo agent: echoes, obeys /call, /think and /delay directives.",
        tools=list(BUILTIN_TOOLS),
    )


# -- tools --------------------------------------------------------------------
def _as_tools(obj: object, reference: str) -> list[Tool]:
    if isinstance(obj, Tool):
        return [obj]
    if isinstance(obj, list | tuple):
        return [tool for item in obj for tool in _as_tools(item, reference)]
    if inspect.isclass(obj) or not callable(obj):
        raise ConfigError(f"{reference!r} is not a tool or a function")
    try:
        return [FunctionTool(obj)]
    except Exception as exc:
        raise ConfigError(
            f"{reference!r} cannot be made a tool: {type(exc).__name__}: {exc}"
        ) from None


def resolve_tool(reference: str) -> list[Tool]:
    """A built-in tool name or ``package.module:attribute`` → tools.

    The attribute may be a tool (``@tool``), a plain function (wrapped with
    ``@tool``: schema from its type hints and docstring), or a list of them.
    """
    reference = reference.strip()
    if reference in BUILTIN_TOOLS:
        return [BUILTIN_TOOLS[reference]]
    module_name, colon, attribute = reference.partition(":")
    if not colon or not module_name or not attribute:
        raise ConfigError(
            f"unknown tool {reference!r}; built-in tools are {', '.join(BUILTIN_TOOLS)}, "
            "your own are 'package.module:function'"
        )
    try:
        obj: object = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"cannot import {module_name!r} for tool {reference!r}: {exc}") from None
    except Exception as exc:
        raise ConfigError(
            f"importing {module_name!r} for tool {reference!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"{module_name!r} has no attribute {attribute!r}") from None
    return _as_tools(obj, reference)


# -- loading ------------------------------------------------------------------
def _parse_api_keys(raw: str, source: str) -> dict[str, str]:
    keys: dict[str, str] = {}
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        tenant, colon, token = item.partition(":")
        if not colon:
            tenant, token = DEFAULT_TENANT, item
        tenant, token = tenant.strip(), token.strip()
        if not tenant or not token:
            raise ConfigError(f"{source}: expected 'token' or 'tenant:token' items")
        keys[token] = tenant
    return keys


def _env_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _server_data(data: Mapping[str, Any], env: Mapping[str, str]) -> tuple[dict[str, Any], str]:
    server = dict(data)
    if "api_keys" in server:
        raise ConfigError(
            "server.api_keys: API keys must not be written in the config file; put them in "
            "an environment variable and name it with server.api_keys_env"
        )
    if "metrics_key" in server:
        raise ConfigError(
            "server.metrics_key: keys must not be written in the config file; put it in "
            "an environment variable and name it with server.metrics_key_env"
        )
    prefix = f"{ENV_PREFIX}SERVER__"
    for key, raw in env.items():
        if key.startswith(prefix) and len(key) > len(prefix):
            server[key[len(prefix) :].lower()] = _env_value(raw)
    for name in ("host", "port", "store"):
        override = env.get(f"{ENV_PREFIX}{name.upper()}")
        if override:
            server[name] = override
    keys_env = server.get("api_keys_env") or f"{ENV_PREFIX}API_KEYS"
    return server, str(keys_env)


def _agent_data(name: str, table: object) -> dict[str, Any]:
    if not isinstance(table, Mapping):
        raise ConfigError(f"agents.{name}: expected a table ([agents.{name}])")
    if "api_key" in table:
        raise ConfigError(
            f"agents.{name}.api_key: API keys must not be written in the config file; put "
            f"the key in an environment variable and name it with api_key_env "
            f'(e.g. api_key_env = "OPENAI_API_KEY")'
        )
    if "name" in table and table["name"] != name:
        raise ConfigError(f"agents.{name}.name: the name is the table's ({name!r})")
    return {**table, "name": name}


def _validation_message(exc: pydantic.ValidationError) -> str:
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "config"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        elif error["type"] == "literal_error":
            message = f"{message}, got {error['input']!r}"
        lines.append(f"{where}: {message}")
    return "; ".join(lines)


def _add_python_path(entries: Iterable[str], base: Path) -> None:
    for entry in entries:
        path = str((base / entry).resolve())
        if path not in sys.path:
            sys.path.insert(0, path)


def config_from_dict(
    data: Mapping[str, Any],
    *,
    env: Mapping[str, str] | None = None,
    source: str | None = None,
    base_dir: str | Path | None = None,
) -> SteerlineConfig:
    """Validate parsed TOML (plus ``env``) and resolve every agent; raise ``ConfigError``."""
    env = os.environ if env is None else env
    where = f"{source}: " if source else ""
    try:
        raw = dict(data)
        server_table = raw.pop("server", {})
        if not isinstance(server_table, Mapping):
            raise ConfigError("server: expected a table ([server])")
        server, keys_env = _server_data(server_table, env)
        agents_table = raw.pop("agents", {})
        if not isinstance(agents_table, Mapping):
            raise ConfigError("agents: expected tables ([agents.NAME])")
        agents = {str(name): _agent_data(str(name), table) for name, table in agents_table.items()}
        default_agent = env.get(f"{ENV_PREFIX}DEFAULT_AGENT") or raw.pop("default_agent", "demo")
        config = SteerlineConfig.model_validate(
            {
                **raw,
                "source": source,
                "default_agent": default_agent,
                "server": server,
                "agents": agents,
            }
        )
        if "demo" not in config.agents:
            config.agents = {"demo": demo_agent_config(), **config.agents}
        keys = env.get(keys_env, "")
        if server.get("api_keys_env") and not keys.strip():
            raise ConfigError(f"server.api_keys_env: environment variable {keys_env} is not set")
        config.server.api_keys = _parse_api_keys(keys, keys_env)
        metrics_env = str(server.get("metrics_key_env") or f"{ENV_PREFIX}METRICS_KEY")
        metrics_key = env.get(metrics_env, "").strip()
        if server.get("metrics_key_env") and not metrics_key:
            raise ConfigError(
                f"server.metrics_key_env: environment variable {metrics_env} is not set"
            )
        config.server.metrics_key = metrics_key or None
        if config.default_agent not in config.agents:
            known = ", ".join(sorted(config.agents))
            raise ConfigError(
                f"default_agent: no agent named {config.default_agent!r} (agents: {known})"
            )
        if any(":" in ref for agent in config.agents.values() for ref in agent.tools):
            _add_python_path(config.python_path, Path(base_dir) if base_dir else Path.cwd())
        for agent in config.agents.values():
            agent.resolve(env)
    except ConfigError as exc:
        raise ConfigError(f"{where}{exc.message}") from None
    except pydantic.ValidationError as exc:
        raise ConfigError(f"{where}{_validation_message(exc)}") from None
    return config


def load_config(
    path: str | Path | None = None, *, env: Mapping[str, str] | None = None
) -> SteerlineConfig:
    """Read the configuration: ``path``, else ``$STEERLINE_CONFIG``, else
    ``./steerline.toml`` if it exists, else defaults (the ``demo`` agent only).

    Raises :class:`ConfigError` for a missing or invalid file, naming the field.
    """
    env = os.environ if env is None else env
    chosen = path or env.get(f"{ENV_PREFIX}CONFIG")
    if chosen is None:
        if not Path(CONFIG_FILE).is_file():
            return config_from_dict({}, env=env)
        chosen = CONFIG_FILE
    file = Path(chosen)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {file}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {file}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: invalid TOML: {exc}") from None
    return config_from_dict(data, env=env, source=str(file), base_dir=file.parent)


async def check_agent(config: AgentConfig, *, within: float = 10.0) -> str:
    """Reach the agent's endpoint once; return a one-line status or raise ``ConfigError``.

    The demo agent needs nothing. For the others this lists the provider's
    models (``GET /models``), which proves the URL, the network path and,
    on hosted APIs, the key.
    """
    model = config.resolved_model
    check: Callable[[], Any] | None = getattr(model, "check", None)
    if check is None:
        return f"agent {config.name!r}: {config.provider} model, nothing to check"
    where = getattr(model, "base_url", None) or config.base_url or config.provider
    try:
        with anyio.fail_after(within):
            await check()
    except TimeoutError:
        raise ConfigError(
            f"agent {config.name!r}: no answer from {where} within {within:g}s"
        ) from None
    except ModelError as exc:
        raise ConfigError(f"agent {config.name!r}: cannot use {where}: {exc.message}") from None
    return f"agent {config.name!r}: {config.provider} endpoint {where} is reachable"


__all__ = [
    "BUILTIN_TOOLS",
    "AgentConfig",
    "ConfigError",
    "ServerConfig",
    "SteerlineConfig",
    "check_agent",
    "config_from_dict",
    "demo_agent_config",
    "load_config",
    "resolve_tool",
]
