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
    cors_origins = ["http://localhost:5173"]

    [server.limits]                    # every limit: docs/server.md
    max_lag_events = 10000

    [agents.assistant]
    provider = "openai"                # demo | openai | anthropic
    model = "gpt-4o-mini"
    api_key_env = "OPENAI_API_KEY"     # NAME of the variable holding the key
    system_prompt = "You are terse."
    tools = ["calculator", "clock", "mytools:search"]
    steering_policy = "after_tool"

Secrets never live in the file: an ``api_key`` (or ``[server] api_keys``)
field is refused, ``api_key_env`` names the environment variable instead.
Everything is checked when the file is loaded against one strict schema
(:class:`ServerConfig`, :class:`LimitsConfig`, :class:`AgentConfig`: unknown
keys, providers or tools, values of the wrong type or out of range, missing
key variables) and reported as a :class:`ConfigError` naming the key
(``steerline.toml: server.prot: unknown key (did you mean port?)``), so a
server fails at start-up rather than at the first message.

Environment variables override the file and are checked by the same schema
(an error names the variable): ``STEERLINE_CONFIG`` (the file to read),
``STEERLINE_HOST``, ``STEERLINE_PORT``, ``STEERLINE_STORE``,
``STEERLINE_API_KEYS`` (``token`` or ``tenant:token``, comma-separated),
``STEERLINE_DEFAULT_AGENT``, ``STEERLINE_SERVER__<KEY>`` for any other
``[server]`` key and ``STEERLINE_SERVER__LIMITS__<KEY>`` for a
``[server.limits]`` key. A value is read as its key's type (text for a
string, ``a,b`` or JSON for a list, ``true``/``false`` for a flag, JSON
otherwise). docs/server.md lists every key.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import json
import os
import sys
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_origin
from urllib.parse import urlsplit

import anyio
import pydantic
from pydantic_core import ErrorDetails

from steerline.core.errors import CheckFailure as CheckFailure
from steerline.core.errors import ConfigError as ConfigError
from steerline.core.errors import EndpointCheckError as EndpointCheckError
from steerline.core.errors import InvalidValueError, ModelError
from steerline.demo import DEMO_DESCRIPTION, DEMO_NAME, demo_tool_names
from steerline.models.base import EndpointCheck, KeyRefusedError, Model
from steerline.models.keys import NO_KEY, PROVIDER_APIS, api_key_for, endpoint
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


# -- schema -------------------------------------------------------------------
def _check_origin(value: str) -> str:
    """A CORS origin as browsers send it: ``scheme://host[:port]``, or ``*``."""
    if value == "*":
        return value
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or value.endswith("/"):
        raise ValueError(
            f"{value!r} is not an origin: scheme://host[:port] with no path or trailing "
            "slash (e.g. 'http://localhost:5173'), or '*'"
        )
    if parts.path or parts.query or parts.fragment:
        raise ValueError(f"{value!r} is not an origin: it has a path")
    return value


Origin = Annotated[str, pydantic.AfterValidator(_check_origin)]

_STRICT = pydantic.ConfigDict(extra="forbid", strict=True)
"""Every section: an unknown key is an error, and a value must have the key's
type (no ``"8020"`` for a port, no ``true`` for a number, no string for a list)."""


