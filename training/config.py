"""The training config: one typed object, loadable from YAML, checked before any work starts."""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple, get_type_hints

import yaml

from training.errors import TrainingError


class ConfigField(NamedTuple):
    """One documented field of a config dataclass, as a CLI option needs it."""

    name: str
    type: Any  # the resolved annotation: int, float, bool, str, Path, list[str], a Literal
    default: Any
    help: str


def config_fields(cls: type) -> list[ConfigField]:
    """Name, type, default and help of every field of config dataclass `cls`, in order.

    A field without help text or a default is an error: a CLI derives its options from these.
    """
    hints = get_type_hints(cls)
    out = []
    for f in fields(cls):
        if f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()
        else:
            raise TypeError(f"{cls.__name__}.{f.name} has no default")
        if not f.metadata.get("help"):
            raise TypeError(f"{cls.__name__}.{f.name} has no help text")
        out.append(ConfigField(f.name, hints[f.name], default, f.metadata["help"]))
    return out


ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class TrainConfig:
    """LoRA / QLoRA / DPO fine-tuning of the served base model."""

    base_model_dir: Path = field(default=Path("data/models/SmolLM2-135M-Instruct"),
                                 metadata={"help": "local Hugging Face model directory"})  # fmt: skip
    base_model_name: str = field(default="SmolLM2-135M-Instruct",
                                 metadata={"help": "name recorded in adapter_config.json"})  # fmt: skip
    rank: int = field(default=8, metadata={"help": "LoRA rank r (<= the server's max LoRA rank)"})
    alpha: int = field(default=16, metadata={"help": "LoRA alpha; scale = alpha / rank"})
    dropout: float = field(default=0.05, metadata={"help": "LoRA dropout"})
    target_modules: list[str] = field(default_factory=lambda: list(ALL_LINEAR),
                                      metadata={"help": "projections to adapt (vLLM serves these)"})  # fmt: skip
    learning_rate: float = field(default=2e-4, metadata={"help": "peak learning rate"})
    scheduler: str = field(default="cosine", metadata={"help": "linear, cosine or constant"})
    warmup_ratio: float = field(default=0.05, metadata={"help": "fraction of steps warming up"})
    epochs: float = field(default=2.0, metadata={"help": "passes over the training split"})
    max_steps: int = field(default=-1, metadata={"help": "stop after this many steps (-1: epochs)"})
    batch_size: int = field(default=8, metadata={"help": "examples per device step"})
    grad_accum: int = field(default=1, metadata={"help": "steps per optimizer update"})
    max_length: int = field(default=512, metadata={"help": "tokens per example (truncated)"})
    seed: int = field(default=0, metadata={"help": "seed for data order and LoRA init"})
    eval_steps: int = field(default=20, metadata={"help": "validation loss every N steps"})
    save_steps: int = field(
        default=20,
        metadata={
            "help": "checkpoint every N steps (every eval_steps when there is a validation split)"
        },
    )
    early_stopping_patience: int = field(
        default=3, metadata={"help": "stop after this many validations without improvement"}
    )
    qlora: bool = field(default=False, metadata={"help": "4-bit nf4 base (bitsandbytes)"})
    packing: bool = field(
        default=False,
        metadata={
            "help": "padding-free batches: a batch's examples in one row, attention kept apart"
        },
    )
    dpo_beta: float = field(default=0.1, metadata={"help": "DPO temperature"})
    # torch's default is one thread per core, which is fastest on a machine to itself; where
    # other processes keep the cores busy, threads that wait for each other lose far more.
    threads: int = field(
        default=0,
        metadata={
            "help": "CPU threads (0: one per CPU this process "
            "may use); fewer on a machine others keep busy"
        },
    )

    def __post_init__(self) -> None:
        # YAML 1.1 reads `2e-4` as a string and `target_modules: q_proj` as one string; turn
        # each value into its field's declared type first, so the checks below compare numbers.
        hints = get_type_hints(type(self))
        for f in fields(self):
            setattr(self, f.name, _coerce(f.name, getattr(self, f.name), hints[f.name]))
        checks = [
            (1 <= self.rank <= 256, f"rank must be 1..256, got {self.rank}"),
            (self.alpha >= 1, f"alpha must be >= 1, got {self.alpha}"),
            (0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}"),
            (0 < self.learning_rate < 1, f"learning_rate must be in (0, 1), got {self.learning_rate}"),
            (self.scheduler in ("linear", "cosine", "constant"),
             f"scheduler must be linear, cosine or constant, got {self.scheduler!r}"),
            (0 <= self.warmup_ratio < 1, f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}"),
            (self.epochs > 0, f"epochs must be > 0, got {self.epochs}"),
            (self.max_steps == -1 or self.max_steps >= 1, "max_steps must be -1 or >= 1"),
            (1 <= self.batch_size <= 1024, f"batch_size must be 1..1024, got {self.batch_size}"),
            (self.grad_accum >= 1, f"grad_accum must be >= 1, got {self.grad_accum}"),
            (32 <= self.max_length <= 32768, f"max_length must be 32..32768, got {self.max_length}"),
            (self.eval_steps >= 1 and self.save_steps >= 1, "eval_steps and save_steps must be >= 1"),
            (bool(self.target_modules), "target_modules must not be empty"),
            (self.dpo_beta > 0, "dpo_beta must be > 0"),
            (self.threads >= 0, f"threads must be >= 0, got {self.threads}"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise TrainingError(message, "invalid_config")
        unknown = sorted(set(self.target_modules) - set(ALL_LINEAR))
        if unknown:
            raise TrainingError(
                f"target_modules {unknown} cannot be served by vLLM as LoRA; use {ALL_LINEAR}",
                "invalid_config",
            )

    @classmethod
    def from_yaml(
        cls, path: Path, defaults: dict[str, Any] | None = None, **overrides: Any
    ) -> TrainConfig:
        """Load a YAML file of fields over `defaults`, then apply non-None `overrides`.

        Unknown keys are an error naming the known ones.
        """
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise TrainingError(f"cannot read config {path}: {exc}", "invalid_config") from None
        known = {f.name for f in fields(cls)}
        if not isinstance(data, dict):
            raise TrainingError(
                f"config {path} must be a mapping of field: value", "invalid_config"
            )
        unknown = sorted(set(data) - known)
        if unknown:
            raise TrainingError(
                f"unknown config keys {unknown}; known: {sorted(known)}", "invalid_config"
            )
        set_flags = {k: v for k, v in overrides.items() if v is not None}
        try:
            return cls(**{**(defaults or {}), **data, **set_flags})
        except TypeError as exc:
            raise TrainingError(f"config {path}: {exc}", "invalid_config") from None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (paths as strings), for reports and lineage."""
        out = asdict(self)
        out["base_model_dir"] = str(self.base_model_dir)
        return out


def _coerce(name: str, value: Any, kind: Any) -> Any:
    """`value` as type `kind` (int, float, bool, str, Path or list[str]); TrainingError if not."""

    def bad(expected: str) -> TrainingError:
        return TrainingError(f"{name} must be {expected}, got {value!r}", "invalid_config")

    if kind is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if kind in (int, float):
        if isinstance(value, bool):  # bool is an int subclass; `rank: true` is a mistake
            raise bad("a number")
        try:
            number = float(value) if isinstance(value, str) else value
        except ValueError:
            raise bad("a number") from None
        if not isinstance(number, int | float):
            raise bad("a number")
        if kind is float:
            return float(number)
        if isinstance(number, float) and not number.is_integer():
            raise bad("a whole number")
        return int(number)
    if kind == list[str]:
        if isinstance(value, str):  # one name, or names separated by commas
            return [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise bad("a list of names")
        return list(value)
    if kind is Path:
        if not isinstance(value, str | Path):
            raise bad("a path")
        return Path(value)
    if kind is str and not isinstance(value, str):
        raise bad("a string")
    return value
