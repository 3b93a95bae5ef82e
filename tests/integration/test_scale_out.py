"""Two gateway processes on shared state: one PostgreSQL (pgserver), one Chroma server
(`chroma run`), the test run's vLLM. What one gateway is told, the other knows:

- an adapter registered through one is listed and served through the other within a second;
- a key revoked through one is refused by both within 5 s (the other's key cache);
- documents ingested through one are found through the other, by the dense and the BM25 leg;
- a tenant over its requests per minute on one gets 429 + Retry-After from the other;
- feedback on an answer from one, sent through the other the moment the answer arrives, is taken.

Each gateway is `loraplex up` pointed at the running vLLM (LORAPLEX_VLLM_URLS), with a data
dir of its own: nothing but the database, the Chroma server and the adapter artifacts' paths is
shared between them.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
BASE = "SmolLM2-135M-Instruct"
QUESTION = [{"role": "user", "content": "Name a colour."}]
ADMIN_KEY = "lpx-admin-scale-out-key"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(predicate, seconds: float, what: str, procs=()) -> float:
    """Poll until `predicate()`; seconds it took. Fails early when a process died."""
    started = time.monotonic()
    while not predicate():
        for proc in procs:
            if proc.poll() is not None:
                raise AssertionError(f"{what}: a process exited with {proc.returncode}")
        if time.monotonic() - started > seconds:
            raise AssertionError(f"{what} did not happen within {seconds} s")
        time.sleep(0.1)
    return time.monotonic() - started


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def postgres(tmp_path_factory) -> Iterator[str]:
    """A real PostgreSQL 16 without root (pgserver), as an SQLAlchemy URL."""
    pgserver = pytest.importorskip("pgserver")
    pytest.importorskip("psycopg")
    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    try:
        yield server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def chroma(tmp_path_factory) -> Iterator[str]:
    """`chroma run` on a free port with its own data dir."""
    port = free_port()
    data = tmp_path_factory.mktemp("chroma-server")
    chroma_bin = Path(sys.executable).parent / "chroma"
    with (data / "chroma.log").open("wb") as log:
        proc = subprocess.Popen(
            [str(chroma_bin), "run", "--path", str(data / "db"), "--host", "127.0.0.1"]
            + ["--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: _answers(f"{url}/api/v2/heartbeat"), 60, "chroma run", [proc])
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class Gateway:
    """`loraplex up` on a running vLLM, in a process of its own."""

    def __init__(self, name: str, data_dir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data_dir / "gateway.log"
        data_dir.mkdir(parents=True, exist_ok=True)
        full = {k: v for k, v in os.environ.items() if not k.startswith("LORAPLEX_")}
        full.update(env, LORAPLEX_DATA_DIR=str(data_dir), LORAPLEX_PORT=str(self.port))
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "serve.cli", "up"],
                env=full,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def client(self, key: str = ADMIN_KEY) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=120
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def gateways(stack, postgres, chroma, tmp_path_factory) -> Iterator[tuple[Gateway, Gateway]]:
    """Two gateways sharing PostgreSQL, the Chroma server and the run's vLLM."""
    root = tmp_path_factory.mktemp("scale-out")
    env = {
        "PYTHONPATH": str(REPO),
        "LORAPLEX_ADMIN_KEY": ADMIN_KEY,
        "LORAPLEX_VLLM_URLS": stack.vllm_url,
        "LORAPLEX_VLLM_API_KEY": stack.vllm_key,
        "LORAPLEX_DATABASE_URL": postgres,
        "LORAPLEX_CHROMA_URL": chroma,
        "LORAPLEX_MODEL_DIR": str(stack.model_dir),
        "LORAPLEX_DEMO_TENANT": "",
        "HF_HUB_OFFLINE": "1",
        "ANONYMIZED_TELEMETRY": "False",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "TOKENIZERS_PARALLELISM": "false",
    }
    a = Gateway("a", root / "a", env)
    b = Gateway("b", root / "b", env)
    try:
        for gw in (a, b):
            _wait(lambda gw=gw: _answers(f"{gw.url}/readyz"), 300, f"gateway {gw.name}", [gw.proc])
        yield a, b
    except BaseException:
        for gw in (a, b):
            print(f"--- gateway {gw.name} log ---\n{gw.log.read_text()[-3000:]}")
        raise
    finally:
        a.stop()
        b.stop()


def _tenant(gw: Gateway, name: str, policy: dict | None = None) -> str:
    with gw.client() as admin:
        resp = admin.post("/v1/tenants", json={"name": name, "policy": policy or {}})
    assert resp.status_code == 201, resp.text
    return resp.json()["api_key"]


def _chat(gw: Gateway, key: str, model: str = BASE) -> httpx.Response:
    with gw.client(key) as client:
        return client.post(
            "/v1/chat/completions",
            json={"model": model, "messages": QUESTION, "max_tokens": 2, "temperature": 0},
        )


