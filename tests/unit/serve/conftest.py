"""A real gateway app with fakes only at its edges, for the production loop's tests: vLLM's
chat API (FakeEngine), vLLM's runtime LoRA API (FakeReplicas) and a bag-of-words embedder."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from adapters.hotswap import HotSwapper
from serve.admin.serving import ReplicaSync
from serve.errors import engine_unavailable
from serve.routing.caches import CachedEmbedder
from serve.services import Services
from serve.settings import Settings

ADMIN_KEY = "lpx-admin-unit-test-key"
WORDS = [
    "json",
    "extract",
    "person",
    "weather",
    "rain",
    "capital",
    "france",
    "kettle",
    "price",
    "order",
    "colour",
    "zorblax",
]


class BagOfWords:
    """Unit vectors over a fixed vocabulary."""

    name = "bow"
    dim = len(WORDS)

    def embed(self, texts: list[str]) -> list[list[float]]:
        out = []
        for t in texts:
            v = [float(w in t.lower()) for w in WORDS] + [0.05]  # never all zero
            n = sum(x * x for x in v) ** 0.5
            out.append([x / n for x in v])
        return out


class BowServices(Services):
    """The real services, with the bag-of-words embedder instead of MiniLM."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.__dict__["embedder"] = CachedEmbedder(BagOfWords())


@dataclass
class FakeEngine:
    """vLLM's chat API: answers `answer`, fails for served names in `fail`."""

    answer: str = "Paris is the capital."
    fail: set[str] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)

    async def chat(self, served: str, messages: list[dict], params: dict) -> dict[str, Any]:
        self.calls.append(served)
        if served in self.fail:
            raise engine_unavailable("injected failure")
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": 1,
            "model": served,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": self.answer},
                }
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9},
        }

    async def chat_stream(self, served: str, messages: list[dict], params: dict) -> Any:
        self.calls.append(served)
        if served in self.fail:
            raise engine_unavailable("injected failure")
        cid = f"chatcmpl-{uuid.uuid4().hex}"

        async def chunks() -> AsyncIterator[dict[str, Any]]:
            for word in self.answer.split(" "):
                yield {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": 1,
                    "model": served,
                    "choices": [{"index": 0, "delta": {"content": word + " "}}],
                }
            yield {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": 1,
                "model": served,
                "choices": [],
                "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9},
            }

        return chunks()

    async def close(self) -> None:
        return None


@dataclass
class FakeReplicas:
    """vLLM's runtime LoRA API on one replica; served names in `broken` fail to load."""

    broken: set[str] = field(default_factory=set)
    held: set[str] = field(default_factory=set)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            cards = [{"id": n, "parent": "tiny-base"} for n in sorted(self.held)]
            return httpx.Response(200, json={"data": cards})
        name = json.loads(request.content)["lora_name"]
        if request.url.path == "/v1/load_lora_adapter":
            if name in self.broken:
                return httpx.Response(400, text="invalid adapter weights")
            self.held.add(name)
            return httpx.Response(200, text="ok")
        self.held.discard(name)
        return httpx.Response(200, text="ok")


@dataclass
class LoopGateway:
    client: TestClient
    app: Any
    engine: FakeEngine
    replicas: FakeReplicas
    admin: dict[str, str]

    @property
    def state(self) -> Any:
        return self.app.state.loraplex

    @property
    def services(self) -> Services:
        return self.state.services

    def tenant(self, name: str, policy: dict[str, Any] | None = None) -> dict[str, str]:
        resp = self.client.post(
            "/v1/tenants", json={"name": name, "policy": policy or {}}, headers=self.admin
        )
        assert resp.status_code == 201, resp.text
        return {"Authorization": f"Bearer {resp.json()['api_key']}"}

    def chat(self, auth: dict[str, str], content: str, model: str = "tiny-base", **body: Any):
        payload = {"model": model, "messages": [{"role": "user", "content": content}], **body}
        return self.client.post("/v1/chat/completions", json=payload, headers=auth)

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run an async function in the app's event loop."""
        portal = self.client.portal
        assert portal is not None
        return portal.call(lambda: fn(*args, **kwargs))

    def tick(self) -> dict[str, Any]:
        """One round of the production loop (write records, gauges, canaries)."""
        return self.call(self.state.loop.tick)

    def register(self, src: Any, name: str, owner: str, **options: Any) -> Any:
        return self.call(self.services.adapters.register, src, name, owner=owner, **options)


@pytest.fixture
def loop_gateway(tmp_path, base_dir, monkeypatch) -> Iterator[LoopGateway]:
    """The gateway with a fake vLLM; its production loop ticks only when a test says so."""
    import serve.gateway.app as app_module

    monkeypatch.setattr(app_module, "Services", BowServices)
    settings = Settings(
        data_dir=tmp_path / "data",
        admin_key=ADMIN_KEY,
        base_model="tiny-base",
        model_dir=base_dir,
        monitor_interval_s=3600,
        demo_tenant="",
    )
    app = app_module.create_app(settings, ["http://vllm"])
    with TestClient(app) as client:
        state = app.state.loraplex
        engine, replicas = FakeEngine(), FakeReplicas()
        state.chat.engine = engine
        hotswap = HotSwapper(
            ["http://vllm"], httpx.AsyncClient(transport=httpx.MockTransport(replicas))
        )
        state.chat.hotswap = state.hotswap = hotswap
        state.services.serving = ReplicaSync(state.services.registry, hotswap)
        assert "adapters" not in state.services.__dict__  # built after, with the fake serving
        yield LoopGateway(client, app, engine, replicas, {"Authorization": f"Bearer {ADMIN_KEY}"})


@pytest.fixture
def cli(loop_gateway, base_dir, monkeypatch):
    """Run `loraplex ...` against the gateway's data directory (bag-of-words embedder too)."""
    import socket

    from typer.testing import CliRunner

    import serve.cli.common as common
    from serve.cli import app as cli_app

    monkeypatch.setattr(common, "Services", BowServices)
    with socket.socket() as sock:  # nobody listens there: no gateway is told about changes
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        "LORAPLEX_DATA_DIR": str(loop_gateway.services.settings.data_dir),
        "LORAPLEX_ADMIN_KEY": ADMIN_KEY,
        "LORAPLEX_BASE_MODEL": "tiny-base",
        "LORAPLEX_MODEL_DIR": str(base_dir),
        "LORAPLEX_PORT": str(port),
        "COLUMNS": "200",  # rich tables unwrapped
    }

    def run(*args: str):
        return CliRunner().invoke(cli_app, list(args), env=env)

    return run
