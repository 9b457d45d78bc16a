"""The demo tools of SPEC §2.8: ``sleep``, ``clock``, ``calculator``, ``echo``."""

from __future__ import annotations

import datetime

import anyio

from steerline.tools.base import FunctionTool, ToolContext, ToolError, tool
from steerline.tools.calculator import CalculatorError, evaluate

MAX_SLEEP_SECONDS = 3600.0


@tool
async def sleep(seconds: float, context: ToolContext) -> str:
    """Wait for a number of seconds (cancellable), reporting progress every second.

    Args:
        seconds: How long to wait, at most one hour.
    """
    if not 0 <= seconds <= MAX_SLEEP_SECONDS:
        raise ToolError(f"seconds must be between 0 and {MAX_SLEEP_SECONDS:g}")
    remaining = seconds
    while remaining > 0:
        step = min(1.0, remaining)
        await anyio.sleep(step)
        remaining -= step
        if remaining > 0:
            context.update(f"slept {seconds - remaining:g}s of {seconds:g}s")
    return f"slept {seconds:g}s"


@tool
def clock() -> str:
    """Return the current UTC time in ISO 8601."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression (+ - * / // % **, parentheses, sqrt, ...).

    Args:
        expression: The expression, for example "2 * (3 + 4)".
    """
    try:
        value = evaluate(expression)
    except CalculatorError as exc:
        raise ToolError(str(exc)) from None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


@tool
async def echo(text: str) -> str:
    """Return the text unchanged.

    Args:
        text: What to echo.
    """
    return text


def demo_tools() -> list[FunctionTool]:
    """The tools the built-in ``demo`` agent has."""
    return [sleep, clock, calculator, echo]