class LimitsConfig(pydantic.BaseModel):
    """``[server.limits]``: every limit of the server, one key each.

    The defaults are :class:`~steerline.server.settings.ServerSettings`'s
    (a test keeps them equal); ``steerline.server.from_config.LIMIT_SETTINGS``
    says which setting each key sets.
    """

    model_config = _STRICT

    # requests
    max_body_bytes: int = pydantic.Field(1024 * 1024, gt=0)
    """Largest request body (413 beyond it)."""
    header_timeout: float = pydantic.Field(20.0, gt=0)
    """Seconds from a connection's start (or previous response) to a complete request head."""
    body_timeout: float = pydantic.Field(30.0, gt=0)
    """Seconds from a request's head to the end of its body."""
    keep_alive_timeout: float = pydantic.Field(5.0, gt=0)
    """Seconds an idle keep-alive connection stays open."""
    max_drain_bytes: int = pydantic.Field(16 * 1024 * 1024, ge=0)
    """Body read and discarded after a 413, so the client reads the answer."""
    auth_failures_per_minute: int = pydantic.Field(30, gt=0)
    """Failed authentications per client address (token bucket)."""
    # tenants
    requests_per_minute: int = pydantic.Field(600, gt=0)
    """Requests per tenant (token bucket)."""
    max_streams_per_tenant: int = pydantic.Field(32, gt=0)
    """Concurrent streams (SSE, NDJSON, WebSocket) per tenant."""
    max_running_per_tenant: int = pydantic.Field(32, gt=0)
    """Conversations of one tenant running at once."""
    # streams
    ping_interval: float = pydantic.Field(15.0, gt=0)
    """Seconds between heartbeats on an idle stream."""
    retry_ms: int = pydantic.Field(1000, ge=0)
    """The SSE ``retry:`` field (milliseconds)."""
    max_lag_events: int = pydantic.Field(10_000, ge=0)
    """A viewer further behind the log's head is dropped with a resume hint."""
    send_timeout: float = pydantic.Field(10.0, gt=0)
    """A send blocked this long (client not reading) drops the viewer."""
    stream_batch_limit: int = pydantic.Field(512, gt=0)
    """Most events read from the log and written to a stream at once."""
    stream_linger: float = pydantic.Field(0.001, ge=0)
    """Seconds a woken stream waits before reading, to batch a burst (0: none)."""
    # conversations
    auto_continue: bool = True
    """A message accepted while a conversation is idle starts a run."""
    shutdown_grace: float = pydantic.Field(10.0, ge=0)
    """Seconds running tasks get to finish at shutdown."""
    max_live_conversations: int = pydantic.Field(1000, gt=0)
    """Conversations kept loaded in memory (least recently used idle ones unloaded)."""
    idle_unload_after: float = pydantic.Field(600.0, gt=0)
    """Seconds after its last use an idle conversation is unloaded."""
    max_queued_messages: int = pydantic.Field(100, gt=0)
    """Queued messages per conversation, both lanes together."""
    max_message_bytes: int = pydantic.Field(64 * 1024, gt=0)
    """Largest message."""
    dedup_window: int = pydantic.Field(10_000, gt=0)
    """Accepted message ids remembered per conversation for deduplication."""
    # storage
    retention_events: int | None = pydantic.Field(None, gt=0)
    """Keep the newest N events per conversation (unset: all)."""
    retention_age: float | None = pydantic.Field(None, gt=0)
    """Drop events committed more than this many seconds ago (unset: keep all)."""
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    """sqlite durability: NORMAL survives a process crash, FULL a power loss."""
    store_batch_size: int = pydantic.Field(256, gt=0)
    """Most events committed in one transaction."""
    hot_tail_events: int = pydantic.Field(4096, ge=0)
    """Recent events kept in memory per conversation for live viewers."""
    hot_tail_bytes: int = pydantic.Field(256 * 1024, ge=0)
    """... and at most this many bytes of them."""
    store_retry_max_delay: float = pydantic.Field(2.0, gt=0)
    """Longest backoff between retries of a commit that failed."""
    store_close_timeout: float = pydantic.Field(10.0, ge=0)
    """How long shutdown keeps retrying a store that cannot write."""


