"""``GET …/stream`` is served in front of FastAPI: it must answer as the
FastAPI route it stands for (the one the OpenAPI document declares)."""

from __future__ import annotations

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from steerline.core.errors import SteerlineError
from steerline.server.stream_route import parse_flag
from tests.server.clients import client, error_of, new_conversation, open_stream
from tests.server.harness import RunningServer

_BOOL = pydantic.TypeAdapter(bool)
_SPELLINGS = ["1", "0", "true", "False", "YES", "no", "on", "OFF", "t", "F", "y", "N", "maybe"]


def pydantic_flag(value: str) -> bool | None:
    try:
        return _BOOL.validate_python(value)
    except pydantic.ValidationError:
        return None


def our_flag(value: str) -> bool | None:
    try:
        return parse_flag(value, "follow")
    except SteerlineError:
        return None


@given(st.one_of(st.sampled_from(_SPELLINGS), st.text(max_size=6)))
def test_flags_read_as_fastapi_reads_them(value: str) -> None:
    assert our_flag(value) == pydantic_flag(value)


@pytest.mark.anyio
async def test_the_stream_route_answers_as_the_fastapi_route(server: RunningServer) -> None:
    async with client() as http:
        cid = await new_conversation(http, server)
        url = f"{server.api}/conversations/{cid}/stream"
        bad = await http.get(url, params={"follow": "maybe"})
        error_of(bad, 422, "invalid_request")
        assert bad.json()["error"]["message"] == (
            "query.follow: Input should be a valid boolean, unable to interpret input"
        )
        error_of(await http.get(url, params={"after": "x"}), 400, "invalid_event_id")
        error_of(await http.get(url, params={"on_disconnect": "x"}), 400, "invalid_value")
        error_of(await http.get(f"{server.api}/conversations/nope/stream"), 404)
        # HEAD and a trailing slash go on to FastAPI, as before
        assert (await http.head(url)).status_code == 405
        assert (await http.get(f"{url}/")).status_code in (307, 404)
        async with open_stream(http, "GET", f"{url}?follow=YES") as stream:
            first = await stream.next()
        assert first is not None and first["event"] == "conversation_started"
