"""Per-path evaluation tables: how each serving path answered the same questions, and which
path served each question best.

The runner (the CLI) asks every question through each path (prompt, rag, adapter, combined)
and hands the answers here. Output, for people and for router calibration:

- per_path.json: accuracy and mean score per path, how often each path was best, mean
  grounding where given, and one row per question;
- best_paths.jsonl: one line per question, `{"prompt", "route", "scores", "id"}`.

The best path is the one with the highest score; ties go to the cheapest path, in the order
prompt < rag < adapter < combined (no retrieval and no adapter beats either when as good).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from training.errors import TrainingError
from training.evaluate.items import Item, score_answer
from training.evaluate.metrics import mean

PATHS = ("prompt", "rag", "adapter", "combined")  # cheapest first


def _check(
    items: list[Item],
    answers: dict[str, list[str | None]],
    grounded: dict[str, list[float | None]] | None,
) -> None:
    unknown = sorted(set(answers) - set(PATHS))
    if not answers or unknown:
        raise TrainingError(
            f"answers must be keyed by paths in {list(PATHS)}, got {sorted(answers)}",
            "invalid_paths",
        )
    lengths = [(k, len(v)) for k, v in answers.items()]
    lengths += [(k, len(v)) for k, v in (grounded or {}).items()]
    for name, count in lengths:
        if count != len(items):
            raise TrainingError(
                f"path {name!r} has {count} values for {len(items)} questions",
                "invalid_paths",
            )
    extra = sorted(set(grounded or {}) - set(answers))
    if extra:
        raise TrainingError(f"grounding given for paths without answers: {extra}", "invalid_paths")


def best_path(scores: dict[str, float]) -> str:
    """The highest-scoring path; ties go to the cheapest."""
    order = [p for p in PATHS if p in scores]
    return max(order, key=lambda p: (scores[p], -order.index(p)))


def build_path_table(
    items: list[Item],
    answers: dict[str, list[str | None]],
    grounded: dict[str, list[float | None]] | None = None,
) -> dict[str, Any]:
    """Score every path's answer to every question; summarise per path; pick each best path.

    `answers[path][i]` answers `items[i]` (None: the path was not run for it, e.g. rag with no
    documents); `grounded[path][i]` is the response's grounding score (0..1), when known.
    """
    _check(items, answers, grounded)
    paths = [p for p in PATHS if p in answers]
    rows = []
    for i, item in enumerate(items):
        scores, correct, given = {}, {}, {}
        for p in paths:
            answer = answers[p][i]
            if answer is None:
                continue
            result = score_answer(item, answer)
            scores[p], correct[p], given[p] = result["score"], result["correct"], answer
        row: dict[str, Any] = {
            "id": item.id,
            "question": item.question,
            "expected": item.reference(),
            "answers": given,
            "scores": scores,
            "correct": correct,
            "best": best_path(scores) if scores else None,
        }
        if grounded:
            row["grounded"] = {p: grounded[p][i] for p in grounded if p in scores}
        rows.append(row)
    summary = {}
    for p in paths:
        mine = [r for r in rows if p in r["scores"]]
        entry: dict[str, Any] = {
            "answered": len(mine),
            "accuracy": round(mean([float(r["correct"][p]) for r in mine]), 4),
            "mean_score": round(mean([r["scores"][p] for r in mine]), 4),
            "best": sum(r["best"] == p for r in rows),
        }
        if grounded and p in grounded:
            values = [g for g in grounded[p] if g is not None]
            entry["grounded_mean"] = round(mean(values), 4) if values else None
        summary[p] = entry
    return {"questions": len(items), "order": list(PATHS), "paths": summary, "rows": rows}


def write_path_table(table: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write per_path.json and best_paths.jsonl into `out_dir`; their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    per_path, best = out_dir / "per_path.json", out_dir / "best_paths.jsonl"
    per_path.write_text(json.dumps(table, indent=2, ensure_ascii=False))
    with best.open("w", encoding="utf-8") as fh:
        for row in table["rows"]:
            if row["best"] is None:
                continue
            line = {
                "prompt": row["question"],
                "route": row["best"],
                "scores": row["scores"],
                "id": row["id"],
            }
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")
    return {"per_path": per_path, "best_paths": best}