class ServerConfig(pydantic.BaseModel):
    """``[server]``: where and how the server listens; ``limits`` is ``[server.limits]``."""

    model_config = _STRICT

    host: str = "127.0.0.1"
    port: int = pydantic.Field(8000, ge=0, le=65535)
    store: str = "sqlite:///steerline.db"
    api_keys_env: str | None = None
    """The NAME of an environment variable holding ``token`` / ``tenant:token`` items."""
    metrics_key_env: str | None = None
    """The NAME of an environment variable holding the ``/metrics`` bearer token."""
    insecure: bool = False
    """Allow a non-loopback bind without API keys."""
    cors_origins: list[Origin] = pydantic.Field(default_factory=list)
    """Origins a browser page may call the API from (``["*"]``: any)."""
    limits: LimitsConfig = pydantic.Field(default_factory=LimitsConfig)
    api_keys: dict[str, str] = pydantic.Field(default_factory=dict, exclude=True)
    """Bearer token → tenant, read from ``api_keys_env`` / ``STEERLINE_API_KEYS``
    (never from the file)."""
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

    model_config = _STRICT

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
    _key_source: str | None = pydantic.PrivateAttr(None)
    """The variable the API key was read from (None: no key, the placeholder)."""
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
            self._key_source = self.api_key_env
            return value
        key = api_key_for(self.provider, api_key=None, base_url=self.base_url, env=env)
        if key is not None:
            self._key_source = None if key == NO_KEY else PROVIDER_APIS[self.provider].key_env
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
    def key_source(self) -> str | None:
        """The environment variable the API key is read from (None: none, the
        placeholder ``not-needed`` is sent)."""
        if self._model is None:
            self.resolve()
        return self._key_source

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

    model_config = _STRICT

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
        """The server's ``AgentRegistry`` with every configured agent (``demo``
        included); ``default_agent`` is its default (what a request naming no
        agent gets)."""
        from steerline.service.agents import AgentRegistry

        return AgentRegistry(self.agent_specs(), default=self.default_agent)

    async def aclose(self) -> None:
        """Close every model's HTTP client (call at server shutdown)."""
        for agent in self.agents.values():
            await agent.aclose()


def demo_agent_config() -> AgentConfig:
    """The built-in ``demo`` agent (:mod:`steerline.demo`) as a configured agent."""
    return AgentConfig(
        name=DEMO_NAME,
        provider="demo",
        description=DEMO_DESCRIPTION,
        tools=demo_tool_names(),
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


# -- errors in the file's terms -----------------------------------------------
# The sections of the file, by where they are: what an unknown key is compared
# with (for "did you mean") and what an environment value is parsed as.
_HIDDEN_KEYS = frozenset({"source", "name", "api_keys", "metrics_key"})
"""Fields that are not keys of the file (set by the loader, or secrets)."""


def _section(path: tuple[str | int, ...]) -> type[pydantic.BaseModel] | None:
    if path == ():
        return SteerlineConfig
    if path == ("server",):
        return ServerConfig
    if path == ("server", "limits"):
        return LimitsConfig
    if len(path) == 2 and path[0] == "agents":
        return AgentConfig
    return None


def _unknown_key(path: tuple[str | int, ...], key: str) -> str:
    section = _section(path)
    known = [k for k in (section.model_fields if section else ()) if k not in _HIDDEN_KEYS]
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f"unknown key (did you mean {close[0]}?)" if close else "unknown key"


_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list of strings",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
}
_BOUNDS = {
    "greater_than": (">", "gt"),
    "greater_than_equal": (">=", "ge"),
    "less_than": ("<", "lt"),
    "less_than_equal": ("<=", "le"),
}


def _error_text(error: ErrorDetails) -> str:
    """One validation error in the file's terms (keys, tables, numbers)."""
    kind, loc, got = error["type"], tuple(error["loc"]), error.get("input")
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    if kind == "extra_forbidden":
        return _unknown_key(loc[:-1], str(loc[-1]))
    if kind in _BOUNDS:
        operator, bound = _BOUNDS[kind]
        return f"must be {operator} {ctx[bound]:g}"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {got!r}"
    if kind == "literal_error":
        return f"expected one of {str(ctx['expected']).replace(' or ', ', ')}, got {got!r}"
    if kind == "missing":
        return "required"
    if kind == "value_error" and "error" in ctx:
        return str(ctx["error"])
    return error["msg"]


def _validation_message(
    exc: pydantic.ValidationError, origins: Mapping[tuple[str, ...], str], where: str
) -> str:
    """Every error as ``where: key.path: what``; ``where`` is the environment
    variable the value came from, else the file."""
    lines = []
    for error in exc.errors():
        loc = tuple(str(part) for part in error["loc"])
        variable = _origin(loc, origins)
        prefix = f"{variable}: " if variable else where
        lines.append(f"{prefix}{'.'.join(loc) or 'config'}: {_error_text(error)}")
    return "; ".join(lines)


