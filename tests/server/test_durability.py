"""A real ``steerline serve`` on sqlite, killed with SIGKILL mid-run and restarted (SPEC §4)."""

from __future__ import annotations

import signal
from pathlib import Path

import anyio
import httpx2
import pytest

from tests.server.clients import (
    Envelope,
    client,
    first,
    names,
    open_stream,
    payload,
    read_log,
    text_of,
)
from tests.server.harness import RunningServer, Served

pytestmark = pytest.mark.anyio

LONG = "/delay 50\n" + " ".join(f"word{i}" for i in range(400))


def as_server(served: Served) -> RunningServer:
    return served  # type: ignore[return-value]


async def test_sigkill_mid_run_loses_nothing_acknowledged(
    served: list[Served], tmp_path: Path
) -> None:
    db = tmp_path / "db.sqlite"
    first_process = Served(db, tmp_path)
    served.append(first_process)
    await first_process.wait_ready()
    seen: list[Envelope] = []
    async with client() as http:
        # a finished conversation, then a long run on it
        async with open_stream(
            http, "POST", f"{first_process.api}/agents/stream", json={"query": "before the crash"}
        ) as stream:
            seen += await stream.rest()
        cid = seen[0]["data"]["conversation_id"]
        async with open_stream(
            http,
            "POST",
            f"{first_process.api}/agents/stream",
            json={"query": LONG, "conversation_id": cid},
        ) as stream:
            await stream.take(8)
            queued = await http.post(
                f"{first_process.api}/conversations/{cid}/messages",
                json={"content": "after the crash", "mode": "follow_up", "id": "fu-kept"},
            )
            assert queued.status_code == 202 and queued.json()["queued"] is True
            await stream.until("message_queued")
            await stream.take(3)
            run_id = stream.events[0]["data"]["task_id"]
            first_process.kill()  # SIGKILL: no shutdown, no flush
            # the client may still get what was already on the wire
            try:
                with anyio.fail_after(5):
                    while await stream.next() is not None:
                        pass
            except (httpx2.TransportError, httpx2.StreamError):
                pass
            seen += stream.events
    assert names(seen).count("message_queued") == 1

    second = Served(db, tmp_path)
    served.append(second)
    await second.wait_ready()
    async with client() as http:
        log = await read_log(http, as_server(second), cid)
        by_seq = {e["seq"]: e for e in log}
        for event in seen:
            assert by_seq.get(event["seq"]) == event, f"seq {event['seq']} changed or lost"
        # the interrupted run was ended by recovery, right after what was committed
        assert names(log)[-3:] == ["system_failed", "task_failed", "done"]
        ending = log[-3:]
        assert all(e["data"]["task_id"] == run_id for e in ending)
        assert payload(ending[-1]) == {"stop_reason": "error"}
        assert payload(ending[0])["code"] == "run_lost"
        assert [e["seq"] for e in log] == list(range(1, len(log) + 1)), "no gap, no reuse"
        assert ending[0]["seq"] > seen[-1]["seq"]
        # the queued follow-up is still queued and started nothing
        status = (await http.get(f"{second.api}/conversations/{cid}")).json()
        assert status["status"] == "idle" and status["active_run_id"] is None
        assert [m["id"] for m in status["queue"]["follow_up"]] == ["fu-kept"]
        assert not [e for e in log if payload(e).get("content") == "after the crash"]
        assert names(log).count("task_started") == 2
        # a new prompt works; the kept follow-up joins its run
        async with open_stream(
            http,
            "POST",
            f"{second.api}/agents/stream",
            json={"query": "hello again", "conversation_id": cid},
        ) as stream:
            events = await stream.rest()
        assert names(events)[0] == "task_started"
        assert events[0]["seq"] == log[-1]["seq"] + 1
        assert text_of(events) == "Echo: hello againEcho: after the crash"
        assert first(events, "thread_started", content="after the crash")["data"]["metadata"] == {
            "delivery": "follow_up",
            "message_id": "fu-kept",
        }
        assert payload(events[-1]) == {"stop_reason": "completed"}
        # the dedup window survived the crash: the same id is a duplicate
        again = await http.post(
            f"{second.api}/conversations/{cid}/messages",
            json={"content": "after the crash", "id": "fu-kept"},
        )
        assert again.json()["duplicate"] is True
        # the context survived too: the demo answers from the restored messages
        history = (await http.get(f"{second.api}/conversations/{cid}/history")).json()
        contents = [i.get("content") for i in history["items"] if i["type"] == "user_message"]
        assert contents[0] == "before the crash" and contents[-1] == "after the crash"


async def test_sigterm_ends_streams_with_a_hint_and_finishes_the_run(
    served: list[Served], tmp_path: Path
) -> None:
    """Graceful shutdown: streams end with a resume hint, the run finishes within the
    grace period, and a restart finds it completed (SPEC §4)."""
    db = tmp_path / "db.sqlite"
    first_process = Served(db, tmp_path)
    served.append(first_process)
    await first_process.wait_ready()
    words = " ".join(f"w{i}" for i in range(60))
    async with client() as http:
        async with open_stream(
            http,
            "POST",
            f"{first_process.api}/agents/stream",
            json={"query": f"/delay 20\n{words}"},
        ) as stream:
            await stream.until("message_chunk")
            first_process.process.send_signal(signal.SIGTERM)
            await stream.rest()
        cid = stream.events[0]["data"]["conversation_id"]
        assert stream.comments[-1] == f"resume after={stream.last_seq}"
        assert names(stream.events)[-1] != "done", "the stream ended before the run"
        await anyio.to_thread.run_sync(lambda: first_process.process.wait(30))
        # uvicorn re-raises the signal it handled once shutdown is complete
        assert first_process.process.returncode in (0, -signal.SIGTERM)
        output = (tmp_path / f"serve-{first_process.port}.log").read_text()
        assert "Application shutdown complete" in output
        first_process.kill()

        second = Served(db, tmp_path)
        served.append(second)
        await second.wait_ready()
        log = await read_log(http, as_server(second), cid)
    assert log[: len(stream.events)] == stream.events
    assert names(log)[-2:] == ["task_completed", "done"]
    assert "system_failed" not in names(log)
    assert text_of(log) == f"Echo: {words}"
