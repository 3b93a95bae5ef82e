"""The shell in the train Job and vLLM's init container, run with sh against a stand-in
`loraplex` that records its calls: resume, the NO-GO gate, the optional tenant, the model wait."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

FAKE_LORAPLEX = """#!/bin/sh
echo "$*" >> "$CALLS"
case "$1" in
  eval) exit "${EVAL_RC:-0}" ;;
esac
exit 0
"""


def _script(docs: list[dict[str, Any]], kind: str, name: str, container: str) -> str:
    workload = next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)
    spec = workload["spec"]["template"]["spec"]
    c = next(
        c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == container
    )
    assert c["command"][:2] == ["sh", "-c"]
    return c["command"][2]


def _run_train(rendered, tmp_path: Path, **env: str) -> tuple[int, list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "loraplex"
    fake.write_text(FAKE_LORAPLEX)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    calls = tmp_path / "calls"
    calls.write_text("")
    full_env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "CALLS": str(calls),
        "ADAPTER_NAME": "support",
        "ADAPTER_TENANT": "",
        "DATASET_DIR": "/data/datasets/support",
        "RUN_DIR": str(tmp_path / "run"),
        **env,
    }
    script = _script(rendered["gpu"], "Job", "train", "train")
    result = subprocess.run(["sh", "-c", script], env=full_env, capture_output=True, text=True)
    return result.returncode, calls.read_text().splitlines()


def test_a_go_run_trains_evaluates_and_registers_without_promoting(rendered, tmp_path) -> None:
    rc, calls = _run_train(rendered, tmp_path)
    run = tmp_path / "run"
    assert rc == 0
    assert calls == [
        f"train --data /data/datasets/support --out {run} --config /etc/loraplex/train.yaml",
        f"eval {run}/adapter --data /data/datasets/support",
        f"adapters register {run}/adapter --name support --no-promote",
    ]


def test_a_no_go_evaluation_stops_before_registering(rendered, tmp_path) -> None:
    rc, calls = _run_train(rendered, tmp_path, EVAL_RC="1")
    assert rc == 42  # the podFailurePolicy's FailJob code: no retry of a NO-GO run
    assert [c.split()[0] for c in calls] == ["train", "eval"]


def test_an_eval_error_is_retried_not_gated(rendered, tmp_path) -> None:
    rc, calls = _run_train(rendered, tmp_path, EVAL_RC="2")
    assert rc == 2 and len(calls) == 2


def test_a_retry_resumes_from_the_last_checkpoint_and_names_the_tenant(rendered, tmp_path) -> None:
    checkpoint = tmp_path / "run" / "checkpoints" / "checkpoint-20"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text("{}")
    rc, calls = _run_train(rendered, tmp_path, ADAPTER_TENANT="acme")
    assert rc == 0
    assert calls[0].endswith("--config /etc/loraplex/train.yaml --resume")
    assert calls[2].endswith("--name support --tenant acme --no-promote")


@pytest.mark.parametrize("present", [True, False])
def test_vllm_waits_for_the_model(rendered, tmp_path, present) -> None:
    script = _script(rendered["cpu"], "StatefulSet", "vllm", "wait-for-model")
    model = tmp_path / "model"
    model.mkdir()
    if present:
        (model / "config.json").write_text("{}")
    # One try instead of 360, no sleeping: the loop's logic, not its patience, is under test.
    script = script.replace("seq 1 360", "seq 1 1").replace("sleep 5", "true")
    env = {"PATH": os.environ["PATH"], "LORAPLEX_MODEL_DIR": str(model)}
    result = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True)
    assert result.returncode == (0 if present else 1)
    if not present:
        assert "no model at" in result.stderr