def _origin(loc: tuple[str, ...], origins: Mapping[tuple[str, ...], str]) -> str | None:
    """The environment variable that set ``loc`` (or a table holding it, or a key in it)."""
    for size in range(len(loc), 0, -1):
        if loc[:size] in origins:
            return origins[loc[:size]]
    return next((var for path, var in origins.items() if path[: len(loc)] == loc), None)


class _EnvError(ConfigError):
    """An error in an environment variable; the message names it (not the file)."""


# -- environment overrides ------------------------------------------------------
def _env_overrides(env: Mapping[str, str]) -> list[tuple[str, tuple[str, ...], str]]:
    """``(variable, key path under [server], raw value)`` of every override, the
    generic ``STEERLINE_SERVER__<KEY>[__<KEY>]`` first, then ``STEERLINE_HOST``,
    ``STEERLINE_PORT`` and ``STEERLINE_STORE`` (which win)."""
    found: list[tuple[str, tuple[str, ...], str]] = []
    prefix = f"{ENV_PREFIX}SERVER__"
    for variable in sorted(env):
        if variable.startswith(prefix) and len(variable) > len(prefix):
            path = tuple(part.lower() for part in variable[len(prefix) :].split("__"))
            found.append((variable, path, env[variable]))
    for name in ("host", "port", "store"):
        variable = f"{ENV_PREFIX}{name.upper()}"
        if env.get(variable):
            found.append((variable, (name,), env[variable]))
    return found


_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def _env_value(section: tuple[str, ...], key: str, raw: str) -> Any:
    """An environment variable's text as the value of ``key``: text for a
    string key, ``a,b`` or a JSON list for a list, true/false/1/0/yes/no/on/off
    for a flag, else JSON when it is valid JSON (numbers, tables), else the text
    (which the schema then refuses, naming the key)."""
    model = _section(section)
    field = model.model_fields.get(key) if model is not None else None
    annotation = field.annotation if field is not None else None
    if field is not None and annotation in (str, str | None):
        return raw
    if get_origin(annotation) is list and not raw.lstrip().startswith("["):
        return [item.strip() for item in raw.split(",") if item.strip()]
    if annotation is bool and raw.strip().lower() in _TRUE | _FALSE:
        return raw.strip().lower() in _TRUE
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _apply_env(server: dict[str, Any], env: Mapping[str, str]) -> dict[tuple[str, ...], str]:
    """Put the environment's overrides into ``server`` (a copy of the file's
    table); return which variable set which key path (for error messages)."""
    origins: dict[tuple[str, ...], str] = {}
    for variable, path, raw in _env_overrides(env):
        if path[0] in ("api_keys", "metrics_key"):
            names = "STEERLINE_API_KEYS" if path[0] == "api_keys" else "STEERLINE_METRICS_KEY"
            raise _EnvError(
                f"{variable}: not a setting; the key itself goes in {names} (or the "
                f"variable named by server.{path[0]}_env)"
            )
        table = server
        for part in path[:-1]:
            child = table.get(part)
            table[part] = child = dict(child) if isinstance(child, Mapping) else {}
            table = child
        key = path[-1]
        value = _env_value(("server", *path[:-1]), key, raw)
        where = ("server", *path)
        if isinstance(value, dict) and isinstance(table.get(key), Mapping):
            table[key] = {**table[key], **value}  # a JSON table adds to the file's
            origins.update({(*where, str(k)): variable for k in value})
        else:
            table[key] = value
            origins[where] = variable
    return origins


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


