"""Tools: the ``@tool`` schema, validation, errors, streaming, sequential-only (SPEC §2.3)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal

import anyio
import pytest

from steerline import (
    Agent,
    ScriptedModel,
    ScriptedReply,
    Tool,
    ToolContext,
    ToolError,
    ToolResultMessage,
    tool,
)
from steerline.models import StreamEnd, ToolCallEndPart, ToolCallPart

from .helpers import Gates, Recorder, Runner

pytestmark = pytest.mark.anyio


@tool
def add(a: int, b: int = 2, note: str | None = None) -> int:
    """Add two integers.

    Longer explanation that stays in the description.

    Args:
        a: The first number.
        b (int): The second number.
        note: Ignored.
    """
    return a + b


async def _run_calls(
    tools: list[Tool], calls: list[tuple[str, dict[str, Any]]]
) -> tuple[Agent, Recorder]:
    model = ScriptedModel([ScriptedReply(tool_calls=calls), "after the tools"])
    agent = Agent(model=model, tools=tools)
    rec = Recorder(agent)
    with anyio.fail_after(5):
        result = await agent.prompt("use the tools")
    # the run goes on after any tool failure
    assert result.stop_reason == "completed"
    assert agent.messages[-1].text == "after the tools"
    assert len(model.streams) == 2
    return agent, rec


def _results(agent: Agent) -> list[ToolResultMessage]:
    return [m for m in agent.messages if isinstance(m, ToolResultMessage)]


def test_schema_comes_from_type_hints_and_docstring() -> None:
    spec = add.spec
    assert spec.name == "add"
    assert (
        spec.description == "Add two integers.\n\nLonger explanation that stays in the description."
    )
    params = spec.parameters
    assert params["type"] == "object"
    assert params["required"] == ["a"]
    assert "title" not in params
    props = params["properties"]
    assert props["a"] == {"type": "integer", "description": "The first number."}
    assert props["b"] == {"type": "integer", "default": 2, "description": "The second number."}
    assert props["note"]["anyOf"] == [{"type": "string"}, {"type": "null"}]
    assert props["note"]["description"] == "Ignored."
    assert params["additionalProperties"] is False
    assert isinstance(add, Tool)
    assert not add.sequential


def test_context_parameter_is_left_out_and_names_can_be_overridden() -> None:
    @tool(name="lookup", description="Find a thing.", sequential=True)
    async def whatever(key: Literal["x", "y"], context: ToolContext) -> str:
        """Ignored docstring."""
        return key

    assert whatever.spec.name == "lookup"
    assert whatever.spec.description == "Find a thing."
    assert list(whatever.spec.parameters["properties"]) == ["key"]
    assert whatever.spec.parameters["properties"]["key"]["enum"] == ["x", "y"]
    assert whatever.sequential


def test_validate_coerces_and_names_the_problem() -> None:
    assert add.validate({"a": 1}) == {"a": 1, "b": 2, "note": None}
    with pytest.raises(ToolError, match=r"Invalid arguments for add: a: .*integer"):
        add.validate({"a": "one"})
    with pytest.raises(ToolError, match=r"a: Field required"):
        add.validate({})
    with pytest.raises(ToolError, match=r"extra: Extra inputs are not permitted"):
        add.validate({"a": 1, "extra": True})


async def test_sync_and_async_tools_return_text() -> None:
    @tool
    async def shout(text: str) -> dict[str, str]:
        """Upper-case."""
        return {"loud": text.upper()}

    agent, _rec = await _run_calls(
        [add, shout], [("add", {"a": 3, "b": 4}), ("shout", {"text": "hi"})]
    )
    assert [r.text for r in _results(agent)] == ["7", '{"loud":"HI"}']
    assert not any(r.is_error for r in _results(agent))


async def test_invalid_arguments_give_an_error_result_naming_the_problem() -> None:
    agent, rec = await _run_calls([add], [("add", {"a": "not a number"}), ("add", {"b": 1})])
    first, second = _results(agent)
    assert first.is_error and not first.skipped
    assert first.text.startswith("Invalid arguments for add: a: ")
    assert "integer" in first.text
    assert second.is_error and "a: Field required" in second.text
    ends = rec.of_type("tool_execution_end")
    assert [e.is_error for e in ends] == [True, True]


async def test_arguments_that_are_not_json_give_an_error_result() -> None:
    parts = [
        ToolCallPart(index=0, id="c1", name="add"),
        ToolCallPart(index=0, arguments='{"a": 1,'),
        ToolCallEndPart(0),
        ToolCallPart(index=1, id="c2", name="add"),
        ToolCallPart(index=1, arguments="[1, 2]"),
        StreamEnd("tool_use"),
    ]
    model = ScriptedModel([ScriptedReply(parts=parts), "ok"])
    agent = Agent(model=model, tools=[add])
    result = await agent.prompt("go")
    assert result.stop_reason == "completed"
    first, second = _results(agent)
    assert first.is_error and first.text.startswith(
        "Invalid arguments for add: arguments are not valid JSON"
    )
    assert (
        second.is_error
        and second.text == "Invalid arguments for add: arguments must be a JSON object"
    )


async def test_a_tool_that_raises_gives_an_error_result() -> None:
    @tool
    def explode() -> str:
        """Always fails."""
        raise ValueError("boom")

    @tool
    async def refuse() -> str:
        """Fails on purpose with a message for the model."""
        raise ToolError("not allowed here")

    agent, _ = await _run_calls([explode, refuse], [("explode", {}), ("refuse", {})])
    first, second = _results(agent)
    assert (first.is_error, first.text) == (True, "ValueError: boom")
    assert (second.is_error, second.text) == (True, "not allowed here")


async def test_unknown_tool_gives_an_error_result() -> None:
    agent, rec = await _run_calls([add], [("nope", {"x": 1})])
    (result,) = _results(agent)
    assert result.is_error and result.tool_name == "nope"
    assert result.text == "Tool 'nope' not found."
    (start,) = rec.of_type("tool_execution_start")
    assert (start.tool_name, start.args) == ("nope", {"x": 1})


async def test_async_generator_tool_streams_updates() -> None:
    @tool
    async def count(n: int) -> AsyncIterator[str]:
        """Count up to n."""
        for i in range(1, n + 1):
            yield f"{i}/{n}"

    agent, rec = await _run_calls([count], [("count", {"n": 3})])
    updates = rec.of_type("tool_execution_update")
    assert [u.partial_result for u in updates] == ["1/3", "2/3", "3/3"]
    (start,) = rec.of_type("tool_execution_start")
    assert {u.tool_call_id for u in updates} == {start.tool_call_id}
    assert {u.tool_name for u in updates} == {"count"}
    types = rec.types()
    assert types.index("tool_execution_start") < types.index("tool_execution_update")
    assert types.index("tool_execution_end") > max(
        i for i, t in enumerate(types) if t == "tool_execution_update"
    )
    assert _results(agent)[0].text == "3/3"


async def test_context_update_streams_partial_results_from_a_coroutine() -> None:
    @tool
    async def progress(context: ToolContext) -> str:
        """Reports progress."""
        context.update("half")
        context.update({"done": 1.0})
        return "finished"

    agent, rec = await _run_calls([progress], [("progress", {})])
    assert [u.partial_result for u in rec.of_type("tool_execution_update")] == [
        "half",
        '{"done":1.0}',
    ]
    assert _results(agent)[0].text == "finished"


async def test_sequential_only_tool_never_overlaps_another() -> None:
    gates = Gates()
    tools = [gates.tool("a"), gates.tool("s", sequential=True), gates.tool("b"), gates.tool("c")]
    model = ScriptedModel(
        [ScriptedReply(tool_calls=[("a", {}), ("s", {}), ("b", {}), ("c", {})]), "done"]
    )
    agent = Agent(model=model, tools=tools)  # parallel, cap 8
    async with anyio.create_task_group() as group:
        runner = Runner(agent, group)
        runner.prompt("go")
        await gates.wait_started("a")
        await anyio.wait_all_tasks_blocked()
        assert not gates["s"].started.is_set()  # waits for a to finish
        gates.release("a")
        await gates.wait_started("s")
        await anyio.wait_all_tasks_blocked()
        assert not gates["b"].started.is_set()  # nothing starts alongside s
        gates.release("s")
        await gates.wait_started("b", "c")  # b and c run together again
        assert gates.active == {"b", "c"}
        gates.release("b", "c")
        await runner.wait()
    assert gates.overlaps.get("s", set()) == set()
    assert gates.overlaps["b"] == {"c"}
    assert [m.tool_name for m in _results(agent)] == ["a", "s", "b", "c"]


async def test_sequential_mode_runs_one_tool_at_a_time_in_call_order() -> None:
    gates = Gates()
    model = ScriptedModel([ScriptedReply(tool_calls=[("a", {}), ("b", {}), ("c", {})]), "done"])
    agent = Agent(
        model=model,
        tools=[gates.tool("a"), gates.tool("b"), gates.tool("c")],
        tool_execution="sequential",
    )
    rec = Recorder(agent)
    async with anyio.create_task_group() as group:
        runner = Runner(agent, group)
        runner.prompt("go")
        for name in "abc":
            await gates.wait_started(name)
            await anyio.wait_all_tasks_blocked()
            assert gates.active == {name}
            gates.release(name)
        await runner.wait()
    types = [
        (e.type, e.tool_name)
        for e in rec.events
        if e.type in ("tool_execution_start", "tool_execution_end")
    ]
    assert types == [
        (kind, name) for name in "abc" for kind in ("tool_execution_start", "tool_execution_end")
    ]


async def test_tool_receives_its_call_id_and_name() -> None:
    seen: list[tuple[str, str]] = []

    @tool
    async def who(context: ToolContext) -> str:
        """Reports its call."""
        seen.append((context.tool_call_id, context.tool_name))
        return "me"

    _agent, rec = await _run_calls([who], [("who", {})])
    (start,) = rec.of_type("tool_execution_start")
    assert seen == [(start.tool_call_id, "who")]


async def test_parallel_execution_is_capped_at_eight_by_default() -> None:
    gates = Gates()
    names = [f"t{i}" for i in range(10)]
    model = ScriptedModel([ScriptedReply(tool_calls=[(n, {}) for n in names]), "done"])
    agent = Agent(model=model, tools=[gates.tool(n) for n in names])
    assert agent.max_parallel_tools == 8
    async with anyio.create_task_group() as group:
        runner = Runner(agent, group)
        runner.prompt("go")
        await gates.wait_started(*names[:8])
        await anyio.wait_all_tasks_blocked()
        assert gates.active == set(names[:8])
        gates.release("t3")
        await gates.wait_started("t8")
        await anyio.wait_all_tasks_blocked()
        assert not gates["t9"].started.is_set()
        gates.release()
        result = await runner.wait()
    assert result.stop_reason == "completed"
    assert gates.max_active == 8
    assert [m.tool_name for m in _results(agent)] == names
