"""Teacher-forced log-probabilities of answers, batched, on transformers + peft.

One model in memory serves both sides: the adapter switched off is the base. Answer loss (mean
negative log-likelihood per answer token) and DPO preference accuracy (the chosen answer's summed
log-probability above the rejected one's) both come from `completion_logprobs`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Messages = list[dict[str, str]]


@dataclass
class Scorer:
    """A base model with the adapter loaded, its tokenizer and device."""

    model: Any
    tokenizer: Any
    device: str

    def side(self, adapter: bool) -> AbstractContextManager[Any]:
        """A context in which the model is the adapter (True) or the base (False)."""
        return nullcontext() if adapter else self.model.disable_adapter()


def load_scorer(base_model_dir: Path, adapter_dir: Path) -> Scorer:
    """Base + adapter for scoring: bf16 on a GPU, float32 on a CPU (no native bf16 on AVX2)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cuda = torch.cuda.is_available()
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    base = AutoModelForCausalLM.from_pretrained(
        base_model_dir, dtype=torch.bfloat16 if cuda else torch.float32
    )
    model = PeftModel.from_pretrained(base, str(adapter_dir)).to("cuda" if cuda else "cpu")
    model.eval()
    return Scorer(model, tokenizer, "cuda" if cuda else "cpu")


def encode(
    tokenizer: Any, prompt: Messages, completion: str, max_length: int
) -> tuple[list[int], int]:
    """(token ids of prompt + answer, index of the first answer token), cut at max_length.

    The chat template renders both, so the answer is scored exactly as the model is trained on
    it and served (end-of-turn token included).
    """
    head = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(
        [*prompt, {"role": "assistant", "content": completion}], tokenize=False
    )
    start = len(tokenizer(head, add_special_tokens=False)["input_ids"])
    ids = tokenizer(full, add_special_tokens=False)["input_ids"][:max_length]
    return ids, start


def completion_logprobs(
    scorer: Scorer,
    pairs: list[tuple[Messages, str]],
    *,
    adapter: bool,
    max_length: int = 512,
    batch_size: int = 8,
) -> list[tuple[float, int]]:
    """(summed log-probability, answer tokens) of each answer given its prompt.

    An answer cut away entirely by `max_length` gives (0.0, 0); callers skip those.
    """
    import torch

    encoded = [encode(scorer.tokenizer, p, c, max_length) for p, c in pairs]
    # Similar lengths batched together: less padding, the same numbers.
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    out: list[tuple[float, int]] = [(0.0, 0)] * len(encoded)
    pad = scorer.tokenizer.pad_token_id
    with torch.inference_mode(), scorer.side(adapter):
        for lo in range(0, len(order), batch_size):
            batch = order[lo : lo + batch_size]
            width = max(len(encoded[i][0]) for i in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            answer = torch.zeros((len(batch), width), dtype=torch.bool)
            for row, i in enumerate(batch):
                seq, start = encoded[i]
                ids[row, : len(seq)] = torch.tensor(seq)
                mask[row, : len(seq)] = 1
                answer[row, start : len(seq)] = True
            logits = scorer.model(
                input_ids=ids.to(scorer.device), attention_mask=mask.to(scorer.device)
            ).logits.float()
            # Position t predicts token t+1.
            nll = torch.nn.functional.cross_entropy(
                logits[:, :-1].transpose(1, 2), ids[:, 1:].to(scorer.device), reduction="none"
            )
            keep = answer[:, 1:].to(scorer.device)
            sums = (-nll * keep).sum(dim=1).tolist()
            counts = keep.sum(dim=1).tolist()
            for row, i in enumerate(batch):
                out[i] = (float(sums[row]), int(counts[row]))
    return out


def answer_losses(
    scorer: Scorer, pairs: list[tuple[Messages, str]], *, adapter: bool, max_length: int = 512
) -> list[float | None]:
    """Mean negative log-likelihood per answer token, per example (None: answer cut away)."""
    return [
        -total / n if n else None
        for total, n in completion_logprobs(scorer, pairs, adapter=adapter, max_length=max_length)
    ]
