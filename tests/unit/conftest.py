"""Tiny PEFT adapters on a tiny random Llama, made in the test: no download, milliseconds."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

TINY = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_hidden_layers": 2,
    "vocab_size": 128,
}


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory) -> Path:
    """A base 'model' directory with only config.json (validation reads nothing else)."""
    path = tmp_path_factory.mktemp("tiny-base")
    (path / "config.json").write_text(json.dumps({**TINY, "architectures": ["LlamaForCausalLM"]}))
    return path


def make_adapter(
    out: Path,
    *,
    rank: int = 4,
    seed: int = 0,
    base: str = "tiny-base",
    targets=("q_proj", "v_proj"),
    modules_to_save=None,
    config=None,
) -> Path:
    """Save a LoRA adapter for the tiny Llama; different seeds give different bytes."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**(config or TINY)))
    lora = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        target_modules=list(targets),
        init_lora_weights=False,
        modules_to_save=modules_to_save,
    )
    get_peft_model(model, lora).save_pretrained(out)
    cfg = json.loads((out / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = base
    (out / "adapter_config.json").write_text(json.dumps(cfg))
    return out


@pytest.fixture
def make():
    """The adapter factory, for tests that need variants."""
    return make_adapter


@pytest.fixture
def tiny() -> dict:
    return dict(TINY)


@pytest.fixture
def adapter(tmp_path) -> Path:
    return make_adapter(tmp_path / "a")


@pytest.fixture
def registry(tmp_path, base_dir):
    from adapters.registry import AdapterRegistry

    return AdapterRegistry(
        f"sqlite:///{tmp_path / 'reg.db'}",
        tmp_path / "store",
        base_model="tiny-base",
        max_rank=16,
        base_model_dir=base_dir,
    )


def _fake_replicas(refuse: set[str]):
    """Replicas that behave like vLLM's runtime LoRA API; hosts in `refuse` fail loads."""
    held: dict[str, set[str]] = {}
    calls: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        host, path = request.url.host, request.url.path
        calls.append((host, path))
        names = held.setdefault(host, set())
        if path == "/v1/models":
            cards = [{"id": "base", "parent": None}]
            cards += [{"id": n, "parent": "base"} for n in sorted(names)]
            return httpx.Response(200, json={"object": "list", "data": cards})
        body = json.loads(request.content)
        if path == "/v1/load_lora_adapter":
            if host in refuse:
                return httpx.Response(500, text="out of memory")
            if body["lora_name"] in names:
                return httpx.Response(400, text="has already been loaded")
            names.add(body["lora_name"])
            return httpx.Response(200, text="ok")
        if body["lora_name"] not in names:
            return httpx.Response(404, text="cannot be found")
        names.remove(body["lora_name"])
        return httpx.Response(200, text="ok")

    return handler, held, calls


@pytest.fixture
def fake_replicas():
    """`fake_replicas(refuse)` -> (httpx handler, what each host holds, the calls made)."""
    return _fake_replicas
