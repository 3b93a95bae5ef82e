"""`loraplex eval`: adapters against their base model, gated by thresholds fixed before training.

Entry points (the CLI calls these; they take parameters, not settings):

- `evaluate(adapter_dir, data_dir, base_model_dir, **options)`: SFT or DPO, as the run was
  trained; `evaluate_adapter` / `evaluate_preference` for one kind explicitly.
- `load_gates(path)`, `Gates`, `resolve_gates(adapter_dir, data_dir, override)`: the gates.
- `load_questions(path)`, `score_answer(item, answer)`, `build_path_table(items, answers,
  grounded)`, `write_path_table(table, out_dir)`: per-path evaluation pieces.
"""

from training.evaluate.gates import Gates, ResolvedGates, gates_help, load_gates, resolve_gates
from training.evaluate.items import Item, load_questions, score_answer
from training.evaluate.paths import PATHS, best_path, build_path_table, write_path_table
from training.evaluate.run import (
    DEFAULT_GENERAL_LIMIT,
    evaluate,
    evaluate_adapter,
    evaluate_preference,
)

__all__ = [
    "DEFAULT_GENERAL_LIMIT",
    "PATHS",
    "Gates",
    "Item",
    "ResolvedGates",
    "best_path",
    "build_path_table",
    "evaluate",
    "evaluate_adapter",
    "evaluate_preference",
    "gates_help",
    "load_gates",
    "load_questions",
    "resolve_gates",
    "score_answer",
    "write_path_table",
]
