"""A small hyperparameter sweep (rank x learning rate), best by validation loss."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from training.config import TrainConfig
from training.sft import train_sft


def sweep(base: TrainConfig, data_dir: Path, out_dir: Path, ranks: list[int], lrs: list[float],
          progress: bool = False) -> dict[str, Any]:  # fmt: skip
    """Train every (rank, lr) pair into out_dir/r{rank}-lr{lr}; write sweep.json; return it."""
    runs = []
    for rank in ranks:
        for lr in lrs:
            cfg = replace(base, rank=rank, alpha=2 * rank, learning_rate=lr)
            run_dir = Path(out_dir) / f"r{rank}-lr{lr:g}"
            result = train_sft(cfg, data_dir, run_dir, progress=progress)
            runs.append({"rank": rank, "lr": lr, "dir": str(run_dir),
                         "best_val_loss": result.report["best_val_loss"],
                         "last_train_loss": result.report["last_train_loss"]})  # fmt: skip
    scored = [r for r in runs if r["best_val_loss"] is not None]
    best = min(scored, key=lambda r: r["best_val_loss"]) if scored else runs[-1]
    summary = {"runs": runs, "best": best}
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / "sweep.json").write_text(json.dumps(summary, indent=2))
    return summary