def _small_adapter(model_dir: Path, out: Path) -> bytes:
    """A zipped LoRA adapter for the base model's shapes, on 2 of its layers (made in ms)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    config = json.loads((model_dir / "config.json").read_text())
    config.update(num_hidden_layers=2, vocab_size=256, tie_word_embeddings=True)
    torch.manual_seed(11)
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


def test_an_adapter_registered_through_one_is_served_through_the_other(
    gateways, stack, tmp_path
) -> None:
    a, b = gateways
    key = _tenant(a, "so-adapters")
    data = _small_adapter(stack.model_dir, tmp_path / "adapter")
    with a.client() as admin:
        resp = admin.post(
            "/v1/adapters",
            files={"file": ("adapter.zip", data, "application/zip")},
            data={"name": "so-colours", "tenant": "so-adapters"},
        )
    assert resp.status_code == 201, resp.text
    registered = time.monotonic()

    def listed_on_b() -> bool:
        with b.client(key) as client:
            return "so-colours" in {m["id"] for m in client.get("/v1/models").json()["data"]}

    took = _wait(listed_on_b, 1.0, "the adapter listed by gateway b")
    served = _chat(b, key, "so-colours")
    assert served.status_code == 200, served.text
    assert served.json()["model"] == "so-colours"
    assert served.json()["loraplex"]["adapter"].startswith("so-colours@")
    print(f"adapter listed on b {took:.2f} s, served {time.monotonic() - registered:.2f} s after")


def test_a_key_revoked_through_one_is_refused_by_both_within_5_s(gateways) -> None:
    a, b = gateways
    key = _tenant(a, "so-keys")
    for gw in (a, b):  # both have the key cached now
        with gw.client(key) as client:
            assert client.get("/v1/models").status_code == 200
    with a.client() as admin:
        kid = admin.get("/v1/tenants/so-keys/keys").json()["data"][0]["id"]
        assert admin.delete(f"/v1/tenants/so-keys/keys/{kid}").status_code == 200
    revoked = time.monotonic()

    def refused(gw: Gateway) -> bool:
        with gw.client(key) as client:
            return client.get("/v1/models").status_code == 401

    assert refused(a)  # at once where it was revoked
    took = _wait(lambda: refused(b), 6.0, "gateway b refusing the revoked key")
    assert time.monotonic() - revoked <= 5.5, "the key cache outlived its 5 s TTL"
    print(f"revoked key refused by b after {took:.2f} s")


def test_documents_ingested_through_one_are_found_through_the_other(gateways) -> None:
    a, b = gateways
    key = _tenant(a, "so-docs")
    records = [
        {"text": "Error code ZX-4471 means the kettle's thermostat failed.", "source": "kb/zx"},
        {"text": "Our office cat is called Marmalade and likes boxes.", "source": "kb/cat"},
    ]
    with a.client(key) as client:
        resp = client.post("/v1/documents", json={"records": records})
    assert resp.status_code == 201, resp.text
    for mode, query in (
        ("bm25", "ZX-4471"),
        ("dense", "what is the cat's name"),
        ("hybrid", "ZX-4471"),
    ):
        with b.client(key) as client:
            found = client.post("/v1/retrieve", json={"query": query, "mode": mode, "top_k": 1})
        assert found.status_code == 200, found.text
        hits = found.json()["hits"]
        assert hits, f"{mode}: nothing found through gateway b"
        want = "ZX-4471" if "ZX" in query else "Marmalade"
        assert want in hits[0]["text"], (mode, hits)


def test_a_tenant_over_its_rpm_on_one_gets_429_from_the_other(gateways) -> None:
    a, b = gateways
    key = _tenant(a, "so-quota", {"quotas": {"requests_per_minute": 2}})
    if time.time() % 60 > 40:  # all three requests in one clock minute
        time.sleep(61 - time.time() % 60)
    assert [_chat(a, key).status_code for _ in range(2)] == [200, 200]
    refused = _chat(b, key)
    assert refused.status_code == 429, refused.text
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "requests_per_minute_exceeded"
    assert "2 requests per minute" in error["message"]
    # Another tenant is not affected.
    assert _chat(b, _tenant(b, "so-quota-other")).status_code == 200


def test_feedback_on_an_answer_from_one_is_taken_by_the_other_at_once(gateways) -> None:
    """A client rating an answer as soon as it arrives may reach another replica than the one
    that answered, before that one's request record is written."""
    a, b = gateways
    key = _tenant(a, "so-feedback")
    taken = []
    for _ in range(3):
        answer = _chat(a, key)
        assert answer.status_code == 200, answer.text
        with b.client(key) as client:
            resp = client.post("/v1/feedback", json={"id": answer.json()["id"], "rating": "down"})
        assert resp.status_code == 201, resp.text
        taken.append(resp.json()["id"])
    with b.client(key) as client:
        listed = {f["id"] for f in client.get("/v1/feedback").json()["data"]}
    assert set(taken) <= listed
    # An id nobody issued is still a 404, not a wait for ever.
    with b.client(key) as client:
        started = time.monotonic()
        missing = client.post("/v1/feedback", json={"id": "chatcmpl-nope", "rating": "up"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "completion_not_found"
    assert time.monotonic() - started < 5
