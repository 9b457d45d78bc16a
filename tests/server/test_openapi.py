"""The OpenAPI document is true: schemathesis against a real server, over the live document.

Every operation of ``/openapi.json`` gets generated requests, valid and
invalid (a bounded number each, so the run stays fast), and every answer is
checked against the document: no 5xx, a documented status, a documented
content type, a body that matches its schema (errors are
``{"error": {"code", "message"}}``), required headers present, auth that is
not ignored. The WebSocket route is not in the document; a stream that would
never end (``?follow=true``) is turned into one that does.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from steerline.core.text import MAX_ID_LENGTH
from steerline.server.app import _CONVERSATION_ID, create_app
from steerline.server.openapi import CONVERSATION_ID_PATTERN, OPERATIONS
from steerline.server.settings import ServerSettings, TenantLimits
from steerline.service.conversation import SUBMIT_MODES
from steerline.service.service import ServiceLimits
from tests.server.harness import RunningServer, problems, server_log, start_server

KEY = "schemathesis-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
TRUE = {"1", "true", "t", "on", "y", "yes"}
"""What FastAPI reads as ``true`` in a boolean query parameter."""
TIMEOUT = 10.0
CONVERSATION = "/api/v1/conversations/{conversation_id}"
EXAMPLES = 25
"""Generated requests per operation and mode."""
DOCUMENTED = [
    (method, path)
    for path, item in create_app(ServerSettings(store="memory://")).openapi()["paths"].items()
    for method in item
]
"""Every operation of the document (the WebSocket route is not one)."""
WITHOUT_INPUT = {("get", "/healthz"), ("get", "/metrics"), ("get", "/api/v1/agents")}
"""Operations without parameters or body: nothing to make invalid."""


@pytest.fixture(scope="module")
def live() -> Iterator[tuple[RunningServer, list[str]]]:
    """A server with an API key and limits out of the way, and conversations to poke at."""
    running = start_server(
        ServerSettings(
            store="memory://",
            api_keys={KEY: "fuzz"},
            auth_failures_per_minute=1_000_000,  # invalid keys are tried: 401, not 429
            tenant_limits=TenantLimits(requests_per_minute=1_000_000, max_streams=1000),
            service=ServiceLimits(max_running_per_tenant=1000),
        )
    )
    try:
        ids = []
        with httpx2.Client(timeout=TIMEOUT, headers=AUTH) as http:
            for _ in range(4):
                response = http.post(f"{running.api}/agents/stream", json={"query": "hello"})
                assert response.status_code == 200, response.text
                ids.append(re.findall(r'"conversation_id":"([^"]+)"', response.text)[0])
        yield running, ids
    finally:
        running.stop()


@pytest.fixture(scope="module")
def api_schema(live: tuple[RunningServer, list[str]]) -> schemathesis.BaseSchema:
    """The live document, as the server serves it."""
    running, _ = live
    config = schemathesis.Config.from_dict(
        {
            "auth": {"openapi": {"bearer": {"bearer": KEY}}},
            "request-timeout": TIMEOUT,
            "checks": {
                # a schema-valid request may still name what is not there: an event
                # after the log's end, the id "." (documented 400s, like 404 and 409)
                "positive_data_acceptance": {
                    "expected-statuses": ["2XX", 400, 401, 404, 409, 429, "5XX"]
                },
            },
        }
    )
    return schemathesis.openapi.from_url(f"{running.url}/openapi.json", config=config)


@pytest.mark.parametrize(
    ("method", "path", "mode"),
    [
        pytest.param(method, path, mode, id=f"{method.upper()} {path} {mode.value}")
        for method, path in DOCUMENTED
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        if mode is GenerationMode.POSITIVE or (method, path) not in WITHOUT_INPUT
    ],
)
def test_operation_conforms_to_openapi(
    api_schema: schemathesis.BaseSchema,
    live: tuple[RunningServer, list[str]],
    method: str,
    path: str,
    mode: GenerationMode,
) -> None:
    running, ids = live
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode), known=st.booleans())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
    )
    def check(case: schemathesis.Case, known: bool) -> None:
        query: dict[str, Any] = case.query if case.query is not None else {}
        if str(query.get("follow", "")).lower() in TRUE:
            query["follow"] = "false"  # a stream that never ends would only time out
        path_parameters = case.path_parameters or {}
        conversation_id = path_parameters.get("conversation_id")
        if (
            known
            and isinstance(conversation_id, str)
            and _CONVERSATION_ID.fullmatch(conversation_id)
        ):
            # valid either way: reach existing conversations too, not only 404s
            # (the last one is the one to delete)
            if (method, path) == ("delete", CONVERSATION):
                path_parameters["conversation_id"] = ids[-1]
            else:
                path_parameters["conversation_id"] = ids[len(conversation_id) % (len(ids) - 1)]
        case.call_and_validate(base_url=running.url, timeout=TIMEOUT)

    with server_log() as records:
        check()
    assert problems(records) == []


# -- the document says what the tests above cannot reach -------------------------------
STREAMS = [("post", "/api/v1/agents/stream"), ("get", f"{CONVERSATION}/stream")]


def _document(settings: ServerSettings) -> dict[str, Any]:
    document: dict[str, Any] = create_app(settings).openapi()
    return document


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield method, path, operation


def test_streams_answer_sse_or_ndjson_never_json() -> None:
    document = _document(ServerSettings(store="memory://"))
    for method, path in STREAMS:
        operation = document["paths"][path][method]
        assert set(operation["responses"]["200"]["content"]) == {
            "text/event-stream",
            "application/x-ndjson",
        }
        parameters = {(p["in"], p["name"]): p for p in operation["parameters"]}
        for where, name in (("header", "Last-Event-ID"), ("query", "after")):
            assert parameters[where, name]["schema"]["pattern"] == "^[0-9]{1,19}$"
        assert parameters["query", "on_disconnect"]["schema"]["enum"] == ["continue", "cancel"]


def test_errors_are_our_error_body() -> None:
    document = _document(ServerSettings(store="memory://", api_keys={"k": "t"}))
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    error = schemas["ErrorBody"]
    assert error["required"] == ["error"] and error["additionalProperties"] is False
    assert schemas["ErrorDetail"]["required"] == ["code", "message"]
    for method, path, operation in _operations(document):
        for status, response in operation["responses"].items():
            if status.startswith("2") or path == "/healthz":
                continue
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, status)
        if path.startswith("/api/"):
            assert "401" in operation["responses"], (method, path)
            if "requestBody" in operation or any(
                p["in"] == "query" for p in operation.get("parameters", [])
            ):
                # FastAPI's validation errors are our 422 (400 for unreadable JSON)
                assert "422" in operation["responses"], (method, path)


def test_bearer_auth_is_a_security_scheme() -> None:
    keyed = _document(ServerSettings(store="memory://", api_keys={"k": "t"}))
    assert keyed["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": keyed["components"]["securitySchemes"]["bearer"]["description"],
    }
    open_ = _document(ServerSettings(store="memory://"))
    for method, path, operation in _operations(keyed):
        if path.startswith("/api/"):
            assert operation["security"] == [{"bearer": []}, {"access_token": []}], path
        else:
            assert "security" not in operation, (method, path)
    for _, path, operation in _operations(open_):
        if path.startswith("/api/"):
            assert operation["security"][0] == {}, path  # without keys nothing is checked
            assert "401" not in operation["responses"], path


def test_modes_and_ids_are_constrained_as_the_server_checks_them() -> None:
    document = _document(ServerSettings(store="memory://"))
    schemas = document["components"]["schemas"]
    agent_stream = schemas["AgentStreamRequest"]["properties"]
    assert agent_stream["mode"]["enum"] == list(SUBMIT_MODES)
    assert set(SUBMIT_MODES) == {"auto", "steer", "follow_up", "interrupt", "reject"}
    assert schemas["MessageRequest"]["properties"]["mode"]["enum"] == [
        "steer",
        "follow_up",
        "interrupt",
    ]
    assert agent_stream["conversation_id"]["pattern"] == "^$|" + CONVERSATION_ID_PATTERN
    assert agent_stream["message_id"]["anyOf"][0]["maxLength"] == MAX_ID_LENGTH
    assert schemas["MessageRequest"]["properties"]["id"]["anyOf"][0]["maxLength"] == MAX_ID_LENGTH
    for method, path, operation in _operations(document):
        for parameter in operation.get("parameters", []):
            if parameter["name"] == "conversation_id":
                assert parameter["schema"]["pattern"] == CONVERSATION_ID_PATTERN, (method, path)
                assert parameter["schema"]["maxLength"] == 128


def test_ndjson_stream_is_documented(live: tuple[RunningServer, list[str]]) -> None:
    running, ids = live
    with httpx2.Client(timeout=TIMEOUT, headers=AUTH) as http:
        document = http.get(f"{running.url}/openapi.json").json()
        for method, path in STREAMS:
            url = f"{running.url}{path.replace('{conversation_id}', ids[0])}"
            body = {"query": "hi", "conversation_id": ids[0]} if method == "post" else None
            response = http.request(
                method.upper(), url, json=body, headers={"Accept": "application/x-ndjson"}
            )
            assert response.status_code == 200, response.text
            media_type = response.headers["content-type"].split(";")[0]
            assert media_type in document["paths"][path][method]["responses"]["200"]["content"]


def test_every_operation_is_declared() -> None:
    """Each route's real answers are declared in ``steerline.server.openapi.OPERATIONS``."""
    document = _document(ServerSettings(store="memory://"))
    undeclared = [(m, p) for m, p, op in _operations(document) if op.get("x-undeclared")]
    assert undeclared == []
    assert set(OPERATIONS) == set(DOCUMENTED)


def test_conversation_id_pattern_is_the_servers() -> None:
    assert _CONVERSATION_ID.pattern == CONVERSATION_ID_PATTERN
