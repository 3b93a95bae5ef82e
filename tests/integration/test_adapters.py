"""Adapters end to end: upload, serve, promote, roll back, remove, survive a vLLM restart."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import httpx
import openai
import pytest

QUESTION = [{"role": "user", "content": "Name three colours."}]


def make_real_adapter(model_dir: Path, out: Path, *, seed: int, rank: int = 8, **lora_kw) -> Path:
    """A random (non-zero) LoRA adapter for the real base model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    cfg = LoraConfig(
        r=rank, lora_alpha=rank, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
        **lora_kw,
    )  # fmt: skip
    get_peft_model(model, cfg).save_pretrained(out)
    return out


def zipped(path: Path, extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for file in path.iterdir():
            zf.write(file, f"adapter/{file.name}")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture(scope="module")
def adapters_dir(stack, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {
        "v1": make_real_adapter(stack.model_dir, root / "v1", seed=1),
        "v2": make_real_adapter(stack.model_dir, root / "v2", seed=2),
        "rank32": make_real_adapter(stack.model_dir, root / "r32", seed=3, rank=32),
    }


def upload(admin: httpx.Client, data: bytes, name: str, **form) -> httpx.Response:
    return admin.post(
        "/v1/adapters",
        files={"file": ("adapter.zip", data, "application/zip")},
        data={"name": name, **form},
    )


def ask(client: openai.OpenAI, model: str) -> openai.types.chat.ChatCompletion:
    return client.chat.completions.create(
        model=model, messages=QUESTION, temperature=0, max_tokens=12
    )


def stored(stack) -> set[str]:
    return {p.name for p in (stack.settings.adapter_store_dir / "sha256").iterdir()}


def test_register_serve_promote_rollback_remove(stack, adapters_dir) -> None:
    key = stack.make_tenant("ad-acme")
    client = stack.openai(key)
    base = ask(client, stack.settings.base_model).choices[0].message.content
    with stack.admin() as admin:
        resp = upload(admin, zipped(adapters_dir["v1"]), "colours", tenant="ad-acme")
        assert resp.status_code == 201, resp.text
        body = resp.json()
        assert body["adapter"]["version"] == 1 and all(
            r["ok"] for rs in body["load"].values() for r in rs
        )

        cards = {m.id: m for m in client.models.list().data}
        assert cards["colours"].model_extra["parent"] == stack.settings.base_model
        assert cards["colours"].model_extra["version"] == 1

        first = ask(client, "colours")
        v1_text = first.choices[0].message.content
        assert v1_text != base
        assert first.model == "colours" and first.model_extra["loraplex"]["adapter"] == "colours@1"
        assert first.model_extra["loraplex"]["route"] == "adapter"

        resp = upload(admin, zipped(adapters_dir["v2"]), "colours", tenant="ad-acme",
                      promote="false")  # fmt: skip
        assert resp.json()["adapter"]["version"] == 2
        assert ask(client, "colours").choices[0].message.content == v1_text
        v2_text = ask(client, "colours@2").choices[0].message.content
        assert v2_text != v1_text

        assert admin.post("/v1/adapters/colours/promote", json={"version": 2}).status_code == 200
        assert ask(client, "colours").choices[0].message.content == v2_text
        back = admin.post("/v1/adapters/colours/rollback")
        assert back.status_code == 200 and back.json()["adapter"]["version"] == 1
        assert ask(client, "colours").choices[0].message.content == v1_text

        again = upload(admin, zipped(adapters_dir["v1"]), "colours", tenant="ad-acme")
        assert again.json()["existing"] is True and again.json()["adapter"]["version"] == 1

        assert admin.delete("/v1/adapters/colours").status_code == 200
        with pytest.raises(openai.NotFoundError):
            ask(client, "colours")
        assert "colours" not in {m.id for m in client.models.list().data}


def test_cli_changes_reach_the_running_gateway(stack, adapters_dir) -> None:
    """`loraplex adapters ...` edits the registry directly, then has the gateway load/unload."""
    from typer.testing import CliRunner

    from serve.cli.adapters import app

    client = stack.openai(stack.make_tenant("ad-cli"))
    env = {
        "LORAPLEX_DATA_DIR": str(stack.settings.data_dir),
        "LORAPLEX_MODEL_DIR": str(stack.model_dir),
        "LORAPLEX_PORT": str(stack.settings.port),
        "LORAPLEX_ADMIN_KEY": stack.admin_key,
    }

    def cli(*args: str) -> str:
        result = CliRunner().invoke(app, list(args), env=env)
        assert result.exit_code == 0, result.output
        return result.output

    def held() -> set[str]:
        resp = httpx.get(f"{stack.vllm_url}/v1/models", headers=stack.vllm_headers)
        return {m["id"] for m in resp.json()["data"]}

    out = cli("register", str(adapters_dir["v1"]), "--name", "edited", "--tenant", "ad-cli")
    assert "registered edited@1 (prod)" in out and "edited@1 loaded on 1/1" in out
    assert "edited-v1" in held()
    v1_text = ask(client, "edited").choices[0].message.content
    out = cli("register", str(adapters_dir["v2"]), "--name", "edited", "--tenant", "ad-cli",
              "--no-promote")  # fmt: skip
    assert "registered edited@2" in out and "edited-v2" not in held()
    assert "edited@2 loaded on 1/1" in cli("promote", "edited@2")
    assert "edited-v2" in held()
    assert ask(client, "edited").choices[0].message.content != v1_text
    out = cli("rollback", "edited")
    assert "unloaded edited-v2" in out and "edited-v2" not in held()
    assert ask(client, "edited").choices[0].message.content == v1_text
    assert "unloaded edited-v1" in cli("remove", "edited")
    assert not {"edited-v1", "edited-v2"} & held()
    with pytest.raises(openai.NotFoundError):
        ask(client, "edited")
    # The name is free again, its version numbers are not: edited-v1 meant other weights.
    out = cli("register", str(adapters_dir["v2"]), "--name", "edited", "--tenant", "ad-cli")
    assert "registered edited@3 (prod)" in out and "edited-v3" in held()
    cli("remove", "edited")


def test_tenants_cannot_use_or_see_each_others_adapters(stack, adapters_dir) -> None:
    owner = stack.openai(stack.make_tenant("ad-owner"))
    other = stack.openai(stack.make_tenant("ad-other"))
    with stack.admin() as admin:
        assert (
            upload(admin, zipped(adapters_dir["v1"]), "private", tenant="ad-owner").status_code
            == 201
        )
    assert ask(owner, "private").choices
    assert "private" not in {m.id for m in other.models.list().data}
    with pytest.raises(openai.NotFoundError) as exc:
        ask(other, "private")
    assert "private" in str(exc.value) and "ad-owner" not in str(exc.value)
    with pytest.raises(openai.NotFoundError):
        ask(other, "private-v1")  # the served name is not a back door


def test_bad_uploads_store_nothing(stack, adapters_dir, tmp_path) -> None:
    stack.make_tenant("ad-bad")
    before = stored(stack)
    v1 = adapters_dir["v1"]
    truncated = tmp_path / "trunc"
    truncated.mkdir()
    (truncated / "adapter_config.json").write_bytes((v1 / "adapter_config.json").read_bytes())
    (truncated / "adapter_model.safetensors").write_bytes(
        (v1 / "adapter_model.safetensors").read_bytes()[:-1000]
    )
    mts = tmp_path / "mts"
    mts.mkdir()
    cfg = json.loads((v1 / "adapter_config.json").read_text())
    (mts / "adapter_config.json").write_text(json.dumps({**cfg, "modules_to_save": ["lm_head"]}))
    (mts / "adapter_model.safetensors").write_bytes((v1 / "adapter_model.safetensors").read_bytes())
    wrong_base = tmp_path / "wb"
    wrong_base.mkdir()
    (wrong_base / "adapter_config.json").write_text(
        json.dumps({**cfg, "base_model_name_or_path": "meta-llama/Llama-3-8B"})
    )
    (wrong_base / "adapter_model.safetensors").write_bytes(
        (v1 / "adapter_model.safetensors").read_bytes()
    )
    cases = [
        (_zip_of({"readme.txt": b"hello"}), 400, "not_an_adapter"),
        (zipped(adapters_dir["rank32"]), 400, "rank_too_high"),
        (zipped(mts), 400, "modules_to_save"),
        (zipped(truncated), 400, "corrupt_weights"),
        (zipped(wrong_base), 400, "wrong_base_model"),
        (zipped(v1, {"../../escape.txt": b"x"}), 400, "unsafe_archive"),
        (b"not an archive", 400, "not_an_archive"),
    ]
    with stack.admin() as admin:
        for data, status, code in cases:
            resp = upload(admin, data, "bad", tenant="ad-bad")
            assert resp.status_code == status, (code, resp.text)
            assert resp.json()["error"]["code"] == code, resp.text
        big = b"0" * (stack.settings.max_upload_bytes + 1)
        resp = upload(admin, big, "bad", tenant="ad-bad")
        assert resp.status_code == 413 and resp.json()["error"]["code"] == "request_too_large"
        assert upload(admin, zipped(v1), "Bad Name", tenant="ad-bad").status_code == 400
        assert upload(admin, zipped(v1), "ok", tenant="nobody").status_code == 404
        assert admin.post("/v1/adapters/nope/promote", json={"version": 1}).status_code == 404
        assert admin.delete("/v1/adapters/nope").status_code == 404
        names = {a["name"] for a in admin.get("/v1/adapters").json()["data"]}
    assert "bad" not in names and stored(stack) == before
    assert not (stack.settings.data_dir.parent / "escape.txt").exists()
    with httpx.Client(base_url=stack.gateway_url) as http:
        resp = http.post(
            "/v1/adapters", headers={"Authorization": "Bearer " + stack.make_tenant("ad-bad")}
        )
        assert resp.status_code == 401


def _zip_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_adapter_survives_vllm_forgetting_and_restarting(stack, adapters_dir) -> None:
    client = stack.openai(stack.make_tenant("ad-restart"))
    with stack.admin() as admin:
        assert (
            upload(admin, zipped(adapters_dir["v2"]), "sturdy", tenant="ad-restart").status_code
            == 201
        )
    expected = ask(client, "sturdy").choices[0].message.content
    # vLLM drops the adapter behind the gateway's back: the next request loads it again.
    httpx.post(
        f"{stack.vllm_url}/v1/unload_lora_adapter",
        json={"lora_name": "sturdy-v1"},
        headers=stack.vllm_headers,
    )
    assert ask(client, "sturdy").choices[0].message.content == expected
    # A full restart: vLLM forgets everything; the resolver plugin finds it in the registry,
    # and the gateway would reload it on demand otherwise.
    stack.restart_vllm()
    direct = httpx.post(
        f"{stack.vllm_url}/v1/chat/completions",
        json={"model": "sturdy-v1", "messages": QUESTION, "temperature": 0, "max_tokens": 12},
        headers=stack.vllm_headers,
        timeout=120,
    )
    assert direct.status_code == 200, direct.text
    assert direct.json()["choices"][0]["message"]["content"] == expected
    assert ask(client, "sturdy").choices[0].message.content == expected
