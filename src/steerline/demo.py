"""The built-in ``demo`` agent, defined once.

The offline :class:`~steerline.models.demo.DemoModel` with the demo tools
(``sleep``, ``clock``, ``calculator``, ``echo``). The package's
``steerline.demo_agent``, the server's always-present ``demo`` agent (service
and configuration) and ``steerline run`` all build it here.

It sits above the runtime, models and tools (it assembles all three) and below
the service and the configuration, which offer it by name.
"""

from __future__ import annotations

from typing import Any

from steerline.models.demo import DemoModel
from steerline.runtime.agent import Agent
from steerline.tools.builtin import demo_tools

DEMO_NAME = "demo"
DEMO_DESCRIPTION = "Offline demo agent: echoes, obeys /call, /think and /delay directives."


def demo_tool_names() -> list[str]:
    """The names of the demo agent's tools (built-in tool names in steerline.toml)."""
    return [tool.spec.name for tool in demo_tools()]


def demo_agent(**overrides: Any) -> Agent:
    """A fresh demo agent; ``overrides`` are :class:`Agent` keyword arguments
    (``steering_policy``, ``system_prompt``, ``tools``, ...)."""
    settings: dict[str, Any] = {"model": DemoModel(), "tools": demo_tools(), **overrides}
    return Agent(**settings)


__all__ = ["DEMO_DESCRIPTION", "DEMO_NAME", "demo_agent", "demo_tool_names"]
