"""The SFT loss and training loop on a tiny random Llama (no download, a few seconds)."""

import json

import pytest
import torch

from training.config import TrainConfig
from training.loop import Example, Loop
from training.run import Device
from training.sft import MIN_SHARED_PREFIX, completion_loss, shared_prefix, tokenize

CPU = Device("cpu", torch.float32)


def tiny_model(seed: int = 0):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    lora = LoraConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        init_lora_weights=False,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"],
    )
    return get_peft_model(LlamaForCausalLM(config), lora)


def examples(n: int, shared: int, seed: int = 0) -> list[Example]:
    """Rows that start with the same `shared` tokens, then differ; answers of 3-6 tokens."""
    g = torch.Generator().manual_seed(seed)
    head = torch.randint(1, 64, (shared,), generator=g).tolist()
    out = []
    for _ in range(n):
        prompt = (
            head
            + torch.randint(
                1, 64, (int(torch.randint(2, 9, (1,), generator=g)),), generator=g
            ).tolist()
        )
        answer = torch.randint(
            1, 64, (int(torch.randint(3, 7, (1,), generator=g)),), generator=g
        ).tolist()
        out.append(Example(prompt + answer, len(prompt)))
    return out


def reference_loss(model, batch):
    """The plain way: every row on its own, full logits, prompt positions masked out."""
    total = 0.0
    for e in batch:
        labels = torch.tensor([[-100] * e.prompt_len + e.ids[e.prompt_len :]])
        out = model(input_ids=torch.tensor([e.ids]), labels=labels)
        total = total + out.loss * (len(e.ids) - e.prompt_len)
    return total


@pytest.mark.parametrize(("shared", "packing"), [(0, False), (12, False), (12, True)])
def test_completion_loss_and_gradients_match_the_plain_computation(shared, packing) -> None:
    model = tiny_model()
    batch = examples(4, shared)
    assert shared_prefix(batch) == (shared if shared >= MIN_SHARED_PREFIX else 0)
    ours = completion_loss(model, batch, packing=packing)
    ours.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    ref = reference_loss(model, batch)
    ref.backward()
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
    for name, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(grads[name], p.grad, rtol=1e-4, atol=1e-6)


def test_shared_prefix_stops_before_the_token_that_predicts_the_answer() -> None:
    same = list(range(1, 21))
    batch = [Example(same + [30, 31], 20), Example(same + [40], 20)]
    assert shared_prefix(batch) == 19  # token 20 predicts the answer: computed per row
    assert shared_prefix(batch[:1]) == 0  # one row: nothing to share
    short = [Example([1, 2, 3, 9], 3), Example([1, 2, 3, 8], 3)]
    assert shared_prefix(short) == 0  # below MIN_SHARED_PREFIX


class CharTokenizer:
    """Characters as ids, and a chat template that renders turns as <role>text."""

    def apply_chat_template(self, msgs, tokenize=False, add_generation_prompt=False):
        text = "".join(f"<{m['role'][0]}>{m['content']}" for m in msgs)
        return text + ("<a>" if add_generation_prompt else "")

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[ord(c) for c in t] for t in texts]}


def test_tokenize_splits_at_the_prompt_and_drops_rows_without_an_answer() -> None:
    row = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    long = {
        "messages": [{"role": "user", "content": "x" * 50}, {"role": "assistant", "content": "ok"}]
    }
    got = tokenize([row, long], CharTokenizer(), max_length=40)
    assert got == [Example([ord(c) for c in "<u>hi<a>yo"], len("<u>hi<a>"))]
    truncated = tokenize([row], CharTokenizer(), max_length=9)
    assert truncated[0].ids == [ord(c) for c in "<u>hi<a>y"]
    assert tokenize([], CharTokenizer(), max_length=9) == []


def make_loop(tmp_path, model, steps, **overrides):
    train = examples(12, 10, seed=1)
    val = examples(4, 10, seed=2)
    settings = dict(
        max_steps=steps,
        batch_size=4,
        learning_rate=0.05,
        warmup_ratio=0.0,
        eval_steps=2,
        save_steps=1,
        seed=3,
    )
    cfg = TrainConfig(**{**settings, **overrides})
    return Loop(model, train, val, completion_loss, cfg, tmp_path / "run", CPU, progress=False)


def test_a_resumed_run_continues_exactly(tmp_path) -> None:
    # A constant rate: with a decaying one, a 2-step run is not the start of a 4-step run.
    straight = make_loop(tmp_path / "a", tiny_model(), 4, scheduler="constant")
    straight.train()
    first = make_loop(tmp_path / "b", tiny_model(), 2, scheduler="constant")
    first.train()
    model = tiny_model()
    with torch.no_grad():  # other adapter weights: the checkpoint's must win
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.normal_()
    resumed = make_loop(tmp_path / "b", model, 4, scheduler="constant")
    resumed.train(
        resume_from_checkpoint=str(tmp_path / "b" / "run" / "checkpoints" / "checkpoint-2")
    )
    losses = [e["loss"] for e in straight.state.log_history if "loss" in e]
    assert [e["loss"] for e in resumed.state.log_history if "loss" in e] == losses
    assert losses[-1] < losses[0]
    assert resumed.state.num_input_tokens_seen == straight.state.num_input_tokens_seen
    ckpts = sorted(p.name for p in (tmp_path / "a" / "run" / "checkpoints").iterdir())
    assert ckpts == ["checkpoint-2", "checkpoint-4"]  # eval grid; older ones rotated away
    state = json.loads(
        (tmp_path / "a" / "run" / "checkpoints" / "checkpoint-4" / "trainer_state.json").read_text()
    )
    assert state["global_step"] == 4 and [
        e["step"] for e in state["log_history"] if "eval_loss" in e
    ] == [2, 4]


def test_early_stopping_restores_the_best_weights(tmp_path) -> None:
    model = tiny_model()
    loop = make_loop(tmp_path, model, 40, early_stopping_patience=1, learning_rate=0.5)
    loop.train()
    state = loop.state
    evals = [(e["step"], e["eval_loss"]) for e in state.log_history if "eval_loss" in e]
    assert state.global_step < 40 and len(evals) >= 2  # stopped early
    best_step, best = min(evals, key=lambda e: e[1])
    assert state.best_model_checkpoint.endswith(f"checkpoint-{best_step}")
    assert loop.evaluate()["eval_loss"] == pytest.approx(best, abs=1e-4)


def test_epochs_set_the_length_without_max_steps(tmp_path) -> None:
    loop = make_loop(tmp_path, tiny_model(), -1, epochs=2.0, grad_accum=2)
    assert loop.total_steps() == 3  # 12 examples / 4 = 3 batches per epoch, 2 per step
