"""Training on the real SmolLM2 base, a few steps on tiny generated data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.validation import validate_adapter
from training.config import TrainConfig
from training.curation import PrepareConfig, prepare
from training.errors import TrainingError
from training.formats import write_jsonl
from training.synthetic import json_task

SMALL = dict(batch_size=4, max_length=96, learning_rate=1e-3, rank=8, warmup_ratio=0.0)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ds")
    write_jsonl(root / "raw.jsonl", json_task(60, seed=3))
    prepare([root / "raw.jsonl"], root / "data", PrepareConfig(dedup_threshold=1.0))
    return root / "data"


@pytest.fixture(scope="module")
def sft_run(model_dir, dataset, tmp_path_factory):
    from training.sft import train_sft

    cfg = TrainConfig(base_model_dir=model_dir, max_steps=4, eval_steps=2, **SMALL)
    return train_sft(cfg, dataset, tmp_path_factory.mktemp("run") / "sft", progress=False)


def test_lora_training_lowers_validation_loss_and_writes_a_servable_adapter(
    sft_run, model_dir
) -> None:
    report = sft_run.report
    assert report["steps"] == 4
    assert report["best_val_loss"] < report["base_val_loss"] * 0.8
    out = sft_run.adapter_dir.parent
    for name in ("report.json", "report.md", "loss.png", "exemplars.json"):
        assert (out / name).is_file(), name
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "exemplars.json").read_text())
    assert report["dataset_digest"] and report["tokens_per_s"] > 0
    info = validate_adapter(sft_run.adapter_dir, base_model="SmolLM2-135M-Instruct", max_rank=16,
                            base_config=json.loads((model_dir / "config.json").read_text()))  # fmt: skip
    assert info.rank == 8 and "q_proj" in info.target_modules
    assert not list(out.glob(".adapter-tmp*"))


def test_trained_adapter_is_served_by_vllm(stack, sft_run) -> None:
    key = stack.make_tenant("tr-acme")
    with stack.admin() as admin:
        import io
        import zipfile

        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for f in sft_run.adapter_dir.iterdir():
                zf.write(f, f.name)
        resp = admin.post("/v1/adapters", files={"file": ("a.zip", buf.getvalue())},
                          data={"name": "json-extract", "tenant": "tr-acme",
                                "exemplars": (sft_run.adapter_dir.parent / "exemplars.json").read_text()})  # fmt: skip
        assert resp.status_code == 201, resp.text
    question = json_task(1, seed=99)[0]["messages"][:1]
    answer = stack.openai(key).chat.completions.create(
        model="json-extract", messages=question, temperature=0, max_tokens=40
    )
    assert (
        answer.choices[0].message.content and answer.model_extra["loraplex"]["route"] == "adapter"
    )


def test_evaluation_gives_go_for_a_json_adapter(stack, sft_run, dataset, model_dir) -> None:
    """The real eval on the test fixture's vLLM server: temporary adapter, one batch of
    answers from base and adapter, gates recorded at `prepare`, copied by training."""
    import httpx

    from training.evaluate import evaluate

    report = evaluate(
        sft_run.adapter_dir,
        dataset,
        model_dir,
        backend="server",
        vllm_url=stack.vllm_url,
        vllm_api_key=stack.vllm_key,
        limit=6,
        general_limit=8,
    )
    m = report["metrics"]
    assert report["go"], report["check_list"]
    assert report["task"]["task_metric"] == "key_match" and report["gates_source"] == "run"
    assert m["key_match"]["adapter"] - m["key_match"]["base"] >= 0.1
    assert m["json_valid"]["adapter"] >= m["json_valid"]["base"]
    assert m["answer_loss"]["adapter"] < m["answer_loss"]["base"]
    assert report["backend"]["name"] == "server" and report["backend"]["answers"] == 2 * (6 + 8)
    assert report["general"]["overall"]["items"] == 8
    out = sft_run.adapter_dir.parent
    for name in ("eval.json", "eval.md", "eval.png", "eval_examples.jsonl", "eval_general.jsonl"):
        assert (out / name).is_file(), name
    # The temporary adapter is gone from the server again.
    served = httpx.get(f"{stack.vllm_url}/v1/models", headers=stack.vllm_headers).json()["data"]
    assert not [m["id"] for m in served if m["id"].startswith("loraplex-eval-")]


def test_evaluation_refuses_an_adapter_for_another_base(
    stack, sft_run, dataset, model_dir, tmp_path
) -> None:
    import shutil

    from training.evaluate import evaluate

    other = tmp_path / "run" / "adapter"
    shutil.copytree(sft_run.adapter_dir, other)
    cfg = json.loads((other / "adapter_config.json").read_text())
    (other / "adapter_config.json").write_text(
        json.dumps({**cfg, "base_model_name_or_path": "Qwen2.5-0.5B-Instruct"})
    )
    with pytest.raises(TrainingError, match="trained for base model 'Qwen2.5-0.5B-Instruct'"):
        evaluate(
            other,
            dataset,
            model_dir,
            backend="server",
            vllm_url=stack.vllm_url,
            vllm_api_key=stack.vllm_key,
        )
    assert not (tmp_path / "run" / "eval.json").exists()


def test_qlora_runs_on_cpu(model_dir, dataset, tmp_path) -> None:
    from training.sft import train_sft

    cfg = TrainConfig(base_model_dir=model_dir, max_steps=2, eval_steps=100, qlora=True, **SMALL)
    result = train_sft(cfg, dataset, tmp_path / "q", progress=False)
    assert (
        result.report["steps"] == 2 and (result.adapter_dir / "adapter_model.safetensors").is_file()
    )
    validate_adapter(result.adapter_dir, base_model="SmolLM2-135M-Instruct", max_rank=16,
                     base_config=json.loads((model_dir / "config.json").read_text()))  # fmt: skip


def test_dpo_runs(model_dir, tmp_path) -> None:
    from training.dpo import train_dpo

    pairs = [{"prompt": f"Give the number {i} as JSON.", "chosen": json.dumps({"n": i}),
              "rejected": f"The number is {i}."} for i in range(8)]  # fmt: skip
    write_jsonl(tmp_path / "raw.jsonl", pairs)
    prepare([tmp_path / "raw.jsonl"], tmp_path / "data")
    cfg = TrainConfig(base_model_dir=model_dir, max_steps=2, **SMALL)
    result = train_dpo(cfg, tmp_path / "data", tmp_path / "dpo", progress=False)
    assert result.report["method"] == "dpo" and result.report["steps"] == 2
    assert result.report["base_val_loss"] is not None  # held-out pairs are evaluated
    assert (result.adapter_dir / "adapter_config.json").is_file()


def test_dpo_adapter_is_evaluated_by_preference_accuracy(stack, model_dir, tmp_path) -> None:
    from training.dpo import train_dpo
    from training.evaluate import evaluate

    pairs = [
        {
            "prompt": f"Give the number {i} as JSON.",
            "chosen": json.dumps({"n": i}),
            "rejected": f"The number is {i}.",
        }
        for i in range(20)
    ]
    write_jsonl(tmp_path / "raw.jsonl", pairs)
    prepare([tmp_path / "raw.jsonl"], tmp_path / "data")
    cfg = TrainConfig(base_model_dir=model_dir, max_steps=2, **SMALL)
    result = train_dpo(cfg, tmp_path / "data", tmp_path / "dpo", progress=False)
    report = evaluate(
        result.adapter_dir,
        tmp_path / "data",
        model_dir,
        backend="server",
        vllm_url=stack.vllm_url,
        vllm_api_key=stack.vllm_key,
        general_limit=4,
    )
    assert report["kind"] == "dpo" and report["data"]["split"] == "preference_validation"
    pa = report["metrics"]["preference_accuracy"]
    assert report["data"]["examples"] == 2 and 0 <= pa["base"] <= 1 and 0 <= pa["adapter"] <= 1
    assert "preference_accuracy gain >= 0.05" in report["checks"]
    assert (tmp_path / "dpo" / "eval.md").is_file()


def test_resume_continues_from_the_checkpoint(model_dir, tmp_path) -> None:
    from training.sft import train_sft

    data = tmp_path / "data"
    data.mkdir()
    write_jsonl(data / "train.jsonl", json_task(16, seed=5))  # no validation: checkpoint every step
    first = TrainConfig(base_model_dir=model_dir, max_steps=2, save_steps=1, **SMALL)
    before = train_sft(first, data, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-2").is_dir()
    second = TrainConfig(base_model_dir=model_dir, max_steps=4, save_steps=1, **SMALL)
    resumed = train_sft(second, data, tmp_path / "run", resume=True, progress=False)
    assert resumed.report["steps"] == 4
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-4").is_dir()
    # Steps 1-2 come back from the checkpoint's state, identical; only steps 3-4 are new.
    assert [s for s, _ in resumed.report["train_loss"]] == [1, 2, 3, 4]
    assert resumed.report["train_loss"][:2] == before.report["train_loss"]


def test_bad_inputs_fail_before_training(model_dir, tmp_path) -> None:
    from training.sft import train_sft

    with pytest.raises(TrainingError, match="does not exist"):
        train_sft(TrainConfig(base_model_dir=tmp_path / "nope"), tmp_path, tmp_path / "o")
    with pytest.raises(TrainingError, match="train.jsonl is missing"):
        train_sft(TrainConfig(base_model_dir=model_dir), tmp_path, tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_cli_prepare_train_register(stack, model_dir, tmp_path) -> None:
    """The three commands a user runs, end to end through the real CLI: the gate evaluation
    generates on the test stack's vLLM server."""
    import os
    import subprocess
    import sys

    write_jsonl(tmp_path / "raw.jsonl", json_task(24, seed=8))
    env = {
        **os.environ,
        "LORAPLEX_DATA_DIR": str(tmp_path / "state"),
        "LORAPLEX_MODEL_DIR": str(model_dir),
        "LORAPLEX_VLLM_API_KEY": stack.vllm_key,
    }
    cli = [sys.executable, "-m", "serve.cli"]
    engine = ["--vllm-url", stack.vllm_url, "--general-limit", "4"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cli, *args], env=env, capture_output=True, text=True, timeout=600)

    prep = run(
        "data",
        "prepare",
        str(tmp_path / "raw.jsonl"),
        "--out",
        str(tmp_path / "ds"),
        "--dedup-threshold",
        "1.0",
    )
    assert prep.returncode == 0, prep.stderr
    trained = run("train", "--data", str(tmp_path / "ds"), "--out", str(tmp_path / "run"), "--max-steps", "1",
                  "--batch-size", "2", "--register", "cli-json", "--eval-limit", "3", *engine)  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert trained.stdout.strip().endswith("adapter")
    # Evaluated before registering: promoted only on GO, and it says which.
    assert "GO" in trained.stderr and "registered cli-json@1" in trained.stderr
    first_go = json.loads((tmp_path / "run" / "eval.json").read_text())["go"]
    assert ("(prod;" in trained.stderr) == first_go
    listed = run("adapters", "list")
    assert "cli-json" in listed.stdout
    # Evaluating the registered adapter's directory records the report on that version.
    evaluated = run("eval", str(tmp_path / "run" / "adapter"), "--data", str(tmp_path / "ds"),
                    "--limit", "3", *engine)  # fmt: skip
    assert evaluated.returncode in (0, 1), evaluated.stderr[-2000:]
    assert "recorded on cli-json@1" in evaluated.stderr
    go = json.loads(evaluated.stdout.strip().splitlines()[-1])["go"]
    assert evaluated.returncode == (0 if go else 1)
    promoted = run("adapters", "promote", "cli-json@1")
    assert (promoted.returncode == 0) == go, promoted.stderr
    bad = run(
        "train", "--data", str(tmp_path / "ds"), "--out", str(tmp_path / "r2"), "--rank", "64"
    )
    assert bad.returncode == 2 and "max LoRA rank" in bad.stderr


