"""The agents a server offers, by name; ``demo`` is always there."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from steerline.core.errors import UnknownAgentError as UnknownAgentError
from steerline.demo import DEMO_DESCRIPTION, DEMO_NAME, demo_agent
from steerline.runtime.agent import Agent


@dataclass(frozen=True, slots=True)
class AgentSpec:
    name: str
    build: Callable[[], Agent]
    """A fresh Agent for a new (or reloaded) conversation."""
    description: str = ""
    provider: str = "demo"
    model: str = "demo"


def demo_spec() -> AgentSpec:
    """The built-in ``demo`` agent (:mod:`steerline.demo`)."""
    return AgentSpec(name=DEMO_NAME, build=demo_agent, description=DEMO_DESCRIPTION)


class AgentRegistry:
    """The agents by name, and the ``default`` one: what a request that names
    no agent gets (``default_agent`` in steerline.toml; ``demo`` otherwise)."""

    def __init__(self, specs: Iterable[AgentSpec] = (), *, default: str = "demo") -> None:
        self._specs: dict[str, AgentSpec] = {}
        for spec in (demo_spec(), *specs):
            self._specs[spec.name] = spec
        if default not in self._specs:
            known = ", ".join(sorted(self._specs))
            raise UnknownAgentError(f"no default agent {default!r}; known agents: {known}")
        self.default = default

    def get(self, name: str | None) -> AgentSpec:
        """The named agent; the default one when ``name`` is None or empty."""
        name = name or self.default
        try:
            return self._specs[name]
        except KeyError:
            known = ", ".join(sorted(self._specs))
            raise UnknownAgentError(f"unknown agent {name!r}; known agents: {known}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._specs

    def specs(self) -> list[AgentSpec]:
        return list(self._specs.values())
