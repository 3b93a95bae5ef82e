"""Bodies that are too slow or not text are refused at the edge, cleanly; a caller's free-text
model name never becomes a metric label."""

from __future__ import annotations

import asyncio
import json

import pytest
from fastapi.testclient import TestClient

from serve.gateway.app import create_app
from serve.gateway.limits import BodyLimitMiddleware, lone_surrogate
from serve.settings import Settings


@pytest.fixture
def client(tmp_path):
    with TestClient(create_app(Settings(data_dir=tmp_path), ["http://vllm"])) as client:
        client.headers["Authorization"] = f"Bearer {(tmp_path / 'admin_key').read_text().strip()}"
        yield client


def test_lone_surrogates_are_found_with_their_path() -> None:
    assert lone_surrogate({"a": [1, {"b": "ok \U0001f600"}]}) is None
    assert lone_surrogate({"a": [1, {"b": "x\ud800"}]}) == "a.1.b"
    assert lone_surrogate({"k\udc00": 1}) == "body"
    assert lone_surrogate("\x00\x1b control characters are text") is None


def test_a_lone_surrogate_or_invalid_utf8_is_a_400_that_names_it(client) -> None:
    raw = b'{"name": "acme", "policy": {"note": "\\ud800"}}'
    resp = client.post("/v1/tenants", content=raw, headers={"Content-Type": "application/json"})
    assert resp.status_code == 400
    assert (
        resp.json()["error"]["code"] == "invalid_text"
        and resp.json()["error"]["param"] == "policy.note"
    )
    resp = client.post(
        "/v1/tenants", content=b'{"name": "acm\xff"}', headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 400 and "not valid UTF-8" in resp.json()["error"]["message"]
    # A surrogate pair is an emoji, and the text check is not fooled by an escaped backslash.
    ok = json.dumps({"name": "acme", "policy": {}, "x": "\U0001f600 \\ud800"}).encode()
    assert (
        client.post(
            "/v1/tenants", content=ok, headers={"Content-Type": "application/json"}
        ).status_code
        == 201
    )


def test_the_chat_route_refuses_them_whatever_the_content_type(client) -> None:
    tenant = client.post("/v1/tenants", json={"name": "acme"}).json()["api_key"]
    raw = b'{"model": "auto", "messages": [{"role": "user", "content": "\\udfff"}]}'
    resp = client.post(
        "/v1/chat/completions",
        content=raw,
        headers={"Authorization": f"Bearer {tenant}", "Content-Type": "text/plain"},
    )
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "messages.0.content"


def test_a_body_that_stalls_is_a_408(tmp_path) -> None:
    async def app(scope, receive, send) -> None:  # never reached
        raise AssertionError("the app must not see a body that never came")

    async def run() -> list[dict]:
        sent: list[dict] = []
        middleware = BodyLimitMiddleware(app, max_body=1024, max_upload=1024, body_timeout_s=0.05)
        parts = iter([{"type": "http.request", "body": b'{"a"', "more_body": True}])

        async def receive() -> dict:
            part = next(parts, None)
            if part is None:
                await asyncio.sleep(3600)  # the client stalls
            return part

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}
        await middleware(scope, receive, send)
        return sent

    sent = asyncio.run(run())
    assert sent[0]["status"] == 408
    assert json.loads(sent[1]["body"])["error"]["code"] == "request_timeout"


def test_a_streaming_response_may_wait_for_the_disconnect_past_the_body_limit(tmp_path) -> None:
    """Only the body has a deadline: an SSE response listens for the client's disconnect for
    as long as it streams."""

    async def app(scope, receive, send) -> None:
        assert (await receive())["body"] == b"{}"
        assert (await receive())["type"] == "http.disconnect"  # after the deadline has passed
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def run() -> list[dict]:
        sent: list[dict] = []
        middleware = BodyLimitMiddleware(app, max_body=1024, max_upload=1024, body_timeout_s=0.05)
        parts = [{"type": "http.request", "body": b"{}", "more_body": False}]

        async def receive() -> dict:
            if parts:
                return parts.pop(0)
            await asyncio.sleep(0.2)
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/x", "headers": []}
        await middleware(scope, receive, send)
        return sent

    assert asyncio.run(run())[0]["status"] == 200


def test_a_model_name_the_router_refused_is_never_a_metric_label(client) -> None:
    tenant = client.post("/v1/tenants", json={"name": "acme"}).json()["api_key"]
    headers = {"Authorization": f"Bearer {tenant}"}
    for i in range(3):
        body = {
            "model": f"attacker-{i}",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 10**6,
        }
        assert client.post("/v1/chat/completions", json=body, headers=headers).status_code == 400
    metrics = client.get("/metrics").text
    assert "attacker" not in metrics
    assert 'model="_unknown"' in metrics