def _server_table(
    data: object, env: Mapping[str, str]
) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    if not isinstance(data, Mapping):
        raise ConfigError(f"server: expected a table, got {data!r}")
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
    return server, _apply_env(server, env)


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
    origins: dict[tuple[str, ...], str] = {}
    try:
        raw = dict(data)
        if "source" in raw:
            raise ConfigError(f"source: {_unknown_key((), 'source')}")
        server, origins = _server_table(raw.pop("server", {}), env)
        agents_table = raw.pop("agents", {})
        if not isinstance(agents_table, Mapping):
            raise ConfigError(f"agents: expected tables ([agents.NAME]), got {agents_table!r}")
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
        keys_env = config.server.api_keys_env or f"{ENV_PREFIX}API_KEYS"
        keys = env.get(keys_env, "")
        if config.server.api_keys_env and not keys.strip():
            raise ConfigError(f"server.api_keys_env: environment variable {keys_env} is not set")
        config.server.api_keys = _parse_api_keys(keys, keys_env)
        metrics_env = config.server.metrics_key_env or f"{ENV_PREFIX}METRICS_KEY"
        metrics_key = env.get(metrics_env, "").strip()
        if config.server.metrics_key_env and not metrics_key:
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
    except _EnvError as exc:
        raise ConfigError(exc.message) from None
    except ConfigError as exc:
        raise ConfigError(f"{where}{exc.message}") from None
    except pydantic.ValidationError as exc:
        raise ConfigError(_validation_message(exc, origins, where)) from None
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


MODELS_SHOWN = 10
"""How many of an endpoint's models a "not served" message lists."""


def _model_list(models: tuple[str, ...]) -> str:
    shown = ", ".join(models[:MODELS_SHOWN])
    more = len(models) - MODELS_SHOWN
    return f"{shown} and {more} more" if more > 0 else shown


async def check_agent(config: AgentConfig, *, within: float = 10.0) -> str:
    """Reach the agent's endpoint once; return a one-line status or raise
    :class:`EndpointCheckError` (a ``ConfigError``).

    The demo agent needs nothing. For the others this lists the provider's
    models (``GET /models``), which proves the URL, the network path and the
    key, and that the endpoint serves the configured model. The error says
    which it is: unreachable (``cannot use URL: …``, ``no answer from URL``),
    the key refused (HTTP 401/403), or a model the endpoint does not serve
    (with the models it does serve).
    """
    name = config.name
    model = config.resolved_model
    check: Callable[[], Any] | None = getattr(model, "check", None)
    if check is None:
        return f"agent {name!r}: {config.provider} model, nothing to check"
    where = str(getattr(model, "base_url", None) or config.base_url or config.provider)
    where = where.rstrip("/")
    try:
        with anyio.fail_after(within):
            found = await check()
    except TimeoutError:
        raise EndpointCheckError(
            f"agent {name!r}: no answer from {where} within {within:g}s", "unreachable"
        ) from None
    except KeyRefusedError as exc:
        source = config.key_source
        hint = (
            f"the key is read from {source}"
            if source
            else "no key is configured for this endpoint, so a placeholder was sent: "
            "name the variable holding the key with api_key_env"
        )
        raise EndpointCheckError(
            f"agent {name!r}: the endpoint refused the API key (HTTP {exc.status}): "
            f"{where} says {exc.detail!r} ({hint})",
            "key_refused",
        ) from None
    except ModelError as exc:
        raise EndpointCheckError(
            f"agent {name!r}: cannot use {where}: {exc.message}", "unreachable"
        ) from None
    status = f"agent {name!r}: {config.provider} endpoint {where} is reachable"
    if not isinstance(found, EndpointCheck) or found.models is None:
        return status
    if found.serves_model is False:
        raise EndpointCheckError(
            f"agent {name!r}: model {config.model!r} is not served by {where}; "
            f"it serves: {_model_list(found.models)}",
            "model_not_served",
        )
    if found.serves_model:
        return f"{status} and serves {config.model!r}"
    return f"{status} (it lists no models; {config.model!r} could not be checked)"


__all__ = [
    "BUILTIN_TOOLS",
    "AgentConfig",
    "ConfigError",
    "EndpointCheckError",
    "LimitsConfig",
    "ServerConfig",
    "SteerlineConfig",
    "check_agent",
    "config_from_dict",
    "demo_agent_config",
    "load_config",
    "resolve_tool",
]
