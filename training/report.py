"""Training reports: JSON + Markdown, and a loss-curve PNG people can glance at."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def losses(
    log_history: list[dict[str, Any]],
) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(step, train loss) and (step, validation loss) pairs from a Trainer's log history."""
    train = [(int(e["step"]), float(e["loss"])) for e in log_history if "loss" in e and "step" in e]
    val = [(int(e["step"]), float(e["eval_loss"])) for e in log_history if "eval_loss" in e]
    return train, val


def val_summary(base: float | None, val: list[tuple[int, float]]) -> dict[str, float | None]:
    """The untrained model's validation loss and the best one after training.

    The step-0 loss stays out of the best: a run that only got worse must not report the base
    model's loss as its best (sweeps pick runs by it).
    """
    return {"base_val_loss": base, "best_val_loss": min((v for _, v in val), default=None)}


def plot_losses(
    train: list[tuple[int, float]], val: list[tuple[int, float]], path: Path, title: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        ax.plot(*zip(*train, strict=True), label="train", color="#4C72B0", alpha=0.8)
    if val:
        ax.plot(*zip(*val, strict=True), "o-", label="validation", color="#DD8452")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(out_dir: Path, report: dict[str, Any]) -> None:
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=str))
    cfg = report.get("config", {})
    lines = [
        f"# Training report: {report.get('method', 'sft')}",
        "",
        f"- base model: `{cfg.get('base_model_name')}` ({cfg.get('base_model_dir')})",
        f"- dataset digest: `{report.get('dataset_digest')}`",
        f"- steps: {report.get('steps')}, wall time {report.get('wall_s')} s, "
        f"{report.get('tokens_per_s')} tokens/s",
        f"- first / last train loss: {report.get('first_train_loss')} / {report.get('last_train_loss')}",
        f"- validation loss: {report.get('base_val_loss')} untrained (step 0), "
        f"{report.get('best_val_loss')} best after training",
        "",
        "![loss](loss.png)",
        "",
        "## Config",
        "",
        "| key | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in cfg.items()]
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
