"""The documents and tenants endpoints over a real embedded Chroma, without vLLM."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from retrieval.errors import RetrievalError
from serve.admin.tenants import TenantAdmin
from serve.gateway.app import create_app
from serve.gateway.deps import get_retrieval, get_tenant_admin
from serve.settings import Settings

ADMIN = {"Authorization": "Bearer lpx-admin-unit-test-key"}


@pytest.fixture
def gateway(tmp_path, service):
    """The real gateway app, its retrieval service swapped for one with a tiny embedder."""
    app = create_app(
        Settings(data_dir=tmp_path, admin_key="lpx-admin-unit-test-key"), ["http://vllm"]
    )
    with TestClient(app) as client:
        services = app.state.loraplex.services
        admin = TenantAdmin(services.tenants, service, services.adapters)
        app.dependency_overrides[get_retrieval] = lambda: service
        app.dependency_overrides[get_tenant_admin] = lambda: admin
        client.tenants = services.tenants
        yield client


@pytest.fixture
def stored_for(gateway, stored):
    """The chunk texts of the tenant called `name` (kept under its id)."""

    def texts(name: str = "acme", tenant_id: str | None = None) -> set[str]:
        found = gateway.tenants.get(name)
        return stored(tenant_id or (found.id if found else "nobody"))

    return texts


def new_tenant(client, name: str = "acme") -> dict[str, str]:
    key = client.post("/v1/tenants", json={"name": name}, headers=ADMIN).json()["api_key"]
    return {"Authorization": f"Bearer {key}"}


def test_deleting_a_tenant_deletes_its_documents(gateway, stored_for) -> None:
    client = gateway
    auth = new_tenant(client)
    old_id = client.tenants.get("acme").id
    records = {"records": [{"id": "k", "text": "The acme kettle costs 40 euros."}]}
    assert client.post("/v1/documents", json=records, headers=auth).status_code == 201
    assert stored_for(tenant_id=old_id) != set()
    assert client.delete("/v1/tenants/acme", headers=ADMIN).status_code == 200
    assert stored_for(tenant_id=old_id) == set()
    auth = new_tenant(client)  # same name, new tenant: sees nothing of the old one
    found = client.post("/v1/retrieve", json={"query": "kettle", "mode": "bm25"}, headers=auth)
    assert found.status_code == 200 and found.json()["hits"] == []


def test_a_tenant_delete_whose_clean_up_failed_can_be_repeated(
    gateway, service, stored_for, monkeypatch
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
    assert stored_for() != set()  # the tenant is still there, and so are its documents
    assert client.post("/v1/documents", json=records, headers=auth).status_code == 401  # no keys
    monkeypatch.setattr(service, "drop_tenant", real)
    old_id = client.tenants.get("acme").id
    assert client.delete("/v1/tenants/acme", headers=ADMIN).status_code == 200
    assert stored_for(tenant_id=old_id) == set()
    assert client.delete("/v1/tenants/acme", headers=ADMIN).status_code == 404


def test_one_bad_upload_commits_none_of_the_others(gateway, stored_for) -> None:
    client = gateway
    auth = new_tenant(client)
    files = [
        ("file", ("a.md", b"# A\n\nAlpha.", "text/markdown")),
        ("file", ("b.txt", b"Beta.", "text/plain")),
        ("file", ("c.exe", b"MZ", "application/octet-stream")),
    ]
    resp = client.post("/v1/documents", files=files, headers=auth)
    assert resp.status_code == 415 and resp.json()["error"]["code"] == "unsupported_type"
    assert stored_for() == set()
    resp = client.post("/v1/documents", files=files[:2], headers=auth)
    assert resp.status_code == 201 and resp.json()["doc_ids"] == ["a.md", "b.txt"]


def test_heading_only_upload_is_a_400(gateway, stored_for) -> None:
    client = gateway
    auth = new_tenant(client)
    files = {"file": ("title.md", b"# Just a title\n", "text/markdown")}
    resp = client.post("/v1/documents", files=files, headers=auth)
    assert resp.status_code == 400 and "title.md has no text" in resp.json()["error"]["message"]
    assert stored_for() == set()


def test_where_operator_is_a_400(gateway) -> None:
    client = gateway
    auth = new_tenant(client)
    client.post("/v1/documents", json={"records": [{"text": "Kettle."}]}, headers=auth)
    resp = client.post(
        "/v1/retrieve", json={"query": "kettle", "where": {"$or": "x"}}, headers=auth
    )
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_filter"
    assert "'$or' is not a metadata field name" in resp.json()["error"]["message"]
