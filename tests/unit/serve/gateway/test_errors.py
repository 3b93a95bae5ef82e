"""The error table: every kind becomes one status and one OpenAI-style body."""

from __future__ import annotations

import json

import pytest

from adapters.errors import AdapterConflict
from retrieval.errors import RetrievalError
from serve.errors import KINDS, ServiceError, engine_unavailable
from serve.gateway.errors import KIND_HTTP, error_response
from training.errors import TrainingError


def test_every_kind_has_a_status() -> None:
    assert set(KIND_HTTP) == set(KINDS)


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (
            ServiceError("gone", "model_not_found", "not_found", param="model"),
            404,
            "model_not_found",
        ),
        (AdapterConflict("taken", "name_taken"), 409, "name_taken"),
        (RetrievalError("big", "file_too_large", "too_large"), 413, "file_too_large"),
        (TrainingError("bad yaml", "invalid_config"), 400, "invalid_config"),
        (RuntimeError("secret internals"), 500, "internal_error"),
    ],
)
def test_errors_become_openai_bodies(exc, status, code) -> None:
    resp = error_response(exc)
    body = json.loads(resp.body)["error"]
    assert resp.status_code == status and body["code"] == code
    assert set(body) == {"message", "type", "code", "param"}
    assert "secret internals" not in body["message"]


def test_unavailable_says_when_to_retry() -> None:
    resp = error_response(engine_unavailable("down", retry_after=7))
    assert resp.status_code == 503 and resp.headers["retry-after"] == "7"
    assert json.loads(resp.body)["error"]["type"] == "service_unavailable_error"
