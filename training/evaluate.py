"""`loraplex eval`: the adapter against the base model on held-out data, with go/no-go gates.

Metrics on the test split (validation if there is no test split): mean loss on the assistant
answer (teacher-forced) and, where answers are JSON objects, greedy-decoding format compliance
and exact match. A general set (any chat JSONL) checks forgetting: the adapter's loss there may
not rise by more than a margin. A bar chart compares base and adapter.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from training.errors import TrainingError
from training.formats import read_examples, to_prompt_completion


@dataclass
class Gates:
    """What the adapter must show to be promoted."""

    min_loss_improvement: float = 0.05  # relative drop in task loss vs base
    min_json_gain: float = 0.10  # absolute gain in JSON compliance (when the task is JSON)
    max_general_regression: float = 0.10  # relative rise in general-set loss allowed


def decide(
    base: dict[str, float], tuned: dict[str, float], gates: Gates
) -> tuple[dict[str, bool], bool]:
    """Each gate's outcome and the verdict: the adapter must beat the base on the task loss OR
    the JSON metric (when there is one) by the margins, and must not forget (when checked)."""
    checks = {
        "task loss improves": tuned["loss"] <= base["loss"] * (1 - gates.min_loss_improvement)
    }
    if "json_valid" in tuned:
        checks["JSON compliance improves"] = (
            tuned["json_valid"] >= base["json_valid"] + gates.min_json_gain
        )
    task_ok = any(checks.values())
    forgetting = "no forgetting on the general set"
    if "general_loss" in tuned:
        checks[forgetting] = tuned["general_loss"] <= base["general_loss"] * (
            1 + gates.max_general_regression
        )
    return checks, task_ok and checks.get(forgetting, True)


def _answer_loss(model: Any, tokenizer: Any, rows: list[dict[str, Any]], max_length: int) -> float:
    import torch

    total, count = 0.0, 0
    model.eval()
    for row in rows:
        pc = to_prompt_completion(row)
        prompt = tokenizer.apply_chat_template(
            pc["prompt"], tokenize=False, add_generation_prompt=True
        )
        full = tokenizer.apply_chat_template(pc["prompt"] + pc["completion"], tokenize=False)
        p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ids = tokenizer(full, add_special_tokens=False, truncation=True, max_length=max_length)[
            "input_ids"
        ]
        labels = [-100] * len(p_ids) + ids[len(p_ids) :]
        if all(label == -100 for label in labels):
            continue
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels[: len(ids)]]))
        total += float(out.loss)
        count += 1
    return total / max(count, 1)


def _generate(
    model: Any, tokenizer: Any, rows: list[dict[str, Any]], max_new_tokens: int
) -> list[str]:
    import torch

    outs = []
    for row in rows:
        pc = to_prompt_completion(row)
        prompt = tokenizer.apply_chat_template(
            pc["prompt"], tokenize=False, add_generation_prompt=True
        )
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            gen = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)  # fmt: skip
        outs.append(tokenizer.decode(gen[0][ids["input_ids"].shape[1] :], skip_special_tokens=True))
    return outs


def _json_scores(rows: list[dict[str, Any]], answers: list[str]) -> dict[str, float] | None:
    expected = []
    for row in rows:
        try:
            value = json.loads(to_prompt_completion(row)["completion"][0]["content"])
        except json.JSONDecodeError:
            return None
        if not isinstance(value, dict):
            return None
        expected.append(value)
    valid = exact = 0
    for want, got in zip(expected, answers, strict=True):
        try:
            parsed = json.loads(got.strip())
        except json.JSONDecodeError:
            continue
        if isinstance(parsed, dict) and set(parsed) == set(want):
            valid += 1
            exact += parsed == want
    return {"json_valid": valid / len(rows), "exact_match": exact / len(rows)}


def evaluate(
    adapter_dir: Path, data_dir: Path, base_model_dir: Path, *, general: Path | None = None,
    gates: Gates | None = None, limit: int = 50, max_length: int = 512,
) -> dict[str, Any]:  # fmt: skip
    """Compare base and adapter; write eval.json, eval.md and eval.png next to the adapter.

    GO when the adapter beats the base on the task loss or on JSON compliance by the gate's
    margin, and (with a `general` set) its general loss rises by no more than allowed.
    """
    gates = gates or Gates()
    if not (Path(base_model_dir) / "config.json").is_file():
        raise TrainingError(f"base model {base_model_dir} does not exist (no config.json)",
                            "base_model_not_found", "not_found")  # fmt: skip
    if not (Path(adapter_dir) / "adapter_config.json").is_file():
        raise TrainingError(
            f"{adapter_dir} is not an adapter directory", "not_an_adapter", "not_found"
        )
    split, rows = eval_rows(Path(data_dir), limit)
    general_rows = chat_examples(Path(general))[:limit] if general else []
    # Imported once the inputs are known to be good: bad data fails in milliseconds.
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    base_model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
    model: Any = PeftModel.from_pretrained(base_model, str(adapter_dir))
    max_new = 64
    results: dict[str, dict[str, float]] = {}
    for name, ctx in (("base", model.disable_adapter), ("adapter", None)):
        if ctx is not None:
            with ctx():
                results[name] = _metrics(model, tokenizer, rows, general_rows, max_length, max_new)
        else:
            results[name] = _metrics(model, tokenizer, rows, general_rows, max_length, max_new)
    base, tuned = results["base"], results["adapter"]
    checks, go = decide(base, tuned, gates)
    report = {"split": split, "examples": len(rows), "base": base, "adapter": tuned,
              "gates": asdict(gates), "checks": checks, "go": go}  # fmt: skip
    out = Path(adapter_dir).parent
    (out / "eval.json").write_text(json.dumps(report, indent=2))
    _plot(results, out / "eval.png")
    lines = ["# Evaluation: adapter vs base", "", f"{len(rows)} examples from {split}.jsonl", "",
             "| metric | base | adapter |", "|---|---|---|"]  # fmt: skip
    lines += [f"| {k} | {base[k]:.4f} | {tuned[k]:.4f} |" for k in tuned]
    lines += ["", "| gate | passed |", "|---|---|"] + [f"| {k} | {v} |" for k, v in checks.items()]
    lines += ["", "GO needs one task gate (loss or JSON) and, if checked, no forgetting.", ""]
    lines += [f"**{'GO' if report['go'] else 'NO-GO'}**", "", "![eval](eval.png)"]
    (out / "eval.md").write_text("\n".join(lines) + "\n")
    return report


def eval_rows(data_dir: Path, limit: int) -> tuple[str, list[dict[str, Any]]]:
    """The split evaluated (test, else validation) and its first `limit` examples.

    Checked before any model loads: a malformed line or a row without an assistant answer is a
    TrainingError naming the file and line.
    """
    for split in ("test", "validation"):
        path = data_dir / f"{split}.jsonl"
        rows = chat_examples(path) if path.is_file() else []
        if rows:
            return split, rows[:limit]
    raise TrainingError(
        f"{data_dir} has no examples in test.jsonl or validation.jsonl: run `loraplex data "
        "prepare` on enough data to hold some out",
        "empty_dataset",
    )


def chat_examples(path: Path) -> list[dict[str, Any]]:
    """A file's chat examples, each with an answer; TrainingError for anything else."""
    rows = read_examples(path)
    if rows and "messages" not in rows[0]:
        raise TrainingError(
            f"{path} holds preference pairs; evaluation needs examples with one answer (chat, "
            "prompt/completion or Alpaca)",
            "invalid_dataset",
        )
    return rows


