import json
from types import SimpleNamespace

import pytest

from training.config import ALL_LINEAR, TrainConfig
from training.errors import TrainingError
from training.formats import to_prompt_completion
from training.report import val_summary
from training.run import finish, resume_point, save_adapter
from training.sweep import results_table


@pytest.mark.parametrize(
    ("bad", "message"),
    [({"rank": 0}, "rank must be 1..256, got 0"), ({"learning_rate": 5}, "learning_rate must be in"),
     ({"dropout": 1.5}, "dropout must be in"), ({"scheduler": "zigzag"}, "scheduler must be"),
     ({"target_modules": ["lm_head"]}, "cannot be served by vLLM"), ({"batch_size": 0}, "batch_size"),
     ({"max_length": 8}, "max_length"), ({"epochs": 0}, "epochs"), ({"max_steps": 0}, "max_steps"),
     ({"warmup_ratio": 1.0}, "warmup_ratio"), ({"grad_accum": 0}, "grad_accum"), ({"eval_steps": 0}, "eval_steps")],
)  # fmt: skip
def test_config_values_are_checked(bad, message) -> None:
    with pytest.raises(TrainingError, match=message) as err:
        TrainConfig(**bad)
    assert err.value.code == "invalid_config" and err.value.kind == "invalid"


def test_defaults_target_all_linear_projections_and_fields_carry_help() -> None:
    from dataclasses import fields

    cfg = TrainConfig()
    assert cfg.target_modules == ALL_LINEAR and cfg.rank == 8 and not cfg.qlora
    assert all(f.metadata.get("help") for f in fields(TrainConfig))


def test_yaml_layers_defaults_file_and_flags(tmp_path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("rank: 4\nlearning_rate: 0.001\nqlora: true\n")
    loaded = TrainConfig.from_yaml(cfg, defaults={"rank": 2, "seed": 9}, rank=8, epochs=None)
    assert (loaded.rank, loaded.learning_rate, loaded.qlora, loaded.seed) == (8, 0.001, True, 9)
    assert json.loads(json.dumps(loaded.to_dict()))["base_model_dir"] == str(loaded.base_model_dir)
    cfg.write_text("rnak: 4\n")
    with pytest.raises(TrainingError, match=r"unknown config keys \['rnak'\]"):
        TrainConfig.from_yaml(cfg)
    cfg.write_text("- 1\n- 2\n")
    with pytest.raises(TrainingError, match="must be a mapping"):
        TrainConfig.from_yaml(cfg)
    cfg.write_text("rank: [\n")
    with pytest.raises(TrainingError, match="cannot read config"):
        TrainConfig.from_yaml(cfg)


def test_last_assistant_turn_is_the_completion() -> None:
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"},
            {"role": "assistant", "content": "d"}]  # fmt: skip
    assert to_prompt_completion({"messages": msgs}) == {"prompt": msgs[:4], "completion": msgs[4:]}


def test_resume_without_a_checkpoint_says_so(tmp_path) -> None:
    assert resume_point(tmp_path, False) is None
    with pytest.raises(TrainingError, match="no checkpoint") as err:
        resume_point(tmp_path, True)
    assert err.value.code == "no_checkpoint"
    for step in (3, 10, 9, 11):
        ckpt = tmp_path / "checkpoints" / f"checkpoint-{step}"
        ckpt.mkdir(parents=True)
        if step != 11:  # 11 was cut short by a kill mid-save: no trainer_state.json
            (ckpt / "trainer_state.json").write_text("{}")
    assert resume_point(tmp_path, True).endswith("checkpoint-10")


class FakeModel:
    def __init__(self, fail: bool = False, extra: dict | None = None) -> None:
        self.fail, self.extra = fail, extra or {}

    def save_pretrained(self, path) -> None:
        path.mkdir(parents=True)
        (path / "adapter_config.json").write_text(
            json.dumps({"base_model_name_or_path": "/tmp/x", **self.extra})
        )
        if self.fail:
            raise KeyboardInterrupt
        (path / "adapter_model.safetensors").write_bytes(b"weights")


def test_adapter_is_written_atomically_with_the_served_base_name(tmp_path) -> None:
    final = save_adapter(FakeModel(), tmp_path / "adapter", "SmolLM2-135M-Instruct")
    assert (
        json.loads((final / "adapter_config.json").read_text())["base_model_name_or_path"]
        == "SmolLM2-135M-Instruct"
    )
    with pytest.raises(KeyboardInterrupt):
        save_adapter(FakeModel(fail=True), tmp_path / "adapter", "SmolLM2-135M-Instruct")
    assert (
        tmp_path / "adapter" / "adapter_model.safetensors"
    ).read_bytes() == b"weights"  # old one intact
    with pytest.raises(TrainingError, match="modules_to_save"):
        save_adapter(FakeModel(extra={"modules_to_save": ["lm_head"]}), tmp_path / "b", "base")
    assert not (tmp_path / "b").exists()


