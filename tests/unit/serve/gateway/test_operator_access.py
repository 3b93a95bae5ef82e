"""What only operators may see: metrics (tenant names and traffic), and the admin key itself."""

from __future__ import annotations

import socket

import httpx
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from serve.cli import app as cli_app
from serve.gateway.app import create_app
from serve.settings import Settings


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_metrics_need_the_admin_key_or_the_operator_address(tmp_path) -> None:
    port = _free_port()
    settings = Settings(data_dir=tmp_path, metrics_address=f"127.0.0.1:{port}")
    with TestClient(create_app(settings, ["http://vllm"])) as client:
        assert client.get("/metrics").status_code == 401
        admin = (tmp_path / "admin_key").read_text().strip()
        ok = client.get("/metrics", headers={"Authorization": f"Bearer {admin}"})
        assert ok.status_code == 200 and "loraplex_requests" in ok.text
        operator = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert operator.status_code == 200 and "loraplex_requests" in operator.text


def test_a_rotated_admin_key_takes_effect_without_a_restart(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LORAPLEX_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("LORAPLEX_ADMIN_KEY", raising=False)
    with TestClient(create_app(Settings(data_dir=tmp_path), ["http://vllm"])) as client:
        old = (tmp_path / "admin_key").read_text().strip()
        assert (
            client.get("/v1/tenants", headers={"Authorization": f"Bearer {old}"}).status_code == 200
        )
        result = CliRunner().invoke(cli_app, ["admin", "rotate-key"])
        new = result.stdout.strip()
        assert result.exit_code == 0 and new != old and new.startswith("lpx-admin-")
        assert (
            client.get("/v1/tenants", headers={"Authorization": f"Bearer {old}"}).status_code == 401
        )
        assert (
            client.get("/v1/tenants", headers={"Authorization": f"Bearer {new}"}).status_code == 200
        )
    monkeypatch.setenv("LORAPLEX_ADMIN_KEY", "lpx-admin-configured-elsewhere")
    refused = CliRunner().invoke(cli_app, ["admin", "rotate-key"])
    assert refused.exit_code == 2 and "LORAPLEX_ADMIN_KEY" in refused.output
