"""Two real vLLM CPU replicas behind one gateway (LORAPLEX_VLLM_URLS of both).

The run's vLLM is the first replica; this module starts a second one (about 1.5 GB and a
minute or more on a CPU), so it is marked `slow`: `pytest -m "not slow"` leaves it out.

- requests spread over both (each replica's own request counter, from its /metrics);
- an adapter registered through the gateway is loaded into, and served by, both;
- one replica killed: non-streaming requests are retried on the other, /readyz says degraded;
- the killed replica restarted: it serves the adapter again with no operator step.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from serve.engine.launcher import VllmServer
from serve.settings import Settings

pytestmark = pytest.mark.slow

BASE = "SmolLM2-135M-Instruct"
ADMIN_KEY = "lpx-admin-replicas-test-key"
QUESTION = [{"role": "user", "content": "Name a colour."}]
SUCCESS = re.compile(r"^vllm:request_success_total\{[^}]*\}\s+([0-9.e+]+)$", re.M)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def served(url: str, key: str) -> float:
    """Requests this replica finished, by its own Prometheus counter."""
    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {key}"}, timeout=10).text
    return sum(float(v) for v in SUCCESS.findall(text))


def held(url: str, key: str) -> set[str]:
    """Model names this replica serves (the base model and its loaded adapters)."""
    resp = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    return {m["id"] for m in resp.json()["data"]}


class Gateway:
    """The real gateway app in a thread of this process, over both replicas."""

    def __init__(self, settings: Settings, urls: list[str]) -> None:
        import uvicorn

        from serve.gateway.app import create_app, server_config

        self.settings = settings
        self.app = create_app(settings, urls)
        self.server = uvicorn.Server(server_config(self.app, settings, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{settings.port}"

    def __enter__(self) -> Gateway:
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "gateway did not start"
            time.sleep(0.1)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def client(self, key: str = ADMIN_KEY) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=120
        )


def _adapter_zip(model_dir: Path, out: Path) -> bytes:
    """A zipped rank-8 LoRA adapter for 2 of the base model's layers (made in ms)."""
    import io
    import zipfile

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    config = json.loads((model_dir / "config.json").read_text())
    config.update(num_hidden_layers=2, vocab_size=256, tie_word_embeddings=True)
    torch.manual_seed(5)
    model = LlamaForCausalLM(LlamaConfig(**config))
    lora = LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    get_peft_model(model, lora).save_pretrained(out)
    cfg = json.loads((out / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = BASE
    (out / "adapter_config.json").write_text(json.dumps(cfg))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for file in out.iterdir():
            zf.write(file, f"adapter/{file.name}")
    return buf.getvalue()


@pytest.fixture(scope="module")
def replicas(stack, tmp_path_factory) -> Iterator[tuple[Gateway, VllmServer, str, bytes]]:
    """A second vLLM (sharing the gateway's registry through its resolver plugin) and a
    gateway over it and the run's vLLM; yields (gateway, second vLLM, tenant key, a zipped
    adapter)."""
    data = tmp_path_factory.mktemp("replicas")
    # Made before the gateway starts: importing peft here while the gateway's thread imports
    # sentence-transformers races inside transformers' lazy imports.
    adapter = _adapter_zip(stack.model_dir, data / "adapter")
    common: dict[str, Any] = dict(
        data_dir=data,
        model_dir=stack.model_dir,
        admin_key=ADMIN_KEY,
        vllm_api_key=stack.vllm_key,
        demo_tenant="",
        embedding_threads=0,
    )
    second_settings = Settings.load(
        **common,
        vllm_port=free_port(),
        vllm_max_model_len=512,  # small: the run's vLLM already holds most of the memory
        vllm_cpu_kvcache_gib=1,
        vllm_max_loras=2,
        vllm_max_lora_rank=16,
    )
    second = VllmServer(second_settings, stack.model_dir, data / "logs" / "vllm2.log")
    started = time.monotonic()
    second.start()
    try:
        second.wait_ready(timeout_s=600)
        print(f"second vLLM ready in {time.monotonic() - started:.0f} s")
        settings = Settings.load(**common, port=free_port(), vllm_max_model_len=512)
        with Gateway(settings, [stack.vllm_url, second.url]) as gw:
            with gw.client() as admin:
                resp = admin.post("/v1/tenants", json={"name": "rep", "policy": {}})
            assert resp.status_code == 201, resp.text
            yield gw, second, resp.json()["api_key"], adapter
    finally:
        second.stop()


def _chat(gw: Gateway, key: str, model: str = BASE) -> httpx.Response:
    with gw.client(key) as client:
        return client.post(
            "/v1/chat/completions",
            json={
                "model": model,
                "messages": QUESTION,
                "max_tokens": 2,
                "temperature": 0,
            },
        )


def test_requests_spread_over_both_replicas(replicas, stack) -> None:
    gw, second, key, _ = replicas
    before = [served(stack.vllm_url, stack.vllm_key), served(second.url, stack.vllm_key)]
    assert all(_chat(gw, key).status_code == 200 for _ in range(12))
    after = [served(stack.vllm_url, stack.vllm_key), served(second.url, stack.vllm_key)]
    spread = [a - b for a, b in zip(after, before, strict=True)]
    print(f"12 requests: {spread[0]:.0f} on the first replica, {spread[1]:.0f} on the second")
    assert spread[1] >= 1 and sum(spread) >= 12  # the first also serves the run's other tests
    assert spread[0] >= 1


def test_an_adapter_is_loaded_into_and_served_by_both(replicas, stack) -> None:
    gw, second, key, data = replicas
    with gw.client() as admin:
        resp = admin.post(
            "/v1/adapters",
            files={"file": ("adapter.zip", data, "application/zip")},
            data={"name": "rep-colours", "tenant": "rep"},
        )
    assert resp.status_code == 201, resp.text
    served_name = next(n for n in held(second.url, stack.vllm_key) if n.startswith("rep-colours"))
    assert served_name in held(stack.vllm_url, stack.vllm_key)
    for url in (stack.vllm_url, second.url):  # each replica answers with it itself
        direct = httpx.post(
            f"{url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {stack.vllm_key}"},
            json={"model": served_name, "messages": QUESTION, "max_tokens": 2},
            timeout=120,
        )
        assert direct.status_code == 200, (url, direct.text)
    assert _chat(gw, key, "rep-colours").status_code == 200


def test_a_killed_replica_is_retried_around_reported_and_serves_again_after_restart(
    replicas, stack
) -> None:
    gw, second, key, _ = replicas
    assert second.proc is not None
    os.killpg(second.proc.pid, signal.SIGKILL)
    second.stop()  # reaps it
    statuses = [_chat(gw, key).status_code for _ in range(6)]
    assert statuses == [200] * 6, statuses  # retried on the live replica
    with gw.client() as client:
        ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "degraded"
    assert ready.json()["replicas"] == {stack.vllm_url: True, second.url: False}

    started = time.monotonic()
    second.start()
    second.wait_ready(timeout_s=600)
    print(f"second vLLM restarted in {time.monotonic() - started:.0f} s")
    with gw.client() as client:
        assert client.get("/readyz").json()["status"] == "ready"
    before = served(second.url, stack.vllm_key)
    statuses = [_chat(gw, key, "rep-colours").status_code for _ in range(10)]
    assert statuses == [200] * 10, statuses
    assert served(second.url, stack.vllm_key) > before, "the restarted replica served nothing"
    assert any(n.startswith("rep-colours") for n in held(second.url, stack.vllm_key))
