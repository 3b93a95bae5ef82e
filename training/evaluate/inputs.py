"""Everything an evaluation reads, checked before any model loads or any answer is generated:
base model, adapter (and the base it was trained for), test split, preference pairs, schema.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.errors import TrainingError
from training.formats import read_examples
from training.manifest import sha256_file

PREFERENCE_SPLITS = ("preference_test", "preference_validation")


@dataclass
class AdapterInfo:
    """What adapter_config.json says."""

    rank: int
    base_model: str | None
    method: str  # sft or dpo, from the run's report.json (sft when unknown)


def check_base(base_model_dir: Path) -> None:
    """The base model directory exists and holds a config."""
    if not (Path(base_model_dir) / "config.json").is_file():
        raise TrainingError(
            f"base model {base_model_dir} does not exist (no config.json): run `loraplex models "
            "pull` or pass a local Hugging Face model directory",
            "base_model_not_found",
            "not_found",
        )


def check_adapter(adapter_dir: Path, expected_base: str) -> AdapterInfo:
    """adapter_config.json is readable, servable by vLLM and made for `expected_base`.

    The recorded base may be a served name ("SmolLM2-135M-Instruct") or a path to it; its last
    path component must equal `expected_base` (the served name or the base directory's name).
    """
    path = Path(adapter_dir) / "adapter_config.json"
    if not path.is_file():
        raise TrainingError(
            f"{adapter_dir} is not an adapter directory (no adapter_config.json)",
            "not_an_adapter",
            "not_found",
        )
    try:
        cfg = json.loads(path.read_text())
        rank = int(cfg.get("r") or 8)
    except (json.JSONDecodeError, TypeError, ValueError, AttributeError):
        raise TrainingError(f"{path} is not a valid adapter config", "bad_adapter") from None
    recorded = cfg.get("base_model_name_or_path")
    if recorded and Path(str(recorded).rstrip("/")).name != Path(expected_base).name:
        raise TrainingError(
            f"{adapter_dir} was trained for base model {recorded!r}, not {expected_base!r}: "
            "evaluate it against the base it was trained on (--base-model)",
            "base_model_mismatch",
            "conflict",
        )
    if cfg.get("modules_to_save"):
        raise TrainingError(
            f"{adapter_dir} saves modules_to_save, which vLLM cannot serve",
            "bad_adapter",
            "unsupported",
        )
    report = Path(adapter_dir).parent / "report.json"
    method = "sft"
    if report.is_file():
        with contextlib.suppress(json.JSONDecodeError, AttributeError):
            method = json.loads(report.read_text()).get("method") or "sft"
    return AdapterInfo(rank, recorded, method)


def eval_split(data_dir: Path, limit: int) -> tuple[str, list[dict[str, Any]]]:
    """The split evaluated (test, else validation) and its first `limit` chat examples.

    A malformed line, a row without an assistant answer or with an empty one is a TrainingError
    naming the file and line; so is a set with no examples at all.
    """
    if limit < 1:
        raise TrainingError(f"limit must be at least 1, got {limit}", "invalid_limit")
    for split in ("test", "validation"):
        path = Path(data_dir) / f"{split}.jsonl"
        rows = read_examples(path) if path.is_file() else []
        if rows and "messages" not in rows[0]:
            raise TrainingError(
                f"{path} holds preference pairs; evaluation needs examples with one answer (chat, "
                "prompt/completion or Alpaca)",
                "invalid_dataset",
            )
        for i, row in enumerate(rows, 1):
            if (
                not row["messages"][-1]["content"].strip()
                or row["messages"][-1]["role"] != "assistant"
            ):
                raise TrainingError(
                    f"{path}:{i}: the example does not end with a non-empty assistant answer "
                    "(unlabelled): every evaluated example needs its expected answer",
                    "unlabelled_dataset",
                )
        if rows:
            return split, rows[:limit]
    raise TrainingError(
        f"{data_dir} has no examples in test.jsonl or validation.jsonl: run `loraplex data "
        "prepare` on enough data to hold some out",
        "empty_dataset",
    )


def preference_split(data_dir: Path, limit: int) -> tuple[str, list[dict[str, Any]]]:
    """Held-out preference pairs: preference_test.jsonl, else preference_validation.jsonl."""
    for split in PREFERENCE_SPLITS:
        path = Path(data_dir) / f"{split}.jsonl"
        rows = read_examples(path) if path.is_file() else []
        if rows and "chosen" not in rows[0]:
            raise TrainingError(f"{path} holds no preference pairs", "invalid_dataset")
        if rows:
            return split, rows[:limit]
    raise TrainingError(
        f"{data_dir} has no held-out preference pairs (preference_test.jsonl or "
        "preference_validation.jsonl): prepare at least 5 pairs so some are held out",
        "empty_dataset",
    )


def load_schema(schema: dict[str, Any] | bool | Path | str | None) -> Any:
    """A JSON Schema given inline or as a file path (None: no schema)."""
    if schema is None or isinstance(schema, dict | bool):
        return schema
    path = Path(schema)
    if not path.is_file():
        raise TrainingError(f"schema file {path} does not exist", "invalid_schema", "not_found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TrainingError(
            f"schema file {path} is not JSON: {exc.msg} (line {exc.lineno})", "invalid_schema"
        ) from None


def digests(paths: list[Path]) -> dict[str, str]:
    """sha256 of each file that exists, keyed by its path."""
    return {str(p): sha256_file(p) for p in paths if p is not None and Path(p).is_file()}
