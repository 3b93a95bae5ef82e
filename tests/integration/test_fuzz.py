"""Hostile input at scale, against a running gateway on the real vLLM.

Schemathesis generates requests for every operation of the gateway's own OpenAPI document (valid
and invalid ones, a bounded number per operation), each sent once with a tenant key and once
with the admin key: no answer may be a 5xx, nor differ from what the document promises (status,
content type, body schema). Then what a generator does not reach: very long and non-ASCII
header values, a body sent slowly, invalid UTF-8 and lone surrogates and control characters in
every text field.

The gateway is one of this module's own (its own data dir), so the tenants and adapters the
fuzzer makes or deletes never reach other tests; it shares the session's vLLM.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from serve.settings import DEFAULT_BASE_MODEL, Settings

# Per operation (chat: three times that); each example is sent twice (tenant key, admin key).
EXAMPLES = 40
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
BODY_TIMEOUT_S = 2.0
BASE_MODEL = DEFAULT_BASE_MODEL
TEXTS = [
    "\x00",
    "a\x00b",
    "\x01\x02\x07\x08\x0b\x0c\x1b\x7f",
    "line\r\nbreak\ttab",
    "\u202e\u200b\ufeff",  # right-to-left override, zero width space, byte order mark
    "\ufffd\U0010ffff",
    "😀" * 50,
    "x" * 20_000,
]


@pytest.fixture(scope="module")
def fuzz_gateway(stack, gateway_on, tmp_path_factory):
    settings_ = Settings.load(
        data_dir=tmp_path_factory.mktemp("fuzz-data"),
        model_dir=stack.model_dir,
        port=stack.free_port(),
        vllm_port=stack.settings.vllm_port,
        admin_key=stack.admin_key,
        vllm_api_key=stack.vllm_key,
        embedding_threads=0,
        demo_tenant="",
        body_timeout_s=BODY_TIMEOUT_S,
    )
    with gateway_on(settings_, stack.vllm) as gw:
        yield gw


@pytest.fixture(scope="module")
def keys(fuzz_gateway) -> dict[str, str]:
    tenant = fuzz_gateway.make_tenant("fuzz")
    resp = httpx.post(
        f"{fuzz_gateway.gateway_url}/v1/documents",
        headers={"Authorization": f"Bearer {tenant}"},
        json={"records": [{"id": "zorblax", "text": "The Zorblax 3000 flies for 47 minutes."}]},
        timeout=120,
    )
    assert resp.status_code == 201, resp.text
    return {"tenant": tenant, "admin": fuzz_gateway.admin_key}


@pytest.fixture(scope="module")
def api_schema(fuzz_gateway):
    return schemathesis.openapi.from_url(f"{fuzz_gateway.gateway_url}/openapi.json")


def bounded(case: Any) -> None:
    """Chat requests that reach vLLM generate a few tokens, not the context window's worth;
    two in three valid ones name a model the tenant may use (a random name is only a 404)."""
    if case.path == "/v1/chat/completions" and isinstance(case.body, dict):
        model = case.body.get("model")
        if isinstance(model, str) and len(model) % 3:
            case.body["model"] = "auto" if len(model) % 3 == 1 else BASE_MODEL
        for field in ("max_tokens", "max_completion_tokens"):
            if not isinstance(case.body.get(field), int) or case.body[field] > 4:
                case.body[field] = 4
        if isinstance(case.body.get("n"), int) and case.body["n"] > 2:
            case.body["n"] = 2


def fuzz(operation: Any, keys: dict[str, str]) -> None:
    """Valid and invalid requests for one operation, each sent with both keys and checked."""
    strategy = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    # Schemathesis' own pytest plugin does not run under pytest 9 (it reads a private attribute
    # of pytest's nodes), so each operation gets a plain Hypothesis test of its strategy.
    @settings(
        max_examples=EXAMPLES * (3 if operation.path == "/v1/chat/completions" else 1),
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],  # no shrinking: the first failure is enough
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        bounded(case)
        for key in (keys["tenant"], keys["admin"]):
            headers = {"Authorization": f"Bearer {key}"}
            case.call_and_validate(headers=headers, checks=CHECKS, timeout=120)

    run()


def test_no_5xx_and_every_answer_as_documented(api_schema, keys) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 20  # every route of the document, chat included
    assert any(op.path == "/v1/chat/completions" and op.body for op in operations)
    failures = []
    for operation in operations:
        try:
            fuzz(operation, keys)
        except Exception as exc:  # noqa: BLE001 - report every operation's failure together
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)


def _chat(text: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": "auto",
        "messages": [{"role": "user", "content": text}],
        "max_tokens": 2,
        "temperature": 0,
        **extra,
    }


def _requests(text: str) -> list[tuple[str, str, dict[str, Any]]]:
    """One request per text field a tenant or an admin can send."""
    return [
        ("tenant", "/v1/chat/completions", _chat(text)),
        ("tenant", "/v1/chat/completions", _chat("hi", user=text, stop=[text])),
        ("tenant", "/v1/chat/completions", _chat("hi", model=text)),
        ("tenant", "/v1/chat/completions", _chat("hi", loraplex={"adapter": text})),
        (
            "tenant",
            "/v1/chat/completions",
            _chat(
                "hi",
                messages=[
                    {"role": "system", "content": text},
                    {"role": "user", "content": [{"type": "text", "text": text}]},
                ],
            ),
        ),
        ("tenant", "/v1/retrieve", {"query": text}),
        ("tenant", "/v1/retrieve", {"query": "zorblax", "where": {"source": text}}),
        (
            "tenant",
            "/v1/documents",
            {"records": [{"id": text[:200] or "x", "text": text, "source": text}]},
        ),
        ("admin", "/v1/tenants", {"name": text, "policy": {}}),
        ("admin", "/v1/adapters/reload", {"name": text}),
        ("admin", "/v1/adapters/fuzzed/promote", {"version": 1, "reason": text}),
    ]


@pytest.mark.parametrize("text", TEXTS, ids=range(len(TEXTS)))
def test_control_characters_in_every_text_field(fuzz_gateway, keys, text) -> None:
    with httpx.Client(base_url=fuzz_gateway.gateway_url, timeout=120) as client:
        for who, path, body in _requests(text):
            resp = client.post(path, json=body, headers={"Authorization": f"Bearer {keys[who]}"})
            assert resp.status_code < 500, (path, body, resp.text)
            if resp.status_code >= 400:
                assert set(resp.json()["error"]) == {"message", "type", "code", "param"}


def test_lone_surrogates_and_invalid_utf8_are_400s_that_say_so(fuzz_gateway, keys) -> None:
    """`"\\ud800"` is valid JSON but not text: every route refuses it by name, before it can
    reach a tokenizer, the database or Chroma."""
    with httpx.Client(base_url=fuzz_gateway.gateway_url, timeout=120) as client:
        for who, path, body in _requests("\ud800 x \udfff"):
            raw = json.dumps(body).encode()  # ensure_ascii: the surrogates as \\u escapes
            headers = {"Authorization": f"Bearer {keys[who]}", "Content-Type": "application/json"}
            resp = client.post(path, content=raw, headers=headers)
            assert resp.status_code == 400, (path, resp.text)
            assert resp.json()["error"]["code"] in ("invalid_text", "invalid_request"), resp.text
            bad = json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")
            resp = client.post(
                path, content=bad.replace(b"\xed\xa0\x80", b"\xff\xfe"), headers=headers
            )
            assert resp.status_code == 400, (path, resp.text)


def test_very_long_and_non_ascii_header_values(fuzz_gateway, keys) -> None:
    """Heads beyond max_header_bytes (and what one read brings in with them) are refused
    before they are buffered whole; anything else gets an ordinary answer."""
    url = fuzz_gateway.gateway_url
    auth = f"Bearer {keys['tenant']}"

    def status(headers: dict[str, str]) -> int | str:
        try:
            return httpx.get(f"{url}/v1/models", headers=headers, timeout=30).status_code
        except httpx.TransportError as exc:  # refused while still sending: connection reset
            return type(exc).__name__

    assert status({"Authorization": "Bearer " + "k" * 10_000}) == 401
    assert status({"Authorization": auth, "X-Long": "v" * 10_000}) == 200
    for huge in (
        {"Authorization": "Bearer " + "k" * 1_000_000},
        {"Authorization": auth, "X-Long": "v" * 1_000_000},
        {"Authorization": auth, **{f"X-Many-{i}": "v" * 100 for i in range(10_000)}},
    ):
        assert status(huge) in (400, "ReadError", "WriteError", "RemoteProtocolError")
    # Bytes no client library will send: latin-1, a control character, an obsolete line fold.
    host, port = fuzz_gateway.settings.host, fuzz_gateway.settings.port
    for value in (b"Bearer lpx-\xff\xfe\x80", b"Bearer lpx-\x01\x7f", b"Bearer lpx-a\r\n b"):
        with socket.create_connection((host, port), timeout=30) as sock:
            sock.sendall(
                b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: " + value + b"\r\n"
                b"Connection: close\r\n\r\n"
            )
            answer = _read_all(sock)
        code = int(answer.split(b" ", 2)[1])
        assert code in (400, 401), answer[:300]
    # The gateway still answers after all of that.
    ok = httpx.get(f"{url}/v1/models", headers={"Authorization": auth}, timeout=30)
    assert ok.status_code == 200


def _read_all(sock: socket.socket) -> bytes:
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer


def test_a_body_sent_slowly_gets_a_408_and_holds_nothing(fuzz_gateway, keys) -> None:
    """A client that sends part of its body and stalls gets a 408 after the body time limit;
    meanwhile and afterwards the gateway answers others at once."""
    host, port = fuzz_gateway.settings.host, fuzz_gateway.settings.port
    body = json.dumps(_chat("hello")).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {keys['tenant']}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    stalled = []
    for _ in range(3):
        sock = socket.create_connection((host, port), timeout=30)
        sock.sendall(head + body[:10])
        stalled.append(sock)
    try:
        health = httpx.get(f"{fuzz_gateway.gateway_url}/healthz", timeout=10)
        assert health.status_code == 200
        for sock in stalled:
            answer = b""
            while b"\r\n\r\n" not in answer:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    finally:
        for sock in stalled:
            sock.close()
    # A body that trickles in, byte by byte, past the limit is cut off the same way.
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(head)
        answer = b""
        started = time.monotonic()
        for byte in body:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            sock.settimeout(0.5)
            with contextlib.suppress(TimeoutError):
                answer += sock.recv(65536)
            if answer or time.monotonic() - started > 10 * BODY_TIMEOUT_S:
                break
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
