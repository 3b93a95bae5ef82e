"""`loraplex up`'s order of work: vLLM first, the gateway made ready while vLLM starts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import uvicorn

import serve.gateway.app as app_module
from serve.cli import up as up_module
from serve.engine.launcher import LaunchError
from serve.services import Services
from serve.settings import Settings


class FakeServer:
    """Stands in for VllmServer: records what `run_stack` asks of it, and when."""

    events: list[str] = []
    fail_start = False

    def __init__(self, settings: Settings, model_dir: Path, log_path: Path) -> None:
        self.settings = settings
        self.device = "cpu"
        self.url = "http://127.0.0.1:1"
        self.log_path = log_path

    def start(self) -> None:
        self.events.append("vllm start")

    def wait_ready(self, timeout_s: float | None = None, progress: bool = False) -> None:
        # What is done by the time vLLM is waited for: the database and the demo tenant.
        done = (self.settings.data_dir / "demo_key").is_file()
        self.events.append(f"vllm wait (demo tenant {'ready' if done else 'missing'})")
        if self.fail_start:
            raise LaunchError("vLLM exited with code 1 while starting")

    def stop(self, grace_s: float = 20.0) -> None:
        self.events.append("vllm stop")


class FakeSupervisor:
    def __init__(self, server: FakeServer, say: Any) -> None:
        self.server = server

    def start(self) -> None:
        self.server.events.append("supervise")

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def stack(tmp_path, monkeypatch) -> dict[str, Any]:
    """run_stack with vLLM, the warm-up and uvicorn replaced; what it built is recorded."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llama"}))
    FakeServer.events = []
    FakeServer.fail_start = False
    seen: dict[str, Any] = {"events": FakeServer.events, "warmed": 0}
    monkeypatch.setattr(up_module.signal, "signal", lambda signum, handler: None)
    monkeypatch.setattr(up_module, "VllmServer", FakeServer)
    monkeypatch.setattr(up_module, "Supervisor", FakeSupervisor)
    monkeypatch.setattr(up_module, "warm_up", lambda: seen.update(warmed=seen["warmed"] + 1))
    real_create_app = app_module.create_app

    def create_app(settings: Settings, urls: list[str], services: Services | None = None) -> Any:
        seen["urls"], seen["services"] = urls, services
        return real_create_app(settings, urls, services=services)

    monkeypatch.setattr(app_module, "create_app", create_app)
    monkeypatch.setattr(
        uvicorn.Server, "run", lambda self, sockets=None: FakeServer.events.append("serve")
    )
    seen["settings"] = Settings(data_dir=tmp_path / "data", model_dir=model, port=1)
    return seen


def test_vllm_starts_first_and_the_gateway_gets_ready_while_it_boots(stack) -> None:
    up_module.run_stack(stack["settings"])
    assert stack["events"] == [
        "vllm start",
        "vllm wait (demo tenant ready)",
        "supervise",
        "serve",
        "vllm stop",
    ]
    assert stack["urls"] == ["http://127.0.0.1:1"]
    assert stack["warmed"] == 1
    # One Services for the whole process: migrated once, then handed to the gateway.
    assert stack["services"].tenants.get("demo") is not None


def test_a_vllm_that_fails_to_start_is_stopped_and_reported(stack) -> None:
    FakeServer.fail_start = True
    with pytest.raises(RuntimeError, match="exited with code 1"):
        up_module.run_stack(stack["settings"])
    assert stack["events"][-1] == "vllm stop"
    assert "serve" not in stack["events"]


def test_the_embedding_models_onnx_export_is_kept_under_data_dir(tmp_path) -> None:
    services = Services(Settings(data_dir=tmp_path))
    assert services.embedder.inner.cache_dir == tmp_path / "cache" / "onnx"
