"""Evaluating an adapter against its base model: task metrics (SFT) or preference accuracy
(DPO), the forgetting check on the general set, the recorded gates, and the reports.

Order of work: every input is checked first (milliseconds; a bad file never costs an engine
start), then all answers are generated in one batch (task and general set, base and adapter),
then teacher-forced scoring runs on transformers, then the gates decide.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.evaluate import inputs
from training.evaluate.gates import Gates, ResolvedGates, resolve_gates
from training.evaluate.general import MAX_TOKENS, SHIPPED, general_items, score_general
from training.evaluate.generation import GenRequest, GenResult, choose_backend, make_backend
from training.evaluate.items import Item
from training.evaluate.logprobs import answer_losses, completion_logprobs, load_scorer
from training.evaluate.metrics import Task, detect_task, mean, score_example
from training.evaluate.reports import WORST, write_reports
from training.evaluate.verdict import (
    Check,
    forgetting_checks,
    metric_table,
    preference_checks,
    task_checks,
    task_metric,
)

# 20 items a category: the fewest the category gates accept (Gates.min_category_items), so every
# category is gated while the check stays a small share of an evaluation on a CPU.
DEFAULT_GENERAL_LIMIT = 80


@dataclass
class Plan:
    """Everything checked and ready before any model is loaded."""

    adapter_dir: Path
    base_model_dir: Path
    out_dir: Path
    gates: ResolvedGates
    general: list[Item]
    general_sources: list[dict[str, Any]]
    backend: Any
    files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _plan(
    adapter_dir: Path,
    data_dir: Path,
    base_model_dir: Path,
    *,
    base_model_name: str | None,
    backend: str,
    vllm_url: str | None,
    vllm_api_key: str | None,
    general: Path | None,
    general_limit: int | None,
    gates: Gates | dict[str, Any] | None,
    out_dir: Path | None,
) -> tuple[Plan, inputs.AdapterInfo]:
    adapter_dir, data_dir = Path(adapter_dir), Path(data_dir)
    kind = choose_backend(backend, vllm_url)
    inputs.check_base(base_model_dir)  # teacher-forced scoring loads it, whatever generates
    expected = base_model_name or Path(base_model_dir).name
    info = inputs.check_adapter(adapter_dir, expected)
    resolved = resolve_gates(adapter_dir, data_dir, gates)
    items, sources = general_items(general_limit, general)
    out = Path(out_dir) if out_dir else adapter_dir.parent
    engine = make_backend(
        kind,
        Path(base_model_dir),
        adapter_dir,
        vllm_url=vllm_url,
        api_key=vllm_api_key,
        served_model=base_model_name,
        lora_rank=info.rank,
        log_path=out / "eval-vllm.log",
    )
    files = [data_dir / "manifest.json", SHIPPED, *([Path(general)] if general else [])]
    plan = Plan(adapter_dir, Path(base_model_dir), out, resolved, items, sources, engine, files)
    plan.warnings += _lineage_warnings(adapter_dir, data_dir)
    return plan, info


def _lineage_warnings(adapter_dir: Path, data_dir: Path) -> list[str]:
    """A run trained on another dataset than the one evaluated is worth a line in the report."""
    import json

    report, manifest = adapter_dir.parent / "report.json", data_dir / "manifest.json"
    if not (report.is_file() and manifest.is_file()):
        return []
    trained = json.loads(report.read_text()).get("dataset_digest")
    evaluated = json.loads(manifest.read_text()).get("dataset_digest")
    if trained and evaluated and trained != evaluated:
        return [f"the adapter was trained on dataset {trained[:12]}, evaluated on {evaluated[:12]}"]
    return []


def evaluate_adapter(
    adapter_dir: Path,
    data_dir: Path,
    base_model_dir: Path,
    *,
    base_model_name: str | None = None,
    backend: str = "auto",
    vllm_url: str | None = None,
    vllm_api_key: str | None = None,
    schema: dict[str, Any] | Path | None = None,
    general: Path | None = None,
    general_limit: int | None = DEFAULT_GENERAL_LIMIT,
    gates: Gates | dict[str, Any] | None = None,
    limit: int = 50,
    max_new_tokens: int = 256,
    max_length: int = 512,
    out_dir: Path | None = None,
) -> dict[str, Any]:
    """Compare an SFT adapter with its base model on held-out examples; write the reports.

    Metrics on the test split (validation when there is none): exact match, token F1, ROUGE-L,
    label accuracy (small label sets), JSON validity / key-set match (JSON answers), schema
    match (with `schema`), answer loss. The general set checks forgetting. The gates recorded
    before training decide GO / NO-GO; `gates` overrides them (and the report says so).
    Returns eval.json's content; reports go to `out_dir` (default: the run directory).
    """
    plan, _ = _plan(
        adapter_dir,
        data_dir,
        base_model_dir,
        base_model_name=base_model_name,
        backend=backend,
        vllm_url=vllm_url,
        vllm_api_key=vllm_api_key,
        general=general,
        general_limit=general_limit,
        gates=gates,
        out_dir=out_dir,
    )
    split, rows = inputs.eval_split(Path(data_dir), limit)
    plan.files.insert(0, Path(data_dir) / f"{split}.jsonl")
    schema_value = inputs.load_schema(schema)
    if isinstance(schema, str | Path):
        plan.files.append(Path(schema))
    prompts = [r["messages"][:-1] for r in rows]
    expected = [r["messages"][-1]["content"] for r in rows]
    task = detect_task(expected, schema_value)
    metric = task_metric(plan.gates.gates, task)  # a gate naming an unmeasured metric fails here

    budget = _answer_budget(plan.base_model_dir, expected, max_new_tokens)
    requests = [GenRequest(p, side, budget) for side in (False, True) for p in prompts]
    requests += [
        GenRequest(i.conversation(), side, MAX_TOKENS)
        for side in (False, True)
        for i in plan.general
    ]
    gen = plan.backend.generate(requests)
    n, g = len(rows), len(plan.general)
    base_answers, adapter_answers = gen.answers[:n], gen.answers[n : 2 * n]
    general_base, general_adapter = gen.answers[2 * n : 2 * n + g], gen.answers[2 * n + g :]

    scorer = load_scorer(plan.base_model_dir, plan.adapter_dir)
    pairs = list(zip(prompts, expected, strict=True))
    loss_base = answer_losses(scorer, pairs, adapter=False, max_length=max_length)
    loss_adapter = answer_losses(scorer, pairs, adapter=True, max_length=max_length)
    del scorer

    examples = []
    for i in range(n):
        sb: dict[str, float | None] = {**score_example(task, expected[i], base_answers[i])}
        sa: dict[str, float | None] = {**score_example(task, expected[i], adapter_answers[i])}
        sb["answer_loss"], sa["answer_loss"] = loss_base[i], loss_adapter[i]
        examples.append(
            {
                "id": f"{split}-{i}",
                "prompt": prompts[i][-1]["content"],
                "messages": prompts[i],
                "expected": expected[i],
                "base_answer": base_answers[i],
                "adapter_answer": adapter_answers[i],
                "base_scores": sb,
                "adapter_scores": sa,
            }
        )
    base = _means(examples, "base_scores")
    adapter = _means(examples, "adapter_scores")
    general_summary, general_rows = score_general(plan.general, general_base, general_adapter)
    checks = task_checks(plan.gates.gates, metric, base, adapter, task)
    checks += forgetting_checks(plan.gates.gates, general_summary)
    # Worst first: the task metric, then the stricter and softer text metrics, then the loss.
    worst = sorted(
        examples,
        key=lambda e: (
            e["adapter_scores"].get(metric, 0.0),
            e["adapter_scores"]["exact_match"],
            e["adapter_scores"]["token_f1"],
            -(e["adapter_scores"]["answer_loss"] or 0.0),
        ),
    )[:WORST]
    worst_view = [
        {
            "id": e["id"],
            "prompt": e["prompt"],
            "expected": e["expected"],
            "adapter_answer": e["adapter_answer"],
            "base_answer": e["base_answer"],
            "scores": e["adapter_scores"],
        }
        for e in worst
    ]
    report = _report(
        "sft",
        plan,
        split,
        n,
        base,
        adapter,
        checks,
        general_summary,
        gen,
        task=task,
        task_metric=metric,
        worst=worst_view,
    )
    write_reports(plan.out_dir, report, examples, general_rows)
    return report


def evaluate_preference(
    adapter_dir: Path,
    data_dir: Path,
    base_model_dir: Path,
    *,
    base_model_name: str | None = None,
    backend: str = "auto",
    vllm_url: str | None = None,
    vllm_api_key: str | None = None,
    general: Path | None = None,
    general_limit: int | None = DEFAULT_GENERAL_LIMIT,
    gates: Gates | dict[str, Any] | None = None,
    limit: int = 200,
    max_length: int = 512,
    out_dir: Path | None = None,
) -> dict[str, Any]:
    """Compare a DPO adapter with its base on held-out preference pairs; write the reports.

    Preference accuracy: the share of pairs whose chosen answer has a higher summed
    log-probability than the rejected one (mean margin alongside), base vs adapter; plus the
    forgetting check. Pairs come from preference_test.jsonl, else preference_validation.jsonl.
    """
    plan, _ = _plan(
        adapter_dir,
        data_dir,
        base_model_dir,
        base_model_name=base_model_name,
        backend=backend,
        vllm_url=vllm_url,
        vllm_api_key=vllm_api_key,
        general=general,
        general_limit=general_limit,
        gates=gates,
        out_dir=out_dir,
    )
    split, pairs = inputs.preference_split(Path(data_dir), limit)
    plan.files.insert(0, Path(data_dir) / f"{split}.jsonl")
    requests = [
        GenRequest(i.conversation(), side, MAX_TOKENS)
        for side in (False, True)
        for i in plan.general
    ]
    gen = plan.backend.generate(requests)
    g = len(plan.general)

    scorer = load_scorer(plan.base_model_dir, plan.adapter_dir)
    texts = []
    for p in pairs:
        prompt = [{"role": "user", "content": p["prompt"]}]
        texts += [(prompt, p["chosen"]), (prompt, p["rejected"])]
    sides = {}
    for name, side in (("base", False), ("adapter", True)):
        lp = completion_logprobs(scorer, texts, adapter=side, max_length=max_length)
        sides[name] = [(lp[2 * k][0], lp[2 * k + 1][0]) for k in range(len(pairs))]
    del scorer

    examples = []
    for k, p in enumerate(pairs):
        row: dict[str, Any] = {
            "id": f"{split}-{k}",
            "prompt": p["prompt"],
            "chosen": p["chosen"],
            "rejected": p["rejected"],
        }
        for name, values in sides.items():
            chosen, rejected = values[k]
            row[f"{name}_scores"] = {
                "chosen_logprob": round(chosen, 4),
                "rejected_logprob": round(rejected, 4),
                "margin": round(chosen - rejected, 4),
                "preference_accuracy": float(chosen > rejected),
            }
        examples.append(row)
    base = {
        "preference_accuracy": mean([e["base_scores"]["preference_accuracy"] for e in examples]),
        "preference_margin": mean([e["base_scores"]["margin"] for e in examples]),
    }
    adapter = {
        "preference_accuracy": mean([e["adapter_scores"]["preference_accuracy"] for e in examples]),
        "preference_margin": mean([e["adapter_scores"]["margin"] for e in examples]),
    }
    general_summary, general_rows = score_general(plan.general, gen.answers[:g], gen.answers[g:])
    checks = preference_checks(
        plan.gates.gates, base["preference_accuracy"], adapter["preference_accuracy"]
    )
    checks += forgetting_checks(plan.gates.gates, general_summary)
    worst = sorted(examples, key=lambda e: e["adapter_scores"]["margin"])[:WORST]
    worst_view = [
        {
            "id": e["id"],
            "prompt": e["prompt"],
            "expected": e["chosen"],
            "adapter_answer": f"(rejected) {e['rejected']}",
            "base_answer": "",
            "scores": e["adapter_scores"],
        }
        for e in worst
    ]
    report = _report(
        "dpo",
        plan,
        split,
        len(pairs),
        base,
        adapter,
        checks,
        general_summary,
        gen,
        worst=worst_view,
    )
    write_reports(plan.out_dir, report, examples, general_rows)
    return report


def evaluate(
    adapter_dir: Path, data_dir: Path, base_model_dir: Path, **kwargs: Any
) -> dict[str, Any]:
    """Evaluate an adapter the way it was trained: DPO runs (their report.json says so, or the
    dataset holds only preference pairs) by preference accuracy, everything else as SFT.
    Keyword arguments are those of `evaluate_adapter` / `evaluate_preference`."""
    expected = kwargs.get("base_model_name") or Path(base_model_dir).name
    info = inputs.check_adapter(Path(adapter_dir), expected)
    data = Path(data_dir)
    chat = any(
        (data / f"{s}.jsonl").is_file() and (data / f"{s}.jsonl").stat().st_size
        for s in ("test", "validation")
    )
    pairs = any((data / f"{s}.jsonl").is_file() for s in inputs.PREFERENCE_SPLITS)
    if info.method == "dpo" or (pairs and not chat):
        kwargs.pop("schema", None)
        kwargs.pop("max_new_tokens", None)
        return evaluate_preference(adapter_dir, data_dir, base_model_dir, **kwargs)
    return evaluate_adapter(adapter_dir, data_dir, base_model_dir, **kwargs)


def _answer_budget(base_model_dir: Path, expected: list[str], cap: int) -> int:
    """max_tokens for task answers: the longest expected answer plus room, at most `cap`."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base_model_dir)
    longest = max(len(tok(e, add_special_tokens=False)["input_ids"]) for e in expected)
    return max(16, min(cap, int(longest * 1.5) + 8))


