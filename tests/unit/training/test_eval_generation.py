"""Generation back-ends without a server: the server protocol against a mock transport, the
back-end choice, and the offline engine's spec."""

import json

import httpx
import pytest

from training.errors import TrainingError
from training.evaluate.generation import (
    GenRequest,
    VllmOffline,
    VllmServerBackend,
    choose_backend,
    lora_rank_limit,
)


class FakeVllm:
    """Just enough of vLLM's HTTP API: models, runtime LoRA load/unload, chat completions."""

    def __init__(self, fail_load=False):
        self.calls, self.loaded, self.fail_load = [], {}, fail_load

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else {}
        self.calls.append((request.url.path, body))
        if request.url.path == "/v1/models":
            data = [{"id": "base-model", "parent": None}]
            data += [{"id": n, "parent": "base-model"} for n in self.loaded]
            return httpx.Response(200, json={"data": data})
        if request.url.path == "/v1/load_lora_adapter":
            if self.fail_load:
                return httpx.Response(400, text="rank 64 exceeds max_lora_rank 16")
            self.loaded[body["lora_name"]] = body["lora_path"]
            return httpx.Response(200, text="ok")
        if request.url.path == "/v1/unload_lora_adapter":
            self.loaded.pop(body["lora_name"])
            return httpx.Response(200, text="ok")
        who = "adapter" if body["model"] in self.loaded else body["model"]
        text = f"{who}: {body['messages'][-1]['content']}"
        return httpx.Response(
            200,
            json={"choices": [{"message": {"content": text}}], "usage": {"completion_tokens": 3}},
        )


def _requests():
    chats = [[{"role": "user", "content": f"q{i}"}] for i in range(3)]
    return [GenRequest(c, side, 16) for side in (False, True) for c in chats]


def test_server_backend_loads_a_temporary_adapter_answers_all_and_unloads(tmp_path) -> None:
    fake = FakeVllm()
    backend = VllmServerBackend(
        "http://vllm:8000/v1", tmp_path, transport=httpx.MockTransport(fake)
    )
    result = backend.generate(_requests())
    assert result.answers == [
        "base-model: q0",
        "base-model: q1",
        "base-model: q2",
        "adapter: q0",
        "adapter: q1",
        "adapter: q2",
    ]
    assert result.output_tokens == 18 and result.backend == "server"
    paths = [p for p, _ in fake.calls]
    assert (
        paths[:2] == ["/v1/models", "/v1/load_lora_adapter"]
        and paths[-1] == "/v1/unload_lora_adapter"
    )
    loaded = fake.calls[1][1]
    assert loaded["lora_name"].startswith("loraplex-eval-") and loaded["lora_path"] == str(tmp_path)
    assert fake.loaded == {}  # unloaded again
    chats = [b for p, b in fake.calls if p == "/v1/chat/completions"]
    assert {b["temperature"] for b in chats} == {0.0} and {b["max_tokens"] for b in chats} == {16}


def test_a_refused_adapter_is_a_clear_error(tmp_path) -> None:
    backend = VllmServerBackend(
        "http://vllm:8000", tmp_path, transport=httpx.MockTransport(FakeVllm(fail_load=True))
    )
    with pytest.raises(TrainingError, match="answered 400: rank 64 exceeds max_lora_rank 16"):
        backend.generate(_requests())


def test_backend_choice_and_lora_rank_limit() -> None:
    assert choose_backend("auto", "http://x") == "server"
    assert choose_backend("auto", None) in ("vllm", "transformers")
    assert choose_backend("transformers", "http://x") == "transformers"
    with pytest.raises(TrainingError, match="backend must be one of"):
        choose_backend("tgi", None)
    with pytest.raises(TrainingError, match="needs the vLLM server's URL"):
        choose_backend("server", None)
    assert [lora_rank_limit(r) for r in (1, 4, 8, 12, 16, 64)] == [1, 8, 8, 16, 16, 64]
    with pytest.raises(TrainingError, match="above vLLM's largest"):
        lora_rank_limit(1024)


def test_offline_engine_child_finds_this_package_and_runs_on_cpu_settings(tmp_path) -> None:
    engine = VllmOffline(tmp_path / "base", tmp_path / "adapter", lora_rank=8)
    env = engine.environment()
    import training

    root = str(__import__("pathlib").Path(training.__file__).resolve().parents[1])
    assert env["PYTHONPATH"].split(":")[0] == root
    assert env["VLLM_CPU_KVCACHE_SPACE"] and env["HF_HUB_OFFLINE"] == "1"
    assert engine.max_lora_rank == 8
