"""Preference tuning (DPO, via TRL's DPOTrainer) of a LoRA adapter from (prompt, chosen, rejected).

With a PEFT model and no reference model, TRL uses the base with the adapter switched off as
the reference, so only one copy of the weights is in memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from training.config import TrainConfig
from training.errors import TrainingError
from training.run import (
    RunResult,
    check_base,
    common_args,
    finish,
    load_base,
    load_split,
    lora_config,
)


def conversational(pair: dict[str, Any]) -> dict[str, Any]:
    """A prepared pair in TRL's conversational form, so the chat template renders it."""
    return {
        "prompt": [{"role": "user", "content": pair["prompt"]}],
        "chosen": [{"role": "assistant", "content": pair["chosen"]}],
        "rejected": [{"role": "assistant", "content": pair["rejected"]}],
    }


def train_dpo(cfg: TrainConfig, data_dir: Path, out_dir: Path, *, resume: bool = False,
              progress: bool = True) -> RunResult:  # fmt: skip
    """DPO on data_dir/preference.jsonl (validation on preference_validation.jsonl, with early
    stopping, when present); writes out_dir/adapter like SFT does."""
    from datasets import Dataset
    from transformers import EarlyStoppingCallback
    from trl import DPOConfig, DPOTrainer

    check_base(cfg)
    pairs = load_split(data_dir, "preference")
    if not pairs:
        raise TrainingError(
            f"{data_dir}/preference.jsonl is missing or empty: prepare prompt/chosen/rejected pairs",
            "empty_dataset",
        )
    val = load_split(data_dir, "preference_validation")
    model, tokenizer = load_base(cfg)
    args = DPOConfig(**common_args(cfg, out_dir, bool(val), progress), beta=cfg.dpo_beta)
    trainer = DPOTrainer(
        model=model, args=args, train_dataset=Dataset.from_list([conversational(p) for p in pairs]),
        eval_dataset=Dataset.from_list([conversational(p) for p in val]) if val else None,
        processing_class=tokenizer, peft_config=lora_config(cfg),
        callbacks=[EarlyStoppingCallback(cfg.early_stopping_patience)] if val else [],
    )  # fmt: skip
    return finish(trainer, cfg, data_dir, out_dir, "dpo", resume, pairs)