def test_auto_routes_task_prompts_to_the_trained_adapter(stack, sft_run) -> None:
    """After registration with exemplars, model=auto sends look-alike prompts to the adapter."""
    if not _registered(stack):  # when run on its own
        test_trained_adapter_is_served_by_vllm(stack, sft_run)
    client = stack.openai(stack.make_tenant("tr-acme"))
    question = json_task(1, seed=123)[0]["messages"][:1]
    routed = client.chat.completions.create(
        model="auto", messages=question, temperature=0, max_tokens=30
    )
    extra = routed.model_extra["loraplex"]
    assert extra["route"] == "adapter" and extra["adapter"].startswith("json-extract@")
    assert extra["scores"]["adapter_similarity"] >= 0.45
    other = client.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=8,
    )
    assert other.model_extra["loraplex"]["route"] == "prompt"


def _registered(stack) -> bool:
    return stack.state.services.registry.resolve_for_tenant("json-extract", "tr-acme") is not None


def test_a_killed_run_leaves_checkpoints_and_no_adapter_then_resumes(model_dir, tmp_path) -> None:
    """`loraplex train` killed (SIGKILL) mid-run: no adapter/ appears; --resume finishes it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    data, out = tmp_path / "data", tmp_path / "run"
    data.mkdir()
    write_jsonl(data / "train.jsonl", json_task(16, seed=7))  # no validation: checkpoint every step
    cfg = tmp_path / "train.yaml"
    cfg.write_text("save_steps: 1\nbatch_size: 4\nmax_length: 96\nlearning_rate: 0.001\n"
                   "rank: 8\nwarmup_ratio: 0.0\n")  # fmt: skip
    env = {**os.environ, "LORAPLEX_MODEL_DIR": str(model_dir),
           "LORAPLEX_DATA_DIR": str(tmp_path / "lpx")}  # fmt: skip
    cli = [sys.executable, "-m", "serve.cli", "train", "--data", str(data), "--out", str(out),
           "--config", str(cfg)]  # fmt: skip
    proc = subprocess.Popen([*cli, "--max-steps", "40"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not (out / "checkpoints" / "checkpoint-2" / "trainer_state.json").is_file():
            assert proc.poll() is None, "training ended before it could be interrupted"
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert not (out / "adapter").exists()
    done = subprocess.run([*cli, "--max-steps", "4", "--resume"], env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["steps"] == 4 and report["resumed_from"].startswith("checkpoint-")
    info = validate_adapter(out / "adapter", base_model="SmolLM2-135M-Instruct", max_rank=16)
    assert info.rank == 8