def _metrics(model: Any, tok: Any, rows: list[dict[str, Any]], general: list[dict[str, Any]],
             max_length: int, max_new: int) -> dict[str, float]:  # fmt: skip
    out = {"loss": _answer_loss(model, tok, rows, max_length)}
    scores = (
        _json_scores(rows, _generate(model, tok, rows, max_new)) if _is_json_task(rows) else None
    )
    if scores:
        out.update(scores)
    if general:
        out["general_loss"] = _answer_loss(model, tok, general, max_length)
    return out


def _is_json_task(rows: list[dict[str, Any]]) -> bool:
    try:
        return all(
            isinstance(json.loads(to_prompt_completion(r)["completion"][0]["content"]), dict)
            for r in rows
        )
    except json.JSONDecodeError:
        return False


def _plot(results: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(results["adapter"])
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    width = 0.38
    xs = range(len(metrics))
    ax.bar(
        [x - width / 2 for x in xs],
        [results["base"][m] for m in metrics],
        width,
        label="base",
        color="#8c8c8c",
    )
    ax.bar(
        [x + width / 2 for x in xs],
        [results["adapter"][m] for m in metrics],
        width,
        label="adapter",
        color="#4C72B0",
    )
    ax.set_xticks(list(xs), metrics)
    ax.set_title("base vs adapter (loss: lower is better; JSON: higher is better)")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
