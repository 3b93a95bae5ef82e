"""One real vLLM CPU server and one real gateway per test run, shared by every integration test.

The gateway runs in a thread of the test process (uvicorn), so tests talk to it over real HTTP
and can still look at its live state. vLLM runs as the launcher starts it in production.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from serve.engine.basemodel import is_prepared, pull
from serve.engine.launcher import VllmServer
from serve.settings import Settings

REPO = Path(__file__).resolve().parents[2]
ADMIN_KEY = "lpx-admin-test-key"
VLLM_KEY = "lpx-vllm-integration-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The real SmolLM2-135M-Instruct checkpoint (`make test` prepares it; pulled if missing)."""
    path = REPO / "data" / "models" / "SmolLM2-135M-Instruct"
    if not is_prepared(path):
        pull(path)
    return path


@dataclass
class Stack:
    settings: Settings
    vllm: VllmServer
    app: Any
    server: Any = None
    thread: threading.Thread | None = None
    tenant_keys: dict[str, str] = field(default_factory=dict)

    @property
    def gateway_url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}"

    @property
    def vllm_url(self) -> str:
        return self.vllm.url

    @property
    def vllm_key(self) -> str:
        return VLLM_KEY

    @property
    def vllm_headers(self) -> dict[str, str]:
        """What a direct call to vLLM needs: it answers only the gateway's key."""
        return {"Authorization": f"Bearer {VLLM_KEY}"}

    @property
    def admin_key(self) -> str:
        return ADMIN_KEY

    @property
    def model_dir(self) -> Path:
        return self.settings.resolved_model_dir

    @property
    def state(self) -> Any:
        return self.app.state.loraplex

    def admin(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.gateway_url,
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            timeout=120,
        )

    def make_tenant(self, name: str, policy: dict[str, Any] | None = None) -> str:
        """Create a tenant through the admin API (once per name per run); return its key."""
        if name not in self.tenant_keys:
            with self.admin() as client:
                resp = client.post("/v1/tenants", json={"name": name, "policy": policy or {}})
                resp.raise_for_status()
                self.tenant_keys[name] = resp.json()["api_key"]
        return self.tenant_keys[name]

    @staticmethod
    def free_port() -> int:
        return free_port()

    def openai(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.gateway_url}/v1", api_key=key, max_retries=0)

    def restart_vllm(self) -> None:
        """Stop and start vLLM (same port): it forgets every adapter it held."""
        self.vllm.stop()
        self.vllm.start()
        self.vllm.wait_ready()


def _start_gateway(stack: Stack) -> None:
    import uvicorn

    from serve.gateway.app import server_config

    stack.server = uvicorn.Server(server_config(stack.app, stack.settings, log_level="warning"))
    stack.thread = threading.Thread(target=stack.server.run, daemon=True)
    stack.thread.start()
    deadline = time.monotonic() + 120
    while not stack.server.started:
        if not stack.thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the gateway did not start")
        time.sleep(0.1)


@pytest.fixture(scope="session")
def stack(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Real vLLM (CPU build, float32, LoRA on) plus the real gateway, once per test run."""
    from serve.gateway.app import create_app

    data_dir = tmp_path_factory.mktemp("loraplex-data")
    settings = Settings.load(
        data_dir=data_dir,
        model_dir=model_dir,
        port=free_port(),
        vllm_port=free_port(),
        admin_key=ADMIN_KEY,
        vllm_api_key=VLLM_KEY,
        # The gateway shares this process with training tests: leave torch's threads alone.
        embedding_threads=0,
        demo_tenant="",
        vllm_max_model_len=2048,
        vllm_max_loras=4,
        vllm_max_lora_rank=16,
    )
    vllm = VllmServer(settings, model_dir, data_dir / "logs" / "vllm.log")
    vllm.start()
    try:
        vllm.wait_ready()
        stack = Stack(settings, vllm, create_app(settings, [vllm.url]))
        _start_gateway(stack)
        yield stack
    finally:
        if "stack" in locals() and stack.server is not None:
            stack.server.should_exit = True
            if stack.thread is not None:
                stack.thread.join(timeout=30)
        vllm.stop()


@contextmanager
def running_gateway(settings: Settings, vllm: VllmServer) -> Iterator[Stack]:
    """Another in-process gateway with its own settings (data dir, port) on a running vLLM."""
    from serve.gateway.app import create_app

    stack = Stack(settings, vllm, create_app(settings, [vllm.url]))
    try:
        _start_gateway(stack)
        yield stack
    finally:
        if stack.server is not None:
            stack.server.should_exit = True
            if stack.thread is not None:
                stack.thread.join(timeout=30)


@pytest.fixture(scope="session")
def gateway_on() -> Callable[[Settings, VllmServer], Any]:
    """`with gateway_on(settings, vllm) as gw:` runs a gateway of a test's own (so what a test
    does to tenants and adapters stays out of the shared one) on a running vLLM."""
    return running_gateway


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
