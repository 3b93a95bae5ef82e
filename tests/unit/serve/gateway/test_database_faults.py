"""A busy or unreachable database is a 503 the caller can retry, never a 500."""

from __future__ import annotations

import sqlite3

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from serve.database import retrying
from serve.errors import ServiceError
from serve.gateway.app import create_app
from serve.settings import Settings


def test_reads_are_retried_then_reported_as_unavailable() -> None:
    calls = []

    def flaky(x):
        calls.append(x)
        if len(calls) < 3:
            raise OperationalError("SELECT", {}, sqlite3.OperationalError("database is locked"))
        return x * 2

    assert retrying(flaky, 21, delay_s=0.01) == 42 and len(calls) == 3

    def down():
        raise OperationalError("SELECT", {}, sqlite3.OperationalError("unable to open database"))

    with pytest.raises(ServiceError) as exc:
        retrying(down, delay_s=0.01)
    assert exc.value.kind == "unavailable" and "unable to open database" in exc.value.message


def test_a_locked_database_answers_503_with_retry_after(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path, database_busy_timeout_s=0.2)
    app = create_app(settings, ["http://vllm"])
    with TestClient(app) as client:
        admin = {"Authorization": f"Bearer {(tmp_path / 'admin_key').read_text().strip()}"}
        # Another process (the CLI, say) holds the write lock, and keeps it.
        holder = sqlite3.connect(tmp_path / "loraplex.db", timeout=1)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            resp = client.post("/v1/tenants", json={"name": "acme"}, headers=admin)
            assert resp.status_code == 503, resp.text
            assert resp.headers["retry-after"] == "2"
            assert resp.json()["error"]["code"] == "database_unavailable"
        finally:
            holder.rollback()
            holder.close()
        assert client.post("/v1/tenants", json={"name": "acme"}, headers=admin).status_code == 201