def test_sweep_table_marks_the_best_run() -> None:
    from rich.console import Console

    runs = [{"rank": 4, "lr": 1e-4, "dir": "r4", "best_val_loss": 1.5, "last_train_loss": 1.6, "wall_s": 3.0},
            {"rank": 8, "lr": 5e-4, "dir": "r8", "best_val_loss": 1.2, "last_train_loss": 1.1, "wall_s": 4.0}]  # fmt: skip
    console = Console(record=True, width=120)
    console.print(results_table({"runs": runs, "best": runs[1]}))
    text = console.export_text()
    assert "1.2000 *" in text and "1.5000 *" not in text


def test_yaml_values_are_coerced_to_their_field_types(tmp_path) -> None:
    cfg = tmp_path / "c.yaml"
    # YAML 1.1 reads 2e-4 (no dot) as a string; a single module is a plain string.
    cfg.write_text("learning_rate: 2e-4\ntarget_modules: q_proj\nrank: '16'\nepochs: 1\n")
    loaded = TrainConfig.from_yaml(cfg)
    assert (loaded.learning_rate, loaded.target_modules, loaded.rank) == (2e-4, ["q_proj"], 16)
    assert isinstance(loaded.epochs, float) and isinstance(loaded.rank, int)
    assert TrainConfig(target_modules="q_proj, v_proj").target_modules == ["q_proj", "v_proj"]
    for text, message in [("learning_rate: fast", "learning_rate must be a number, got 'fast'"),
                          ("rank: 2.5", "rank must be a whole number"), ("rank: true", "rank must be a number"),
                          ("qlora: maybe", "qlora must be true or false"),
                          ("target_modules: [1]", "target_modules must be a list of names")]:  # fmt: skip
        cfg.write_text(text + "\n")
        with pytest.raises(TrainingError, match=message) as err:
            TrainConfig.from_yaml(cfg)
        assert err.value.code == "invalid_config"


class FakeTrainer:
    """What `finish` uses of a TRL trainer: a run whose validation loss only gets worse."""

    def __init__(self) -> None:
        self.model = FakeModel()
        self.eval_dataset = ["validation rows"]
        self.state = SimpleNamespace(log_history=[], global_step=0, num_input_tokens_seen=40)

    def evaluate(self) -> dict:
        return {"eval_loss": 1.0}

    def train(self, resume_from_checkpoint=None) -> None:
        self.state.global_step = 4
        self.state.log_history = [{"step": 1, "loss": 2.0}, {"step": 2, "eval_loss": 1.5},
                                  {"step": 4, "loss": 1.8}, {"step": 4, "eval_loss": 1.3}]  # fmt: skip


def test_best_validation_loss_comes_from_trained_steps_only(tmp_path) -> None:
    (tmp_path / "data").mkdir()
    cfg = TrainConfig(base_model_name="base")
    result = finish(FakeTrainer(), cfg, tmp_path / "data", tmp_path / "run", "sft", False, [])
    report = result.report
    assert (report["base_val_loss"], report["best_val_loss"]) == (1.0, 1.3)
    assert report["val_loss"] == [(2, 1.5), (4, 1.3)]
    assert (
        "1.0 untrained (step 0), 1.3 best after training"
        in (tmp_path / "run" / "report.md").read_text()
    )
    assert (tmp_path / "run" / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert val_summary(None, []) == {"base_val_loss": None, "best_val_loss": None}


def test_config_fields_give_every_option_its_type_default_and_help() -> None:
    from dataclasses import dataclass, field, fields
    from typing import get_args

    from training.config import config_fields
    from training.curation import PrepareConfig

    for cls in (TrainConfig, PrepareConfig):
        described = config_fields(cls)
        assert [f.name for f in described] == [f.name for f in fields(cls)]
        assert all(f.help for f in described)
        cls(**{f.name: f.default for f in described})  # the defaults make a valid config
    train = {f.name: f for f in config_fields(TrainConfig)}
    assert (train["rank"].type, train["rank"].default) == (int, 8)
    assert (train["target_modules"].type, train["target_modules"].default) == (
        list[str],
        ALL_LINEAR,
    )
    assert train["threads"].default == 0 and "CPU threads" in train["threads"].help
    prep = {f.name: f for f in config_fields(PrepareConfig)}
    assert get_args(prep["pii"].type) == ("redact", "drop", "keep")
    assert prep["dedup_threshold"].default == 0.8

    @dataclass
    class Undocumented:
        x: int = field(default=1)

    with pytest.raises(TypeError, match="Undocumented.x has no help text"):
        config_fields(Undocumented)
