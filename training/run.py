"""Run plumbing the recipes (SFT, DPO) compose: device and precision, the base model and its
LoRA config, resume points, the atomic adapter save, and the files a finished run writes.

A recipe is a plain function: check inputs, `load_base`, build its trainer (anything with
`model`, `eval_dataset`, `state`, `evaluate()` and `train(resume_from_checkpoint=...)`), then
`finish` trains it and writes adapter/, report.json, report.md, loss.png and exemplars.json.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from training.config import TrainConfig
from training.errors import TrainingError
from training.formats import read_examples
from training.report import losses, plot_losses, val_summary, write_report

ADAPTER = "adapter"
EXEMPLARS = 8  # as many as `loraplex data prepare` records


@dataclass
class RunResult:
    """Where the adapter was written and the run's report (also in report.json)."""

    adapter_dir: Path
    report: dict[str, Any]


@dataclass(frozen=True)
class Device:
    """Where training and evaluation run, in which precision, and with how many CPU threads."""

    type: str  # "cuda" or "cpu"
    dtype: Any  # torch.bfloat16 on a GPU, torch.float32 on the CPU
    threads: int = 0  # torch's CPU threads (0: left as they were)

    @property
    def bf16(self) -> bool:
        """Whether to compute in bfloat16 (autocast), i.e. on a GPU."""
        return self.type == "cuda"


def pick_device(threads: int = 0) -> Device:
    """The GPU in bfloat16 when there is one, else the CPU in float32: the one place that decides.

    bfloat16 halves memory and runs on tensor cores with float32's range, so no loss scaling; on
    the CPU, float32 is what every kernel supports and the numbers tests pin down. On the CPU,
    torch gets `threads` threads, or one per CPU this process may use (its affinity, which
    containers and taskset narrow, where torch's default counts the host's cores).
    """
    import torch

    if torch.cuda.is_available():
        return Device("cuda", torch.bfloat16)
    affinity = getattr(os, "sched_getaffinity", None)
    torch.set_num_threads(threads or (len(affinity(0)) if affinity else os.cpu_count() or 1))
    return Device("cpu", torch.float32, torch.get_num_threads())


class Trains(Protocol):
    """What `finish` needs of a trainer: transformers' Trainer and `training.loop.Loop` both fit."""

    model: Any
    eval_dataset: Any
    state: Any

    def evaluate(self) -> dict[str, float]: ...

    def train(self, resume_from_checkpoint: str | None = None) -> Any: ...


def check_base(cfg: TrainConfig) -> None:
    """Fail before loading anything when the base model directory is missing."""
    if not (cfg.base_model_dir / "config.json").is_file():
        raise TrainingError(
            f"base model {cfg.base_model_dir} does not exist (no config.json): run "
            "`loraplex models pull` or pass a local Hugging Face model directory",
            "base_model_not_found",
            "not_found",
        )


