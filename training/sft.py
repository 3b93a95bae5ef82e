"""Supervised fine-tuning with LoRA or QLoRA: the loss on the assistant's answer only.

Examples become conversational prompt/completion pairs (the last assistant turn is the
completion), rendered with the model's own chat template (the one vLLM serves with). The loss
is the cross-entropy of the completion's tokens; the prompt's positions are never projected
onto the vocabulary, which is most of a plain loop's LM-head work on chat data.

Batches are right-padded, and a prompt prefix every example of the batch starts with (a system
prompt, a task instruction) is run once and its keys and values shared by all rows: causal
attention makes that exact, and gradients flow back through the shared prefix. `packing` puts
the batch's examples in one row instead (no padding; position ids restart per example, which
keeps their attention apart).

    from training.sft import train_sft
    train_sft(TrainConfig(max_steps=50), Path("datasets/support"), Path("runs/support"))
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.config import TrainConfig
from training.errors import TrainingError
from training.formats import to_prompt_completion
from training.loop import Example, Loop
from training.run import (
    RunResult,
    check_base,
    finish,
    load_base,
    load_split,
    lora_config,
    pick_device,
)

# Below this many tokens, a shared prefix saves less than the extra forward call costs.
MIN_SHARED_PREFIX = 8


def train_sft(
    cfg: TrainConfig, data_dir: Path, out_dir: Path, *, resume: bool = False, progress: bool = True
) -> RunResult:
    """Fine-tune on data_dir/train.jsonl (validation.jsonl for eval); write out_dir/adapter."""
    import torch
    from peft import get_peft_model

    check_base(cfg)
    train_rows = load_split(data_dir, "train")
    if not train_rows:
        raise TrainingError(
            f"{data_dir}/train.jsonl is missing or empty: run `loraplex data prepare` first",
            "empty_dataset",
        )
    val_rows = load_split(data_dir, "validation")

    device = pick_device(cfg.threads)
    model, tokenizer = load_base(cfg, device)
    torch.manual_seed(cfg.seed)  # LoRA's initial weights, then dropout
    model = get_peft_model(model, lora_config(cfg))
    train_set = tokenize(train_rows, tokenizer, cfg.max_length)
    if not train_set:
        raise TrainingError(
            f"no training example has an answer within max_length={cfg.max_length} tokens: "
            "raise max_length or shorten the prompts",
            "empty_dataset",
        )
    val_set = tokenize(val_rows, tokenizer, cfg.max_length)

    def loss_fn(m: Any, batch: Sequence[Example]) -> Any:
        return completion_loss(m, batch, packing=cfg.packing)

    loop = Loop(model, train_set, val_set, loss_fn, cfg, out_dir, device, progress)
    return finish(loop, cfg, data_dir, out_dir, "sft", resume, train_rows)


def tokenize(rows: list[dict[str, Any]], tokenizer: Any, max_length: int) -> list[Example]:
    """Chat rows as token ids with the prompt's length, truncated to `max_length`.

    The prompt is tokenized as vLLM will see it (chat template plus generation prompt) and the
    answer after it, so the boundary is exact. Rows left without an answer token are dropped.
    """
    if not rows:
        return []
    pairs = [to_prompt_completion(r) for r in rows]
    prompts = [
        tokenizer.apply_chat_template(p["prompt"], tokenize=False, add_generation_prompt=True)
        for p in pairs
    ]
    fulls = [
        tokenizer.apply_chat_template(p["prompt"] + p["completion"], tokenize=False) for p in pairs
    ]
    answers = [f[len(p) :] if f.startswith(p) else f for p, f in zip(prompts, fulls, strict=True)]
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answers, add_special_tokens=False)["input_ids"]
    out = []
    for p, a, prompt, full in zip(prompt_ids, answer_ids, prompts, fulls, strict=True):
        if not full.startswith(prompt):
            # A template that renders earlier turns differently once answered: score the
            # whole rendering's tail after the prompt's length.
            p, a = a[: len(p)], a[len(p) :]
        ids = (p + a)[:max_length]
        if len(ids) > len(p):
            out.append(Example(ids, len(p)))
    return out


def completion_loss(model: Any, batch: Sequence[Example], packing: bool = False) -> Any:
    """Summed cross-entropy of the batch's answer tokens (logits computed for those only)."""
    import torch
    import torch.nn.functional as F

    dev = next(model.parameters()).device
    if packing:
        # One row, no padding; restarting position ids mark where each example begins.
        ids = torch.tensor([[t for e in batch for t in e.ids]], device=dev)
        pos = torch.tensor([[i for e in batch for i in range(len(e.ids))]], device=dev)
        targets = _targets(batch, 0, ids.shape[1], concat=True).to(dev)
        kwargs: dict[str, Any] = {"position_ids": pos, "use_cache": False}
    else:
        shared = shared_prefix(batch)
        cache = _prefix_cache(model, batch[0].ids[:shared], len(batch)) if shared else None
        width = max(len(e.ids) for e in batch) - shared
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros((len(batch), shared + width), dtype=torch.long)
        mask[:, :shared] = 1
        for i, e in enumerate(batch):
            ids[i, : len(e.ids) - shared] = torch.tensor(e.ids[shared:])
            mask[i, : len(e.ids)] = 1
        ids, targets = ids.to(dev), _targets(batch, shared, width).to(dev)
        pos = torch.arange(shared, shared + width, device=dev).expand(len(batch), -1)
        kwargs = {
            "attention_mask": mask.to(dev),
            "position_ids": pos,
            "past_key_values": cache,
            "use_cache": cache is not None,
        }
    # Positions where some row predicts an answer token: the only ones given logits.
    keep = (targets != -100).any(0).nonzero().squeeze(1)
    logits = model(input_ids=ids, logits_to_keep=keep, **kwargs).logits
    # Over all kept positions, -100 ignored: cheaper than copying out the scored rows first.
    return F.cross_entropy(
        logits.flatten(0, 1).float(), targets[:, keep].flatten(), ignore_index=-100, reduction="sum"
    )


