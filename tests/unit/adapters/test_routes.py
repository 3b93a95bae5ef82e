"""The adapter admin endpoints over a real registry and fake vLLM replicas."""

from __future__ import annotations

import io
import zipfile

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from adapters.errors import AdapterError
from adapters.hotswap import HotSwapper
from serve.errors import ApiError, to_api_error
from serve.routers import adapters
from serve.settings import Settings
from serve.state import AppState
from serve.tenants import TenantService

ADMIN = {"Authorization": "Bearer admin-key"}


@pytest.fixture
def gateway(tmp_path, registry, fake_replicas):
    handler, held, _ = fake_replicas(refuse=set())
    state = AppState(
        settings=Settings(data_dir=tmp_path),
        tenants=TenantService(registry.engine),
        admin_key="admin-key",
        vllm_urls=["http://a"],
        registry=registry,
        hotswap=HotSwapper(["http://a"], httpx.AsyncClient(transport=httpx.MockTransport(handler))),
    )
    app = FastAPI()
    app.state.loraplex = state
    app.include_router(adapters.router)
    for cls in (ApiError, AdapterError):

        @app.exception_handler(cls)
        async def _error(_: Request, exc: Exception):  # the gateway's mapping, as in serve.app
            return to_api_error(exc).response()

    with TestClient(app) as client:
        yield client, held


def test_reload_unloads_what_is_no_longer_prod(gateway, registry, make, tmp_path) -> None:
    """After `loraplex adapters rollback` the gateway is told to reload: the version rolled back
    from must stop being served, not linger in vLLM."""
    client, held = gateway
    registry.register(make(tmp_path / "a1", seed=1), "x")
    registry.register(make(tmp_path / "a2", seed=2), "x")
    assert client.post("/v1/adapters/reload", json={"name": "x"}, headers=ADMIN).status_code == 200
    assert held["a"] == {"x-v2"}
    registry.rollback("x")  # what the CLI does, in another process
    body = client.post("/v1/adapters/reload", json={"name": "x"}, headers=ADMIN).json()
    assert list(body["load"]) == ["x@1"] and list(body["unload"]) == ["x-v2"]
    assert held["a"] == {"x-v1"}
    registry.register(make(tmp_path / "a3", seed=3), "y")
    client.post("/v1/adapters/reload", json={"name": "y"}, headers=ADMIN)
    registry.remove("y")
    body = client.post("/v1/adapters/reload", headers=ADMIN).json()  # every adapter
    assert list(body["unload"]) == ["y-v1"] and held["a"] == {"x-v1"}


def test_a_broken_upload_is_a_400_and_stores_nothing(gateway, registry, tmp_path) -> None:
    client, held = gateway
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(".", b"{}")
    resp = client.post("/v1/adapters", headers=ADMIN, data={"name": "x"},
                       files={"file": ("a.zip", buf.getvalue(), "application/zip")})  # fmt: skip
    assert resp.status_code == 400, resp.text
    assert "file without a name" in resp.json()["error"]["message"]
    assert registry.versions() == [] and held == {}
    assert list((tmp_path / "uploads").iterdir()) == []
