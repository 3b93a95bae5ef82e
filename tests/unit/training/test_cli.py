"""`loraplex data prepare` and `loraplex train` refuse bad requests before doing the work."""

import json

import pytest
from typer.testing import CliRunner

from serve.cli import app


@pytest.fixture
def env(tmp_path, monkeypatch, write_rows, make_chat):
    monkeypatch.setenv("LORAPLEX_DATA_DIR", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    write_rows(tmp_path / "raw.jsonl", [make_chat(f"Question {i} zz{i}?", f"Answer {i}.") for i in range(20)])  # fmt: skip

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr("training.sft.train_sft", no_training)
    return tmp_path


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_prepare_refuses_a_directory_of_user_files(env) -> None:
    (env / "data").mkdir()
    (env / "data" / "raw2.jsonl").write_text("{}\n")
    result = invoke("data", "prepare", "raw.jsonl", "--out", "data")
    assert result.exit_code == 2 and "choose another --out" in result.output
    assert (env / "data" / "raw2.jsonl").is_file()
    result = invoke("data", "prepare", "raw.jsonl", "--out", ".")
    assert result.exit_code == 2 and "current directory" in result.output


def test_mix_ratio_needs_mix_and_mix_alone_mixes(env, write_rows, make_chat) -> None:
    result = invoke("data", "prepare", "raw.jsonl", "--out", "ds", "--mix-ratio", "0.5")
    assert result.exit_code == 2 and "--mix-ratio needs --mix" in result.output
    write_rows(env / "general.jsonl", [make_chat(f"General g{i} kappa{i}", f"Ok g{i}.") for i in range(10)])  # fmt: skip
    result = invoke("data", "prepare", "raw.jsonl", "--out", "ds", "--mix", "general.jsonl")
    assert result.exit_code == 0, result.output
    assert json.loads((env / "ds" / "manifest.json").read_text())["mix"]["examples"] == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--register", "Bad Name"], "is invalid"),
     (["--register", "support-v2"], "is invalid"),
     (["--register", "support", "--tenant", "ghost"], "no tenant named 'ghost'"),
     (["--tenant", "acme"], "does nothing without it")],
)  # fmt: skip
def test_train_checks_registration_before_training(env, args, message) -> None:
    result = invoke("train", "--data", "ds", "--out", "run", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "training started" not in repr(result.exception)


def test_a_name_owned_by_someone_else_is_refused(tmp_path, make) -> None:
    from serve.errors import ServiceError
    from serve.services import Services
    from serve.settings import Settings

    svc = Services(Settings(data_dir=tmp_path / "s", base_model="tiny-base"))
    svc.tenants.create("acme")
    svc.tenants.create("other")
    admin = svc.adapters
    admin.check_registrable("support", "acme")  # a free name
    svc.registry.register(make(tmp_path / "a"), "support", owner=svc.tenants.get("acme").id)
    admin.check_registrable("support", "acme")  # a new version of its own
    for tenant in ("other", None):
        with pytest.raises(ServiceError, match="is taken"):
            admin.check_registrable("support", tenant)


def test_base_model_flag_trains_on_another_local_model(env, monkeypatch) -> None:
    from training.errors import TrainingError

    seen = {}

    def capture(cfg, data, out, **kwargs):
        seen["cfg"] = cfg
        raise TrainingError("stop here", "test")

    monkeypatch.setattr("training.sft.train_sft", capture)
    mine = env / "models" / "Tiny-Chat"
    result = invoke("train", "--data", "ds", "--out", "run", "--base-model", str(mine))
    assert result.exit_code == 2 and "stop here" in result.output, result.output
    assert seen["cfg"].base_model_dir == mine and seen["cfg"].base_model_name == "Tiny-Chat"
