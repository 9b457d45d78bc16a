"""Tools: functions the model may call, with validated arguments."""

from steerline.tools.base import FunctionTool, Tool, ToolContext, ToolError, tool
from steerline.tools.builtin import calculator, clock, demo_tools, echo, sleep

__all__ = [
    "FunctionTool",
    "Tool",
    "ToolContext",
    "ToolError",
    "calculator",
    "clock",
    "demo_tools",
    "echo",
    "sleep",
    "tool",
]