def _means(examples: list[dict[str, Any]], key: str) -> dict[str, float]:
    names = list(examples[0][key])
    out = {}
    for name in names:
        values = [e[key][name] for e in examples if e[key][name] is not None]
        out[name] = mean(values)
    return out


def _report(
    kind: str,
    plan: Plan,
    split: str,
    examples: int,
    base: dict[str, float],
    adapter: dict[str, float],
    checks: list[Check],
    general: dict[str, Any],
    gen: GenResult,
    *,
    task: Task | None = None,
    task_metric: str | None = None,
    worst: list[dict[str, Any]],
) -> dict[str, Any]:
    go = all(c.passed for c in checks)
    flat_base = {**base, "general_accuracy": general["overall"]["base"]}
    flat_adapter = {**adapter, "general_accuracy": general["overall"]["adapter"]}
    return {
        "kind": kind,
        "go": go,
        "verdict": "GO" if go else "NO-GO",
        "adapter_dir": str(plan.adapter_dir),
        "base_model": str(plan.base_model_dir),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "task": {**task.describe(), "task_metric": task_metric} if task else None,
        "metrics": metric_table(base, adapter, checks),
        "general": {**general, "sets": plan.general_sources},
        "gates": plan.gates.describe(),
        "gates_source": plan.gates.source,
        "check_list": [c.to_dict() for c in checks],
        # Flat views: {metric: value} per side and {check: passed}, as older readers expect.
        "base": flat_base,
        "adapter": flat_adapter,
        "checks": {c.name: c.passed for c in checks},
        "data": {"split": split, "examples": examples, "digests": inputs.digests(plan.files)},
        "backend": gen.describe(),
        "worst": worst,
        "warnings": plan.warnings,
    }
