"""The tool abstraction and the ``@tool`` decorator.

A tool's JSON schema is derived from the function's type hints and docstring
by pydantic, and the same pydantic model validates the arguments before the
call, so the schema the model sees and the check the call gets can never
drift apart.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, get_type_hints, overload, runtime_checkable

import anyio
import pydantic
import pydantic_core

from steerline.models.base import ToolSpec


class ToolError(Exception):
    """Raise from a tool to return an error result with this message."""


@dataclass(slots=True)
class ToolContext:
    """What a running tool gets besides its arguments.

    ``cancelled`` is set when the run wants the tool to stop (abort or an
    ``immediate`` steer); anyio cancellation follows at the tool's next
    ``await``, so most tools need not look at it.
    """

    tool_call_id: str
    tool_name: str
    cancelled: anyio.Event = field(default_factory=anyio.Event)
    on_update: Callable[[str], None] = lambda _partial: None

    def update(self, partial: object) -> None:
        """Stream a partial result (a ``tool_execution_update`` event)."""
        self.on_update(render_result(partial))


@runtime_checkable
class Tool(Protocol):
    """The interface the runtime calls. ``@tool`` builds one from a function."""

    @property
    def spec(self) -> ToolSpec: ...

    @property
    def sequential(self) -> bool:
        """True if this tool must never run alongside another tool."""
        ...

    def validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Return validated arguments or raise ``ToolError`` naming the problem."""
        ...

    async def execute(self, arguments: dict[str, Any], context: ToolContext) -> str:
        """Run the tool on validated arguments; return the result text."""
        ...


def render_result(value: object) -> str:
    """Tool results are text on the wire: strings pass, the rest is JSON."""
    if isinstance(value, str):
        return value
    return pydantic_core.to_json(value).decode()


_ARGS_SECTION = re.compile(r"^\s*(Args|Arguments|Parameters):\s*$", re.MULTILINE)
_ARG_LINE = re.compile(r"^\s+(\w+)(?:\s*\([^)]*\))?:\s*(.+)$")


def _parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into a description and per-argument text."""
    if not doc:
        return "", {}
    doc = inspect.cleandoc(doc)
    match = _ARGS_SECTION.search(doc)
    if match is None:
        return doc.strip(), {}
    description = doc[: match.start()].strip()
    params: dict[str, str] = {}
    for line in doc[match.end() :].splitlines():
        if line.strip() and not line.startswith((" ", "\t")):
            break
        arg = _ARG_LINE.match(line)
        if arg:
            params[arg.group(1)] = arg.group(2).strip()
    return description, params


class FunctionTool:
    """A tool backed by a plain function (sync, async, or async generator).

    An async generator streams partial results: every value it yields is a
    ``tool_execution_update`` and the last one is the result.
    """

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        sequential: bool = False,
    ) -> None:
        self.func = func
        self._sequential = sequential
        doc_description, param_docs = _parse_docstring(func.__doc__)
        hints = get_type_hints(func)
        self._context_param: str | None = None
        fields: dict[str, Any] = {}
        for param in inspect.signature(func).parameters.values():
            annotation = hints.get(param.name, Any)
            if annotation is ToolContext:
                self._context_param = param.name
                continue
            default = ... if param.default is inspect.Parameter.empty else param.default
            fields[param.name] = (
                annotation,
                pydantic.Field(default, description=param_docs.get(param.name)),
            )
        tool_name = name or func.__name__
        self._model: type[pydantic.BaseModel] = pydantic.create_model(
            f"{tool_name}_arguments",
            __config__=pydantic.ConfigDict(extra="forbid"),
            **fields,
        )
        schema = self._model.model_json_schema()
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        self._spec = ToolSpec(
            name=tool_name,
            description=description if description is not None else doc_description,
            parameters=schema,
        )

    @property
    def spec(self) -> ToolSpec:
        return self._spec

    @property
    def name(self) -> str:
        return self._spec.name

    @property
    def sequential(self) -> bool:
        return self._sequential

    def validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        try:
            model = self._model.model_validate(arguments)
        except pydantic.ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'arguments'}: {err['msg']}"
                for err in exc.errors()
            )
            raise ToolError(f"Invalid arguments for {self.name}: {problems}") from None
        return {key: getattr(model, key) for key in type(model).model_fields}

    async def execute(self, arguments: dict[str, Any], context: ToolContext) -> str:
        kwargs = dict(arguments)
        if self._context_param is not None:
            kwargs[self._context_param] = context
        func = self.func
        if inspect.isasyncgenfunction(func):
            last: object = ""
            agen: AsyncIterator[object] = func(**kwargs)
            async for value in agen:
                last = value
                context.update(value)
            return render_result(last)
        if inspect.iscoroutinefunction(func):
            awaitable: Awaitable[object] = func(**kwargs)
            return render_result(await awaitable)
        result = await anyio.to_thread.run_sync(lambda: func(**kwargs), abandon_on_cancel=True)
        return render_result(result)


@overload
def tool(func: Callable[..., Any], /) -> FunctionTool: ...


@overload
def tool(
    *, name: str | None = None, description: str | None = None, sequential: bool = False
) -> Callable[[Callable[..., Any]], FunctionTool]: ...


def tool(
    func: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    sequential: bool = False,
) -> FunctionTool | Callable[[Callable[..., Any]], FunctionTool]:
    """Declare a tool: ``@tool`` or ``@tool(name=..., sequential=True)``.

    A parameter annotated ``ToolContext`` receives the context and is left out
    of the schema.
    """

    def wrap(f: Callable[..., Any]) -> FunctionTool:
        return FunctionTool(f, name=name, description=description, sequential=sequential)

    return wrap(func) if func is not None else wrap
