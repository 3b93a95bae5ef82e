"""The foundation end to end: real vLLM, real gateway, the real `openai` client."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def key(stack) -> str:
    return stack.make_tenant("gw-acme")


@pytest.fixture(scope="module")
def client(stack, key) -> openai.OpenAI:
    return stack.openai(key)


def test_greedy_chat_answers_paris(stack, client) -> None:
    resp = client.chat.completions.create(
        model=stack.settings.base_model, messages=QUESTION, temperature=0, max_tokens=24
    )
    assert "Paris" in resp.choices[0].message.content
    assert resp.model == stack.settings.base_model
    assert resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens > 0
    extra = resp.model_extra["loraplex"]
    assert extra["route"] == "prompt" and extra["adapter"] is None


def test_streaming_joins_to_the_same_text(stack, client) -> None:
    kwargs = dict(model=stack.settings.base_model, messages=QUESTION, temperature=0, max_tokens=24)
    whole = client.chat.completions.create(**kwargs).choices[0].message.content
    chunks = list(
        client.chat.completions.create(
            **kwargs, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert all(c.model == stack.settings.base_model for c in chunks)


def test_stop_and_n(stack, client) -> None:
    resp = client.chat.completions.create(
        model=stack.settings.base_model, messages=QUESTION, temperature=0, max_tokens=24,
        stop=["Paris"],
    )  # fmt: skip
    assert "Paris" not in resp.choices[0].message.content
    resp = client.chat.completions.create(
        model=stack.settings.base_model, messages=QUESTION, temperature=1.0, max_tokens=8, n=2,
        seed=1,
    )  # fmt: skip
    assert len(resp.choices) == 2


def test_models_lists_the_base_model(stack, client) -> None:
    ids = [m.id for m in client.models.list().data]
    assert stack.settings.base_model in ids and "auto" in ids


def test_auto_model_answers_with_the_model_that_served(stack, client) -> None:
    resp = client.chat.completions.create(
        model="auto", messages=QUESTION, temperature=0, max_tokens=24
    )
    assert resp.model == stack.settings.base_model and "Paris" in resp.choices[0].message.content
    assert resp.model_extra["loraplex"]["router_version"] == "thresholds"


def _error(resp: httpx.Response, status: int, code: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()["error"]
    assert set(body) >= {"message", "type", "code"} and body["message"]
    if code:
        assert body["code"] == code
    return body


def test_bad_input_gets_openai_errors(stack, key) -> None:
    url = f"{stack.gateway_url}/v1/chat/completions"
    auth = {"Authorization": f"Bearer {key}"}
    good = {"model": stack.settings.base_model, "messages": QUESTION}
    with httpx.Client(timeout=60) as http:
        _error(http.post(url, json=good), 401, "missing_api_key")
        _error(http.post(url, json=good, headers={"Authorization": "Bearer lpx-nope"}), 401)
        _error(http.post(url, json={**good, "model": "no-such"}, headers=auth), 404,
               "model_not_found")  # fmt: skip
        _error(http.post(url, content=b"{not json", headers=auth), 400, "invalid_json")
        _error(http.post(url, json={**good, "messages": []}, headers=auth), 400)
        body = _error(http.post(url, json={**good, "temperature": "hot"}, headers=auth), 400)
        assert body["param"] == "temperature"
        _error(http.post(url, json={**good, "max_tokens": 100000}, headers=auth), 400,
               "context_length_exceeded")  # fmt: skip
        _error(http.post(url, json={"messages": QUESTION}, headers=auth), 400)
        big = {**good, "messages": [{"role": "user", "content": "x" * (2 << 20)}]}
        _error(http.post(url, json=big, headers=auth), 413, "request_too_large")
        _error(http.get(f"{stack.gateway_url}/v1/nothing-here", headers=auth), 404)
        deep = b'{"model": "m", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        _error(http.post(url, content=deep, headers=auth), 400, "invalid_json")
        parts = [{"role": "user", "content": [{"type": "text", "text": 123}]}]
        _error(http.post(url, json={**good, "messages": parts}, headers=auth), 400)
        # A key with non-ASCII bytes is just a wrong key, on tenant and admin endpoints alike.
        odd = {"Authorization": "Bearer lpx-\xe9t\xe9".encode("latin-1")}
        _error(http.post(url, json=good, headers=odd), 401)
        _error(http.get(f"{stack.gateway_url}/v1/tenants", headers=odd), 401)


def test_tenants_cannot_see_each_others_models(stack) -> None:
    restricted = stack.make_tenant("gw-locked", {"allow_base_model": False})
    ids = [m.id for m in stack.openai(restricted).models.list().data]
    assert stack.settings.base_model not in ids
    with pytest.raises(openai.NotFoundError):
        stack.openai(restricted).chat.completions.create(
            model=stack.settings.base_model, messages=QUESTION, max_tokens=4
        )
    # model=auto with no adapter to choose would be the base model: refused as well.
    with pytest.raises(openai.PermissionDeniedError, match="base model"):
        stack.openai(restricted).chat.completions.create(
            model="auto", messages=QUESTION, max_tokens=4
        )


def test_health_ready_and_metrics(stack, client) -> None:
    client.chat.completions.create(model=stack.settings.base_model, messages=QUESTION, max_tokens=4)
    stream = client.chat.completions.create(
        model=stack.settings.base_model, messages=QUESTION, max_tokens=4, stream=True
    )
    assert [c for c in stream]
    with httpx.Client(base_url=stack.gateway_url, timeout=30) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        ready = http.get("/readyz")
        assert ready.status_code == 200 and all(ready.json()["replicas"].values())
        assert http.get("/metrics").status_code == 401  # tenant names are for operators only
        text = http.get("/metrics", headers={"Authorization": f"Bearer {stack.admin_key}"}).text
    assert (
        'loraplex_requests_total{model="SmolLM2-135M-Instruct",route="prompt",status="200",tenant="gw-acme"}'
        in text
    )
    assert "loraplex_request_latency_seconds_bucket" in text
    assert 'loraplex_tokens_total{kind="completion"' in text
    assert "loraplex_time_to_first_token_seconds_count" in text
    # The request log has the same facts, one JSON line per request, and no prompt text.
    log = (stack.settings.logs_dir / "requests.log").read_text()
    lines = [json.loads(line) for line in log.splitlines()]
    mine = [r for r in lines if r["tenant"] == "gw-acme" and r["status"] == 200]
    assert {r["stream"] for r in mine} == {True, False}
    assert all(r["route"] == "prompt" and r["latency_ms"] > 0 for r in mine)
    assert any(r["usage"] and r["usage"]["completion_tokens"] > 0 for r in mine)
    assert "capital of France" not in log


def test_admin_endpoints_need_the_admin_key(stack, key) -> None:
    with httpx.Client(base_url=stack.gateway_url, timeout=30) as http:
        _error(http.get("/v1/tenants", headers={"Authorization": f"Bearer {key}"}), 401)
    with stack.admin() as admin:
        names = [t["name"] for t in admin.get("/v1/tenants").json()["data"]]
        assert "gw-acme" in names
        _error(admin.post("/v1/tenants", json={"name": "Bad Name!"}), 400)
        _error(admin.post("/v1/tenants", json={"name": "gw-acme"}), 409, "tenant_exists")


def test_engine_down_is_a_503_with_retry_after(stack, tmp_path) -> None:
    """A gateway whose only vLLM replica is gone answers 503 + Retry-After, quickly."""
    import time

    from fastapi.testclient import TestClient

    from serve.gateway.app import create_app

    settings = stack.settings.model_copy(update={"data_dir": tmp_path, "database_url": None})
    app = create_app(settings, [f"http://127.0.0.1:{stack.free_port()}"])
    with TestClient(app) as http:
        _, key = app.state.loraplex.services.tenants.create("down")
        auth = {"Authorization": f"Bearer {key}"}
        started = time.monotonic()
        resp = http.post(
            "/v1/chat/completions",
            json={"model": settings.base_model, "messages": QUESTION, "max_tokens": 4},
            headers=auth,
        )
        assert time.monotonic() - started < 30
        _error(resp, 503, "engine_unavailable")
        assert resp.headers["retry-after"]
        ready = http.get("/readyz")
        assert ready.status_code == 503 and ready.headers["retry-after"]
