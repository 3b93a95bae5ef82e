"""A small hyperparameter sweep (rank x learning rate), best by validation loss."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from training.config import TrainConfig
from training.errors import TrainingError
from training.sft import train_sft


def sweep(base: TrainConfig, data_dir: Path, out_dir: Path, ranks: list[int], lrs: list[float],
          progress: bool = False) -> dict[str, Any]:  # fmt: skip
    """Train every (rank, lr) pair into out_dir/r{rank}-lr{lr}; write sweep.json; return it.

    alpha follows rank (alpha = 2 * rank) so the update scale stays comparable across ranks.
    Every config is checked before the first run starts, so a bad grid fails at once.
    """
    if not ranks or not lrs:
        raise TrainingError(
            "a sweep needs at least one rank and one learning rate", "invalid_config"
        )
    grid = [replace(base, rank=r, alpha=2 * r, learning_rate=lr) for r in ranks for lr in lrs]
    runs = []
    for cfg in grid:
        run_dir = Path(out_dir) / f"r{cfg.rank}-lr{cfg.learning_rate:g}"
        result = train_sft(cfg, data_dir, run_dir, progress=progress)
        runs.append({"rank": cfg.rank, "lr": cfg.learning_rate, "dir": str(run_dir),
                     "best_val_loss": result.report["best_val_loss"],
                     "last_train_loss": result.report["last_train_loss"],
                     "wall_s": result.report["wall_s"]})  # fmt: skip
    scored = [r for r in runs if r["best_val_loss"] is not None]
    best = min(scored, key=lambda r: r["best_val_loss"]) if scored else runs[-1]
    summary = {"runs": runs, "best": best, "selected_by": "best_val_loss" if scored else "last"}
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / "sweep.json").write_text(json.dumps(summary, indent=2))
    return summary


def results_table(summary: dict[str, Any]) -> Any:
    """A rich Table of the runs, best one starred."""
    from rich.table import Table

    table = Table("rank", "lr", "best val loss", "last train loss", "wall s", "run",
                  title="LoRA sweep (best by validation loss)")  # fmt: skip
    for r in summary["runs"]:
        star = " *" if r == summary["best"] else ""
        val = "-" if r["best_val_loss"] is None else f"{r['best_val_loss']:.4f}"
        table.add_row(str(r["rank"]), f"{r['lr']:g}", val + star, f"{r['last_train_loss']:.4f}",
                      str(r["wall_s"]), r["dir"])  # fmt: skip
    return table
