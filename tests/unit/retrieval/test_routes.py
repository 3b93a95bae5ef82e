"""The documents and tenants endpoints over a real embedded Chroma, without vLLM."""

from __future__ import annotations

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from retrieval.errors import RetrievalError
from serve.db import make_engine
from serve.errors import ApiError, to_api_error
from serve.routers import documents, tenants
from serve.settings import Settings
from serve.state import AppState
from serve.tenants import TenantError, TenantService

ADMIN = {"Authorization": "Bearer admin-key"}


@pytest.fixture
def gateway(tmp_path, service):
    state = AppState(
        settings=Settings(data_dir=tmp_path),
        tenants=TenantService(make_engine(f"sqlite:///{tmp_path / 't.db'}")),
        admin_key="admin-key",
        vllm_urls=[],
        retrieval=service,
    )
    app = FastAPI()
    app.state.loraplex = state
    app.include_router(documents.router)
    app.include_router(tenants.router)
    for cls in (ApiError, RetrievalError, TenantError):

        @app.exception_handler(cls)
        async def _error(_: Request, exc: Exception):  # the gateway's mapping, as in serve.app
            return to_api_error(exc).response()

    with TestClient(app) as client:
        yield client


def new_tenant(client, name: str = "acme") -> dict[str, str]:
    key = client.post("/v1/tenants", json={"name": name}, headers=ADMIN).json()["api_key"]
    return {"Authorization": f"Bearer {key}"}


def test_deleting_a_tenant_deletes_its_documents(gateway, stored) -> None:
    client = gateway
    auth = new_tenant(client)
    records = {"records": [{"id": "k", "text": "The acme kettle costs 40 euros."}]}
    assert client.post("/v1/documents", json=records, headers=auth).status_code == 201
    assert client.delete("/v1/tenants/acme", headers=ADMIN).status_code == 200
    assert stored() == set()
    auth = new_tenant(client)  # same name, new tenant: sees nothing of the old one
    found = client.post("/v1/retrieve", json={"query": "kettle", "mode": "bm25"}, headers=auth)
    assert found.status_code == 200 and found.json()["hits"] == []


def test_a_tenant_delete_whose_clean_up_failed_can_be_repeated(
    gateway, service, stored, monkeypatch
) -> None:
    client = gateway
    auth = new_tenant(client)
    records = {"records": [{"id": "k", "text": "The acme kettle costs 40 euros."}]}
    assert client.post("/v1/documents", json=records, headers=auth).status_code == 201
    real = service.drop_tenant

    def broken(name: str) -> bool:
        raise RetrievalError("chroma is down", "retrieval_unavailable", "unavailable")

    monkeypatch.setattr(service, "drop_tenant", broken)
    assert client.delete("/v1/tenants/acme", headers=ADMIN).status_code == 503
    assert stored() != set()  # the row is gone, the documents are not
    monkeypatch.setattr(service, "drop_tenant", real)
    assert client.delete("/v1/tenants/acme", headers=ADMIN).status_code == 200
    assert stored() == set()
    assert client.delete("/v1/tenants/acme", headers=ADMIN).status_code == 404


def test_one_bad_upload_commits_none_of_the_others(gateway, stored) -> None:
    client = gateway
    auth = new_tenant(client)
    files = [
        ("file", ("a.md", b"# A\n\nAlpha.", "text/markdown")),
        ("file", ("b.txt", b"Beta.", "text/plain")),
        ("file", ("c.exe", b"MZ", "application/octet-stream")),
    ]
    resp = client.post("/v1/documents", files=files, headers=auth)
    assert resp.status_code == 415 and resp.json()["error"]["code"] == "unsupported_type"
    assert stored() == set()
    resp = client.post("/v1/documents", files=files[:2], headers=auth)
    assert resp.status_code == 201 and resp.json()["doc_ids"] == ["a.md", "b.txt"]


def test_heading_only_upload_is_a_400(gateway, stored) -> None:
    client = gateway
    auth = new_tenant(client)
    files = {"file": ("title.md", b"# Just a title\n", "text/markdown")}
    resp = client.post("/v1/documents", files=files, headers=auth)
    assert resp.status_code == 400 and "title.md has no text" in resp.json()["error"]["message"]
    assert stored() == set()


def test_where_operator_is_a_400(gateway) -> None:
    client = gateway
    auth = new_tenant(client)
    client.post("/v1/documents", json={"records": [{"text": "Kettle."}]}, headers=auth)
    resp = client.post(
        "/v1/retrieve", json={"query": "kettle", "where": {"$or": "x"}}, headers=auth
    )
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_filter"
    assert "'$or' is not a metadata field name" in resp.json()["error"]["message"]