def load_base(cfg: TrainConfig, device: Device | None = None) -> tuple[Any, Any]:
    """The base model on `device` (4-bit nf4 for QLoRA) and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_base(cfg)
    device = device or pick_device(cfg.threads)
    tokenizer = AutoTokenizer.from_pretrained(cfg.base_model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if cfg.qlora:
        from peft import prepare_model_for_kbit_training
        from transformers import BitsAndBytesConfig

        bnb = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=device.dtype,
        )
        model = AutoModelForCausalLM.from_pretrained(
            cfg.base_model_dir, quantization_config=bnb, device_map=device.type, dtype=device.dtype
        )
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    else:
        model = AutoModelForCausalLM.from_pretrained(
            cfg.base_model_dir, device_map=device.type, dtype=device.dtype
        )
    return model, tokenizer


def lora_config(cfg: TrainConfig) -> Any:
    """The peft LoraConfig: no modules_to_save, which vLLM would reject."""
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        task_type="CAUSAL_LM",
    )


def common_args(cfg: TrainConfig, out_dir: Path, has_eval: bool, progress: bool) -> dict[str, Any]:
    """TrainingArguments for a transformers/TRL trainer (DPO): precision from `pick_device`, the
    same eval/save grid, seeds and checkpoint layout as the SFT loop."""
    device = pick_device(cfg.threads)
    steps = cfg.eval_steps
    return dict(
        output_dir=str(out_dir / "checkpoints"),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.scheduler,
        warmup_steps=cfg.warmup_ratio,  # a float below 1 is a ratio of the total steps
        logging_steps=1,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=steps,
        # Checkpoints on the eval grid, so early stopping can restore the best one.
        save_strategy="steps",
        save_steps=steps if has_eval else cfg.save_steps,
        save_total_limit=2,
        load_best_model_at_end=has_eval,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to="none",
        use_cpu=device.type == "cpu",
        bf16=device.bf16,
        fp16=False,
        # TRL turns it on by default; it recomputes every forward (a third more work) to save
        # activation memory that a LoRA run on these models does not need.
        gradient_checkpointing=False,
        dataloader_num_workers=0,
        disable_tqdm=not progress,
        include_num_input_tokens_seen="non_padding",
        max_length=cfg.max_length,
    )


def load_split(data_dir: Path, name: str) -> list[dict[str, Any]]:
    """Rows of data_dir/NAME.jsonl ([] if absent); a malformed line is a TrainingError."""
    path = Path(data_dir) / f"{name}.jsonl"
    return read_examples(path) if path.is_file() else []


def resume_point(out_dir: Path, resume: bool) -> str | None:
    """The last complete checkpoint under out_dir/checkpoints when resuming, else None."""
    if not resume:
        return None
    ckpts = Path(out_dir) / "checkpoints"
    # Checkpoints are named checkpoint-<global step>; the highest step is the latest. Its
    # trainer_state.json is written after the weights and optimizer, so a checkpoint without it
    # was cut short by a kill mid-save and is passed over.
    found = [
        p
        for p in ckpts.glob("checkpoint-*")
        if p.is_dir() and p.name[11:].isdigit() and (p / "trainer_state.json").is_file()
    ]
    last = str(max(found, key=lambda p: int(p.name[11:]))) if found else None
    if last is None:
        raise TrainingError(
            f"--resume: no checkpoint in {ckpts}; run without --resume to start afresh",
            "no_checkpoint",
            "not_found",
        )
    return last


def save_adapter(model: Any, final: Path, base_model_name: str) -> Path:
    """Write the PEFT adapter to a temp dir, fix its base name, then rename it into place.

    An interrupted save leaves only the hidden temp dir (removed by the next run), never a
    half-written adapter directory.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    adapter_cfg = json.loads((tmp / "adapter_config.json").read_text())
    # vLLM matches adapters to the served name, not to the local directory trained from.
    adapter_cfg["base_model_name_or_path"] = base_model_name
    if adapter_cfg.get("modules_to_save"):
        raise TrainingError("the adapter saves modules_to_save, which vLLM rejects", "bad_adapter")
    (tmp / "adapter_config.json").write_text(json.dumps(adapter_cfg, indent=2))
    old = final.with_name(f".{final.name}-old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def finish(
    trainer: Trains,
    cfg: TrainConfig,
    data_dir: Path,
    out_dir: Path,
    method: str,
    resume: bool,
    train_rows: list[dict[str, Any]],
) -> RunResult:
    """Train (resuming if asked), then write the adapter atomically plus report, plot, exemplars."""
    checkpoint = resume_point(out_dir, resume)
    base_val = None
    if trainer.eval_dataset is not None and checkpoint is None:
        # Step-0 validation loss: the baseline the curve and the report compare against. Measured
        # before the clock starts: tokens/s is the training loop's alone.
        base_val = float(trainer.evaluate()["eval_loss"])
    # Tokens the checkpoint had already seen: tokens/s counts only this process's work.
    tokens_before = 0
    if checkpoint is not None:
        state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
        tokens_before = int(state.get("num_input_tokens_seen", 0) or 0)
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=checkpoint)
    wall = time.perf_counter() - started
    final = save_adapter(trainer.model, out_dir / ADAPTER, cfg.base_model_name)
    train_loss, val_loss = losses(trainer.state.log_history)
    curve = val_loss if base_val is None else [(0, base_val), *val_loss]
    plot_losses(train_loss, curve, out_dir / "loss.png", f"{method} on {cfg.base_model_name}")
    manifest = read_manifest(data_dir)
    tokens = int(getattr(trainer.state, "num_input_tokens_seen", 0) or 0)
    report = {
        "method": method,
        "config": cfg.to_dict(),
        "dataset_digest": manifest.get("dataset_digest"),
        "data": {k: v.get("sha256") for k, v in manifest.get("splits", {}).items()},
        "steps": trainer.state.global_step,
        "wall_s": round(wall, 1),
        "tokens_seen": tokens,
        "tokens_per_s": round((tokens - tokens_before) / wall, 1) if wall > 0 else None,
        "resumed_from": Path(checkpoint).name if checkpoint else None,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "first_train_loss": train_loss[0][1] if train_loss else None,
        "last_train_loss": train_loss[-1][1] if train_loss else None,
        **val_summary(base_val, val_loss),
        "gates": manifest.get("gates"),  # fixed at data preparation; evaluation applies them
    }
    write_report(out_dir, report)
    exemplars = exemplar_prompts(manifest, train_rows)
    (out_dir / "exemplars.json").write_text(json.dumps(exemplars, indent=2))
    return RunResult(final, report)


def read_manifest(data_dir: Path) -> dict[str, Any]:
    """The dataset's manifest.json ({} when the data was not prepared by `loraplex data prepare`)."""
    path = Path(data_dir) / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def exemplar_prompts(manifest: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    """Typical task prompts for the router: those the dataset's manifest records (task examples
    only, picked before general ones were mixed in), else the first training rows' prompts."""
    if "exemplars" in manifest:
        return list(manifest["exemplars"][:EXEMPLARS])
    if (manifest.get("mix") or {}).get("examples"):
        # An older dataset mixed general prompts into train and nothing marks which: no
        # exemplars beat ones that would route general questions to this adapter.
        return []
    prompts = [
        next((m["content"] for m in r.get("messages", []) if m["role"] == "user"), None)
        or r.get("prompt")
        for r in rows[:EXEMPLARS]
    ]
    return [p for p in prompts if p]
