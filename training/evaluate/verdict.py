"""Gates applied to measured numbers: one check per gate, and GO only when every check passes."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from training.errors import TrainingError
from training.evaluate.gates import Gates
from training.evaluate.metrics import HIGHER_IS_BETTER, Task

EPS = 1e-9  # 0.6 - 0.5 is 0.0999...: a gain equal to the gate passes
# A drop on the general set fails its gate only when it is also more than noise: the exact
# sign test on the items one model got right and the other wrong says so below this level.
SIGNIFICANCE = 0.05


@dataclass
class Check:
    """One gate against one number."""

    name: str  # readable: "key_match gain >= 0.1"
    metric: str  # the metric or general-set category it reads
    value: float
    threshold: float
    passed: bool
    note: str | None = None  # why a check passed or failed beyond value vs threshold

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def task_metric(gates: Gates, task: Task) -> str:
    """The metric the task is judged on (gates.task_metric, or the auto choice)."""
    if gates.task_metric != "auto":
        if gates.task_metric not in task.metrics():
            raise TrainingError(
                f"gate task_metric {gates.task_metric!r} is not measured on this task (measured: "
                f"{task.metrics()}); pick one of those or 'auto'",
                "invalid_gates",
            )
        return gates.task_metric
    if task.labels:
        return "label_accuracy"
    if task.schema is not None:
        return "schema_match"
    if task.json:
        return "key_match"
    return "token_f1"


def _at_least(name: str, metric: str, value: float, threshold: float) -> Check:
    return Check(name, metric, round(value, 6), threshold, value >= threshold - EPS)


def _at_most(name: str, metric: str, value: float, threshold: float) -> Check:
    return Check(name, metric, round(value, 6), threshold, value <= threshold + EPS)


def task_checks(
    gates: Gates, metric: str, base: dict[str, float], adapter: dict[str, float], task: Task
) -> list[Check]:
    """Task gates: gain and level on the task metric, answer loss, JSON validity."""
    checks = []
    if gates.min_task_gain is not None:
        checks.append(
            _at_least(
                f"{metric} gain >= {gates.min_task_gain:g}",
                metric,
                adapter[metric] - base[metric],
                gates.min_task_gain,
            )
        )
    if gates.min_task_score is not None:
        checks.append(
            _at_least(
                f"{metric} >= {gates.min_task_score:g}",
                metric,
                adapter[metric],
                gates.min_task_score,
            )
        )
    if (
        gates.min_loss_improvement is not None
        and "answer_loss" in adapter
        and base["answer_loss"] > 0
    ):
        drop = 1 - adapter["answer_loss"] / base["answer_loss"]
        checks.append(
            _at_least(
                f"answer loss lower by >= {gates.min_loss_improvement:.0%}",
                "answer_loss",
                drop,
                gates.min_loss_improvement,
            )
        )
    if gates.min_json_valid is not None and "json_valid" in adapter and (task.json or task.schema):
        checks.append(
            _at_least(
                f"json_valid >= {gates.min_json_valid:g}",
                "json_valid",
                adapter["json_valid"],
                gates.min_json_valid,
            )
        )
    return checks


def preference_checks(gates: Gates, base: float, adapter: float) -> list[Check]:
    """DPO gates: preference accuracy gain over base and level."""
    checks = []
    if gates.min_preference_gain is not None:
        checks.append(
            _at_least(
                f"preference_accuracy gain >= {gates.min_preference_gain:g}",
                "preference_accuracy",
                adapter - base,
                gates.min_preference_gain,
            )
        )
    if gates.min_preference_accuracy is not None:
        checks.append(
            _at_least(
                f"preference_accuracy >= {gates.min_preference_accuracy:g}",
                "preference_accuracy",
                adapter,
                gates.min_preference_accuracy,
            )
        )
    return checks


def _drop_check(name: str, metric: str, summary: dict[str, Any], threshold: float) -> Check:
    """At most `threshold` accuracy lost, unless the loss is within noise: with 8 items one
    answer is 0.125, so a drop fails only when the sign test also finds it significant."""
    check = _at_most(name, metric, summary["drop"], threshold)
    p = summary.get("p_value")
    if not check.passed and p is not None and p >= SIGNIFICANCE:
        check.passed = True
        check.note = (
            f"within noise: {summary['lost']} lost vs {summary['gained']} gained of "
            f"{summary['items']} items (p={p:.2f}); give more general items to gate it"
        )
    return check


def forgetting_checks(gates: Gates, general: dict[str, Any]) -> list[Check]:
    """General-set gates: the overall drop, and each category's (those with enough items to
    mean something; each category's summary gets `gated` saying whether it was). A drop
    fails only when it is both over the gate and more than noise (see `_drop_check`)."""
    checks = []
    if gates.max_general_drop is not None:
        checks.append(
            _drop_check(
                f"general accuracy drop <= {gates.max_general_drop:g}",
                "general",
                general["overall"],
                gates.max_general_drop,
            )
        )
    if gates.max_category_drop is not None:
        for cat, summary in general["categories"].items():
            summary["gated"] = summary["items"] >= (gates.min_category_items or 0)
            if not summary["gated"]:
                continue
            checks.append(
                _drop_check(
                    f"general/{cat} drop <= {gates.max_category_drop:g}",
                    f"general/{cat}",
                    summary,
                    gates.max_category_drop,
                )
            )
    return checks


def metric_table(
    base: dict[str, float], adapter: dict[str, float], checks: list[Check]
) -> dict[str, dict[str, Any]]:
    """Per metric: base, adapter, difference, the gates on it and whether they pass."""
    table = {}
    for name, value in adapter.items():
        mine = [c for c in checks if c.metric == name]
        table[name] = {
            "base": round(base[name], 6),
            "adapter": round(value, 6),
            "difference": round(value - base[name], 6),
            "higher_is_better": HIGHER_IS_BETTER.get(name, True),
            "gate": [c.name for c in mine] or None,
            "pass": all(c.passed for c in mine) if mine else None,
        }
    return table
