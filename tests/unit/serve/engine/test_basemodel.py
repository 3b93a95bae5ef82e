"""Base-model preparation never overwrites a model loraplex did not write."""

import json

import pytest
from typer.testing import CliRunner

from serve.cli import app
from serve.engine.basemodel import MARKER, ModelError, pull


def test_pull_refuses_a_directory_it_did_not_write(tmp_path) -> None:
    mine = tmp_path / "my-model"
    mine.mkdir()
    (mine / "config.json").write_text("{}")
    (mine / "model.safetensors").write_bytes(b"precious")
    with pytest.raises(ModelError, match="refusing to overwrite"):
        pull(mine, force=True, log=lambda _: None)
    assert (mine / "model.safetensors").read_bytes() == b"precious"


def test_pull_skips_a_prepared_directory(tmp_path) -> None:
    done = tmp_path / "m"
    done.mkdir()
    (done / "config.json").write_text("{}")
    (done / MARKER).write_text(json.dumps({"weights_sha256": ""}))
    said: list[str] = []
    assert pull(done, log=said.append) == done
    assert "already prepared" in said[0]


def test_models_pull_uses_a_configured_model_as_it_is(tmp_path, monkeypatch) -> None:
    mine = tmp_path / "my-model"
    mine.mkdir()
    (mine / "config.json").write_text("{}")
    monkeypatch.setenv("LORAPLEX_MODEL_DIR", str(mine))
    monkeypatch.setenv("LORAPLEX_DATA_DIR", str(tmp_path / "data"))
    result = CliRunner().invoke(app, ["models", "pull", "--force"])
    assert result.exit_code == 0, result.output
    assert str(mine) in result.output and sorted(p.name for p in mine.iterdir()) == ["config.json"]