def shared_prefix(batch: Sequence[Example]) -> int:
    """Tokens every example of the batch starts with, short of its prompt's last token (which
    predicts the answer), or 0 when too few to be worth a separate forward."""
    if len(batch) < 2:
        return 0
    first, n = batch[0].ids, min(e.prompt_len for e in batch) - 1
    for e in batch[1:]:
        n = next((i for i in range(n) if e.ids[i] != first[i]), n)
    return n if n >= MIN_SHARED_PREFIX else 0


def _prefix_cache(model: Any, prefix: list[int], rows: int) -> Any:
    """Keys and values of `prefix`, computed once and repeated for `rows` rows (with grad).

    In training, LoRA dropout on the prefix is drawn once for all rows rather than per row:
    the same expectation, a little less noise.
    """
    import torch
    from transformers import DynamicCache

    dev = next(model.parameters()).device
    cache = DynamicCache(config=model.config)
    model(
        input_ids=torch.tensor([prefix], device=dev),
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    cache.batch_repeat_interleave(rows)
    return cache


def _targets(batch: Sequence[Example], start: int, width: int, concat: bool = False) -> Any:
    """Next-token targets from position `start` on: the answer token a position predicts, else
    -100. One row per example, or (concat) one row for all of them end to end."""
    import torch

    rows = torch.full((1 if concat else len(batch), width), -100, dtype=torch.long)
    offset = 0
    for i, e in enumerate(batch):
        row, base = (0, offset) if concat else (i, -start)
        # Position j predicts token j + 1; the answer starts at prompt_len.
        first, end = base + e.prompt_len - 1, base + len(e.ids) - 1
        rows[row, first:end] = torch.tensor(e.ids[e.prompt_len :])
        offset += len(e.ids)
    return rows
