"""The production loop on the real stack: feedback to a curated dataset, capture off leaves no
text on disk, drift gauges follow a change of topic, a broken canary is rolled back."""

from __future__ import annotations

import json
import re
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from typer.testing import CliRunner

JSON_EXEMPLARS = [
    "Extract the person as JSON: Ada Lovelace, born 1815 in London",
    "Give me this person as a JSON object: Alan Turing, 1912, Maida Vale",
    "Turn the text into JSON with name and birth year: Grace Hopper was born in 1906",
    "Extract name, year and city as JSON: Marie Curie, 1867, Warsaw",
]
OFF_TOPIC = [
    "Will it rain in Lisbon tomorrow afternoon?",
    "What should I pack for a snowy weekend in the mountains?",
    "Is it windy enough to go sailing today?",
]


def make_adapter(model_dir: Path, out: Path, seed: int) -> Path:
    """A random (non-zero) rank-8 LoRA adapter for the real base model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    cfg = LoraConfig(
        r=8, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    get_peft_model(model, cfg).save_pretrained(out)
    return out


def upload(stack, path: Path, name: str, tenant: str, **form: str) -> dict[str, Any]:
    archive = path.parent / f"{path.name}.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for file in path.iterdir():
            zf.write(file, file.name)
    with stack.admin() as admin:
        resp = admin.post(
            "/v1/adapters",
            files={"file": ("a.zip", archive.read_bytes(), "application/zip")},
            data={"name": name, "tenant": tenant, **form},
        )
    assert resp.status_code == 201, resp.text
    return resp.json()


def ask(client: openai.OpenAI, content: str, model: str = "SmolLM2-135M-Instruct", **kw: Any):
    return client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": content}],
        temperature=0,
        max_tokens=6,
        **kw,
    )


def until(check: Callable[[], Any], what: str, timeout_s: float = 90) -> Any:
    """Poll `check` until it returns something truthy (the gateway's loop ticks every 5 s)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"gave up waiting for {what}")


def gauge(stack, name: str, **labels: str) -> float | None:
    with stack.admin() as admin:
        text = admin.get("/metrics").text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    found = re.search(rf"^{name}\{{{re.escape(want)}\}} (\S+)$", text, re.M)
    return float(found.group(1)) if found else None


@pytest.fixture(scope="module")
def adapters(stack, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("loop-adapters")
    return {
        "v1": make_adapter(stack.model_dir, root / "v1", 11),
        "v2": make_adapter(stack.model_dir, root / "v2", 12),
    }


def test_a_correction_becomes_a_curated_dataset_naming_its_feedback(stack, tmp_path) -> None:
    key = stack.make_tenant("loop-acme", {"capture": "redacted"})
    answer = ask(stack.openai(key), "What is the capital of France? Reply to ada@example.com")
    assert answer.model_extra["loraplex"]["route"] == "prompt"
    with httpx.Client(
        base_url=stack.gateway_url, headers={"Authorization": f"Bearer {key}"}, timeout=120
    ) as http:
        fb = http.post(
            "/v1/feedback",
            json={
                "id": answer.id,
                "rating": "down",
                "correction": "The capital of France is Paris.",
            },
        )
        assert fb.status_code == 201, fb.text
        assert fb.json()["has_prompt"] is True and fb.json()["route"] == "prompt"
        assert http.post("/v1/feedback", json={"id": answer.id, "rating": 9}).status_code == 400
        listed = http.get("/v1/feedback").json()["data"]
    assert [f["id"] for f in listed] == [answer.id]
    env = {
        "LORAPLEX_DATA_DIR": str(stack.settings.data_dir),
        "LORAPLEX_MODEL_DIR": str(stack.model_dir),
        "LORAPLEX_ADMIN_KEY": stack.admin_key,
    }
    from serve.cli import app

    out = tmp_path / "from-feedback"
    result = CliRunner().invoke(
        app, ["data", "from-feedback", "--tenant", "loop-acme", "--out", str(out)], env=env
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["lineage"]["feedback_ids"] == [answer.id]
    assert manifest["lineage"]["adapter_versions"] == {"(base model)": 1}
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert rows[0]["messages"][-1] == {
        "role": "assistant",
        "content": "The capital of France is Paris.",
    }
    assert "[EMAIL]" in rows[0]["messages"][0]["content"]  # captured after the PII pass


def test_capture_off_leaves_no_prompt_text_on_disk(stack) -> None:
    secret = "quokka-ledger-5521"
    client = stack.openai(stack.make_tenant("loop-quiet"))
    ask(client, f"Say hello to {secret} please")
    stream = client.chat.completions.create(
        model="SmolLM2-135M-Instruct",
        stream=True,
        max_tokens=4,
        messages=[{"role": "user", "content": f"And {secret} again"}],
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert stack.state.recorder.flush() >= 0  # what the loop writes, written now
    for path in stack.settings.data_dir.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), f"{path} holds the prompt"


def test_drift_gauges_move_when_the_prompts_change_topic(stack, adapters) -> None:
    key = stack.make_tenant("loop-drift")
    upload(stack, adapters["v1"], "loop-people", "loop-drift", exemplars=json.dumps(JSON_EXEMPLARS))
    client = stack.openai(key)
    for prompt in JSON_EXEMPLARS[:3]:
        ask(client, prompt.replace("Ada Lovelace", "Emmy Noether"), model="loop-people")
    labels = {"tenant": "loop-drift", "adapter": "loop-people"}
    on_topic = until(lambda: gauge(stack, "loraplex_drift_input", **labels), "the drift gauge")
    for prompt in OFF_TOPIC * 2:
        ask(client, prompt, model="loop-people")
    moved = until(
        lambda: (
            (v := gauge(stack, "loraplex_drift_input", **labels)) is not None
            and v > on_topic + 0.1
            and v
        ),
        "the drift gauge to move",
    )
    assert moved > on_topic + 0.1
    similarity = gauge(stack, "loraplex_drift_exemplar_similarity", **labels)
    assert similarity is not None and 0 < similarity < 1


def test_a_broken_canary_is_rolled_back_automatically(stack, adapters) -> None:
    key = stack.make_tenant("loop-canary")
    upload(stack, adapters["v1"], "loop-colours", "loop-canary")
    v2 = upload(stack, adapters["v2"], "loop-colours", "loop-canary", promote="false")["adapter"]
    # The stored weights of v2 get damaged: vLLM refuses to load them.
    weights = stack.state.services.registry.get("loop-colours@2").path / "adapter_model.safetensors"
    weights.chmod(0o644)
    weights.write_bytes(weights.read_bytes()[: v2["size_bytes"] // 3])
    with stack.admin() as admin:
        started = admin.post(
            "/v1/adapters/loop-colours/promote",
            json={"version": 2, "canary": 50, "criteria": {"min_requests": 2}},
        )
        assert started.status_code == 200, started.text
    client = stack.openai(key)
    served, failed = [], 0
    for i in range(30):
        try:
            served.append(
                ask(client, "Name a colour", model="loop-colours", user=f"u{i}").model_extra[
                    "loraplex"
                ]["adapter"]
            )
        except openai.APIStatusError as exc:
            assert exc.status_code == 503
            failed += 1
        if failed >= 2:
            break
    assert failed == 2 and set(served) <= {"loop-colours@1"}

    def rolled_back() -> dict[str, Any] | None:
        with stack.admin() as admin:
            report = admin.get("/v1/adapters/loop-colours/canary").json()["canary"]
        return report if report["state"] == "rolled_back" else None

    report = until(rolled_back, "the automatic rollback")
    assert "error rate 100%" in report["reason"] and report["arms"]["canary"]["errors"] == 2
    after = {
        ask(client, "Name a colour", model="loop-colours", user=f"u{i}").model_extra["loraplex"][
            "adapter"
        ]
        for i in range(4)
    }
    assert after == {"loop-colours@1"}
