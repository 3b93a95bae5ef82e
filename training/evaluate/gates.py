"""Go / no-go gates, fixed before training and carried with the data and the run.

`loraplex data prepare --gates gates.yaml` records them in the dataset's manifest.json, training
copies them into the run's report.json, and evaluation applies what was recorded, so the bar an
adapter must clear cannot be moved after its numbers are known without it showing: an override
at evaluation time is reported as such, with every changed field. A gate set to null is off.

    task_metric: auto          # or exact_match, token_f1, rouge_l, label_accuracy, ...
    min_task_gain: 0.10
    max_category_drop: 0.15
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from training.errors import TrainingError

TASK_METRICS = (
    "auto",
    "exact_match",
    "token_f1",
    "rouge_l",
    "label_accuracy",
    "json_valid",
    "key_match",
    "schema_match",
)


def _gate(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class Gates:
    """What an adapter must show against the base model to be promoted."""

    task_metric: str = _gate(
        "auto",
        "the metric the task is judged on; auto: label_accuracy for a small label set, "
        "schema_match for JSON with a schema, key_match for JSON, else token_f1",
    )
    min_task_gain: float | None = _gate(
        0.10, "the adapter's task_metric minus the base's must reach this (0..1 scale)"
    )
    min_task_score: float | None = _gate(
        None, "the adapter's task_metric must reach this absolute level (0..1)"
    )
    min_loss_improvement: float | None = _gate(
        0.05, "relative drop of the answer loss vs base (0.05: 5% lower)"
    )
    min_json_valid: float | None = _gate(
        None, "JSON tasks: share of adapter answers that parse as JSON, at least"
    )
    max_general_drop: float | None = _gate(
        0.05, "general set: overall accuracy may fall by at most this vs base (absolute)"
    )
    max_category_drop: float | None = _gate(
        0.15, "general set: each category's accuracy may fall by at most this (absolute)"
    )
    min_category_items: int | None = _gate(
        20, "categories with fewer general items are reported but not gated (too noisy)"
    )
    min_preference_gain: float | None = _gate(
        0.05, "DPO: preference accuracy (chosen scored above rejected) gain over base"
    )
    min_preference_accuracy: float | None = _gate(
        None, "DPO: the adapter's preference accuracy must reach this (0..1)"
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name != "task_metric":
                setattr(self, f.name, _number(f.name, getattr(self, f.name)))
        if self.min_category_items is not None:
            if not float(self.min_category_items).is_integer():
                raise TrainingError(
                    f"min_category_items must be a whole number, got {self.min_category_items}",
                    "invalid_gates",
                )
            self.min_category_items = int(self.min_category_items)
        if self.task_metric not in TASK_METRICS:
            raise TrainingError(
                f"task_metric must be one of {list(TASK_METRICS)}, got {self.task_metric!r}",
                "invalid_gates",
            )
        ranges = {
            "min_task_gain": (-1, 1),
            "min_task_score": (0, 1),
            "min_loss_improvement": (-1, 0.99),
            "min_json_valid": (0, 1),
            "max_general_drop": (0, 1),
            "max_category_drop": (0, 1),
            "min_category_items": (0, 100_000),
            "min_preference_gain": (-1, 1),
            "min_preference_accuracy": (0, 1),
        }
        for name, (lo, hi) in ranges.items():
            value = getattr(self, name)
            if value is not None and not lo <= value <= hi:
                raise TrainingError(
                    f"{name} must be between {lo} and {hi} (or null to turn it off), got {value}",
                    "invalid_gates",
                )

    @classmethod
    def from_dict(cls, data: Any, where: str = "gates") -> Gates:
        """Gates from a mapping; unknown keys are an error that lists the known ones."""
        if not isinstance(data, dict):
            raise TrainingError(f"{where} must be a mapping of gate: value", "invalid_gates")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise TrainingError(
                f"{where}: unknown gates {unknown}; known: {known}", "invalid_gates"
            )
        try:
            return cls(**data)
        except TrainingError as exc:
            raise TrainingError(f"{where}: {exc.message}", exc.code) from None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)

    def differences(self, other: Gates) -> dict[str, dict[str, Any]]:
        """Fields where `other` differs: {field: {"recorded": self's, "override": other's}}."""
        mine, theirs = self.to_dict(), other.to_dict()
        return {
            k: {"recorded": mine[k], "override": theirs[k]} for k in mine if mine[k] != theirs[k]
        }


def _number(name: str, value: Any) -> float | None:
    # YAML 1.1 reads `1e-1` as a string; a bool is an int to Python but never a threshold.
    if value is None:
        return None
    if isinstance(value, bool):
        raise TrainingError(f"{name} must be a number or null, got {value!r}", "invalid_gates")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TrainingError(
            f"{name} must be a number or null, got {value!r}", "invalid_gates"
        ) from None


def gates_help() -> dict[str, str]:
    """Each gate's help text, for `--help` and docs."""
    return {f.name: f.metadata["help"] for f in fields(Gates)}


def load_gates(path: Path) -> Gates:
    """Gates from a YAML or JSON file (YAML reads JSON too); TrainingError naming the problem."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise TrainingError(
            f"cannot read gates file {path}: {exc.strerror}",
            "invalid_gates",
            "not_found" if isinstance(exc, FileNotFoundError) else "invalid",
        ) from None
    except yaml.YAMLError as exc:
        raise TrainingError(
            f"gates file {path} is not valid YAML/JSON: {exc}", "invalid_gates"
        ) from None
    return Gates.from_dict(data or {}, f"gates file {path}")


@dataclass
class ResolvedGates:
    """The gates an evaluation applies and where they came from."""

    gates: Gates
    source: str  # run, dataset, defaults or override
    path: str | None = None  # the file they were read from (run/dataset)
    overridden: dict[str, dict[str, Any]] = field(default_factory=dict)
    recorded_source: str | None = None  # with an override: where the replaced gates came from

    def describe(self) -> dict[str, Any]:
        """The report's view: values, source, file and any overridden fields."""
        out = {"values": self.gates.to_dict(), "source": self.source, "path": self.path}
        if self.source == "override":
            out |= {"overridden": self.overridden, "recorded_source": self.recorded_source}
        return out


def recorded_gates(adapter_dir: Path, data_dir: Path | None) -> ResolvedGates:
    """The gates fixed before training: the run's report.json beside the adapter, else the
    dataset's manifest.json, else the defaults."""
    candidates = [("run", Path(adapter_dir).parent / "report.json")]
    if data_dir is not None:
        candidates.append(("dataset", Path(data_dir) / "manifest.json"))
    for source, path in candidates:
        if not path.is_file():
            continue
        try:
            recorded = json.loads(path.read_text()).get("gates")
        except (json.JSONDecodeError, AttributeError):
            raise TrainingError(f"{path} is not a JSON object", "invalid_report") from None
        if recorded is not None:
            return ResolvedGates(Gates.from_dict(recorded, f"gates in {path}"), source, str(path))
    return ResolvedGates(Gates(), "defaults")


def resolve_gates(
    adapter_dir: Path, data_dir: Path | None, override: Gates | dict[str, Any] | None = None
) -> ResolvedGates:
    """The recorded gates, or `override` on top of them (a whole Gates or changed fields)."""
    recorded = recorded_gates(adapter_dir, data_dir)
    if override is None:
        return recorded
    if isinstance(override, Gates):
        new = override
    else:
        new = Gates.from_dict({**recorded.gates.to_dict(), **override}, "gate override")
    return ResolvedGates(
        new, "override", recorded.path, recorded.gates.differences(new), recorded.source
    )
