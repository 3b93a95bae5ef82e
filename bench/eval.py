"""Evaluation speed: batched vLLM vs one-at-a-time transformers, same adapter, same prompts, same
run; and the forgetting figures (general set, per category) of a trained adapter.

1. Generation: every held-out prompt is answered greedily by the base and by the adapter
   (2 answers an example). transformers + peft one request at a time (how `loraplex eval`
   generated before) against vLLM's offline engine with everything in one batch (base requests
   without, adapter requests with the LoRARequest), and optionally a running vLLM server
   (--vllm-url; adapter loaded under a temporary name, all requests sent at once). Engine
   start-up is timed apart from generation. Agreement: share of identical answers.
2. Forgetting (--forgetting): a full `evaluate_adapter` of the adapter on the vLLM back-end with
   the whole general set, per-category accuracy for base and adapter.

    .venv/bin/python bench/eval.py                              # trains a tiny JSON adapter first
    .venv/bin/python bench/eval.py --adapter runs/json/adapter --data datasets/json --forgetting
    .venv/bin/python bench/eval.py --vllm-url http://127.0.0.1:8100   # also the server back-end

Results: bench/results/eval.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import print_table, write_result  # noqa: E402


def _tiny_adapter(model_dir: Path, root: Path, steps: int) -> tuple[Path, Path]:
    """A JSON-task adapter trained for a few steps, and its prepared dataset."""
    from training.config import TrainConfig
    from training.curation import PrepareConfig, prepare
    from training.formats import write_jsonl
    from training.sft import train_sft
    from training.synthetic import json_task

    write_jsonl(root / "raw.jsonl", json_task(400, seed=1))
    prepare([root / "raw.jsonl"], root / "data", PrepareConfig(dedup_threshold=1.0))
    cfg = TrainConfig(
        base_model_dir=model_dir,
        max_steps=steps,
        batch_size=8,
        max_length=128,
        learning_rate=1e-3,
        eval_steps=10_000,
        warmup_ratio=0.0,
    )
    run = train_sft(cfg, root / "data", root / "run", progress=False)
    return run.adapter_dir, root / "data"


def _requests(data: Path, examples: int) -> list[Any]:
    from training.evaluate.generation import GenRequest
    from training.evaluate.inputs import eval_split

    _, rows = eval_split(data, examples)
    budget = 48  # the JSON answers are about 20 tokens; room for a chatty base
    return [GenRequest(r["messages"][:-1], side, budget) for side in (False, True) for r in rows]


def _row(label: str, result: Any, baseline: float | None) -> list[Any]:
    rate = len(result.answers) / result.generate_s
    speedup = f"{rate / baseline:.1f}x" if baseline else "1.0x"
    tps = (result.output_tokens or 0) / result.generate_s
    return [
        label,
        f"{result.startup_s:.1f}",
        f"{result.generate_s:.1f}",
        len(result.answers),
        f"{rate:.2f}",
        f"{tps:.0f}",
        speedup,
    ]


def generation(args: Any, adapter: Path, data: Path) -> dict[str, Any]:
    """Time each back-end on the same requests; print the table."""
    from training.evaluate.generation import TransformersSequential, VllmOffline, VllmServerBackend
    from training.evaluate.inputs import check_adapter

    requests = _requests(data, args.examples)
    rank = check_adapter(adapter, Path(args.model_dir).name).rank
    runs: dict[str, Any] = {}
    runs["transformers (one at a time)"] = TransformersSequential(args.model_dir, adapter).generate(
        requests
    )
    runs["vLLM offline (one batch)"] = VllmOffline(
        args.model_dir, adapter, lora_rank=rank
    ).generate(requests)
    if args.vllm_url:
        runs["vLLM server (all at once)"] = VllmServerBackend(args.vllm_url, adapter).generate(
            requests
        )
    base_rate = None
    rows, out = [], {}
    reference = next(iter(runs.values())).answers
    for label, result in runs.items():
        rows.append(_row(label, result, base_rate))
        rate = len(result.answers) / result.generate_s
        base_rate = base_rate or rate
        same = sum(a.strip() == b.strip() for a, b in zip(result.answers, reference, strict=True))
        out[label] = {
            **result.describe(),
            "speedup": round(rate / base_rate, 2),
            "same_answers_as_transformers": round(same / len(reference), 3),
        }
    print_table(
        f"eval generation: {len(requests) // 2} examples x (base + adapter), greedy, <= 48 tokens",
        ["back-end", "start-up s", "generate s", "answers", "answers/s", "tokens/s", "speed-up"],
        rows,
    )
    return out


def forgetting(args: Any, adapter: Path, data: Path) -> dict[str, Any]:
    """A full evaluation with the whole general set; per-category table."""
    import time

    from training.evaluate import evaluate_adapter

    out = Path(tempfile.mkdtemp(prefix="bench-eval-"))
    started = time.perf_counter()
    report = evaluate_adapter(
        adapter,
        data,
        Path(args.model_dir),
        backend="vllm",
        general_limit=None,
        limit=args.examples,
        out_dir=out,
    )
    wall = time.perf_counter() - started
    print(f"full evaluation: {wall:.0f} s; reports in {out}")
    general = report["general"]
    rows = [
        [k, v["items"], f"{v['base']:.3f}", f"{v['adapter']:.3f}", f"{v['drop']:+.3f}"]
        for k, v in [("overall", general["overall"]), *general["categories"].items()]
    ]
    print_table(
        "forgetting: general set accuracy, base vs adapter",
        ["category", "items", "base", "adapter", "drop"],
        rows,
    )
    metric_rows = [
        [k, f"{m['base']:.3f}", f"{m['adapter']:.3f}", f"{m['difference']:+.3f}"]
        for k, m in report["metrics"].items()
    ]
    print_table(
        f"task metrics ({report['data']['examples']} held-out examples): {report['verdict']}",
        ["metric", "base", "adapter", "difference"],
        metric_rows,
    )
    return {
        "wall_s": round(wall, 1),
        "reports": str(out),
        "verdict": report["verdict"],
        "general": general,
        "metrics": report["metrics"],
        "backend": report["backend"],
        "checks": report["checks"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model-dir", default="data/models/SmolLM2-135M-Instruct", type=Path)
    ap.add_argument("--adapter", type=Path, help="adapter directory (default: train a tiny one)")
    ap.add_argument("--data", type=Path, help="its prepared dataset (with --adapter)")
    ap.add_argument("--steps", type=int, default=8, help="training steps of the tiny adapter")
    ap.add_argument("--examples", type=int, default=32, help="held-out examples to answer")
    ap.add_argument(
        "--vllm-url", help="also time a running vLLM server (LoRA + runtime updates on)"
    )
    ap.add_argument("--forgetting", action="store_true", help="also run a full evaluation")
    ap.add_argument("--skip-generation", action="store_true", help="only --forgetting")
    args = ap.parse_args()
    results: dict[str, Any] = {"examples": args.examples}
    with tempfile.TemporaryDirectory() as tmp:
        if args.adapter:
            adapter, data = args.adapter, args.data
        else:
            adapter, data = _tiny_adapter(args.model_dir, Path(tmp), args.steps)
            results["adapter"] = f"tiny JSON-task adapter, {args.steps} steps"
        if not args.skip_generation:
            results["generation"] = generation(args, adapter, data)
        if args.forgetting:
            results["forgetting"] = forgetting(args, adapter, data)
    print(f"wrote {write_result('eval', results)}")


if __name__ == "__main__":
    main()
