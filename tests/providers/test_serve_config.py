"""`steerline serve --config` serves an OpenAI-compatible agent through /agents/stream."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import httpx2
import pytest

from tests.server.harness import free_port, wait_healthy

from .stub import JSONReply, OpenAIWire, StreamReply, Stub

pytestmark = pytest.mark.anyio

STEERLINE = str(Path(sys.executable).parent / "steerline")


async def test_serve_config_streams_an_openai_compatible_agent(stub: Stub, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "steerline.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [server]
            port = {port}
            store = "sqlite:///{tmp_path}/db.sqlite"

            [agents.local]
            provider = "openai"
            model = "stub-model"
            base_url = "{stub.base_url}/v1"
            api_key_env = "STUB_LLM_KEY"
            tools = ["calculator"]
            """
        )
    )
    W = OpenAIWire
    stub.push(
        JSONReply(200, {"object": "list", "data": [{"id": "stub-model", "object": "model"}]}),
        StreamReply(
            [
                W.role(),
                W.call_start(0, "c1", "calculator"),
                W.call_args(0, '{"expression": '),
                W.call_args(0, '"6*7"}'),
                W.finish("tool_calls"),
                W.done,
            ]
        ),
        StreamReply(W.text_reply("The answer", " is 42.")),
    )
    env = {**os.environ, "STUB_LLM_KEY": "sk-stub"}
    process = await anyio.open_process(
        [STEERLINE, "serve", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx2.AsyncClient(timeout=10) as client:
            await wait_healthy(url, lambda: process.returncode is None)
            agents = (await client.get(f"{url}/api/v1/agents")).json()["agents"]
            assert {a["name"] for a in agents} == {"demo", "local"}
            events = []
            async with client.stream(
                "POST",
                f"{url}/api/v1/agents/stream",
                json={"query": "what is 6*7?", "agent_name": "local"},
            ) as response:
                assert response.status_code == 200
                async for sse in httpx2.EventSource(response):
                    if sse.data:
                        events.append(json.loads(sse.data))
        names = [e["event"] for e in events]
        assert names[0] == "conversation_started" and names[-1] == "done"
        completed = next(e for e in events if e["event"] == "tool_call_completed")
        assert completed["data"]["payload"]["tool_result"] == '[{"content": "42"}]'
        text = "".join(
            e["data"]["payload"]["content"] for e in events if e["event"] == "message_chunk"
        )
        assert text == "The answer is 42."
        assert events[-1]["data"]["payload"]["stop_reason"] == "completed"
        # the start-up check lists the models, then two chat completions
        assert [r.path for r in stub.requests] == [
            "/v1/models",
            "/v1/chat/completions",
            "/v1/chat/completions",
        ]
        assert stub.requests[1].headers["authorization"] == "Bearer sk-stub"
    finally:
        process.send_signal(signal.SIGTERM)
        with anyio.move_on_after(15) as timer:
            await process.wait()
        if timer.cancelled_caught:
            process.kill()
            await process.wait()
        await process.aclose()


def test_serve_config_with_a_missing_key_fails_at_start_up(tmp_path: Path) -> None:
    config = tmp_path / "steerline.toml"
    config.write_text(
        '[agents.local]\nprovider = "openai"\nmodel = "m"\nbase_url = "http://127.0.0.1:9/v1"\n'
        'api_key_env = "STEERLINE_TEST_MISSING_KEY"\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "STEERLINE_TEST_MISSING_KEY"}
    result = subprocess.run(
        [STEERLINE, "serve", "--config", str(config), "--store", "memory://"],
        env=env,
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert b"STEERLINE_TEST_MISSING_KEY" in result.stderr
    assert b"Traceback" not in result.stderr


async def test_serve_config_warns_at_start_up_about_an_unreachable_endpoint(
    tmp_path: Path,
) -> None:
    port = free_port()
    dead = free_port()  # nothing listens there
    config = tmp_path / "steerline.toml"
    config.write_text(
        f'[server]\nport = {port}\nstore = "memory://"\n'
        f'[agents.far]\nprovider = "openai"\nmodel = "m"\nbase_url = "http://127.0.0.1:{dead}/v1"\n'
    )
    log = tmp_path / "stderr.txt"
    with log.open("wb") as stderr:
        process = await anyio.open_process(
            [STEERLINE, "serve", "--config", str(config)], stdout=subprocess.DEVNULL, stderr=stderr
        )
    try:
        await wait_healthy(f"http://127.0.0.1:{port}", lambda: process.returncode is None)
        text = log.read_text()
        assert f"agent 'far': cannot use http://127.0.0.1:{dead}/v1" in text
        assert "Traceback" not in text
    finally:
        process.send_signal(signal.SIGTERM)
        with anyio.move_on_after(15) as timer:
            await process.wait()
        if timer.cancelled_caught:
            process.kill()
            await process.wait()
        await process.aclose()


def test_chat_refuses_to_start_when_the_endpoint_is_unreachable(tmp_path: Path) -> None:
    dead = free_port()
    config = tmp_path / "steerline.toml"
    config.write_text(
        f'[agents.far]\nprovider = "openai"\nmodel = "m"\nbase_url = "http://127.0.0.1:{dead}/v1"\n'
    )
    result = subprocess.run(
        [STEERLINE, "chat", "--config", str(config), "--agent", "far"],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=30,
    )
    assert result.returncode == 2
    assert f"agent 'far': cannot use http://127.0.0.1:{dead}/v1".encode() in result.stderr
    assert b"Traceback" not in result.stderr
