"""Training speed and effect: the project's SFT against a plain transformers + peft loop, and
whether training measurably changes the model on a strict-JSON task.

1. Throughput: every configuration trains --steps steps of 8 examples (at most 128 tokens, LoRA
   rank 8 on all linear layers) in its own process on the same data: first a plain loop
   (tokenize, pad, forward with labels, backward, AdamW step; the answer-only loss), then
   `train_sft` with LoRA, LoRA + padding-free batches, and QLoRA. Rounds are interleaved
   (--rounds) so load from other processes hits every configuration alike; the speedup is the
   median of each round's ratio to that round's plain loop, in tokens/s (wall) and in CPU s
   per 1k tokens. tokens/s counts non-padding input tokens over the training loop's wall time
   on both sides (the project's includes its final checkpoint, its step-0 validation does not
   count); CPU s per 1k tokens (all threads) is less sensitive to a busy machine than wall time.
2. Effect: a LoRA adapter is trained on the generated strict-JSON task, then `training.evaluate`
   has base and adapter answer held-out examples greedily (transformers back-end by default) and
   a few general-set items; JSON compliance, key match and exact match are compared.

    .venv/bin/python bench/training.py                       # 8 steps, 2 rounds, 40 effect steps
    .venv/bin/python bench/training.py --steps 4 --rounds 3 --effect-steps 0 --threads 1

Results: bench/results/training.json
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import print_table, write_result  # noqa: E402

PLAIN = "plain loop (transformers + peft)"
CONFIGS = {
    PLAIN: {},
    "LoRA": {},
    "LoRA + padding-free": {"packing": True},
    "QLoRA (nf4)": {"qlora": True},
}
BATCH, MAX_LENGTH = 8, 128


def _config(model_dir: str, steps: int, **extra: Any) -> Any:
    from training.config import TrainConfig

    return TrainConfig(
        base_model_dir=Path(model_dir),
        max_steps=steps,
        batch_size=BATCH,
        max_length=MAX_LENGTH,
        eval_steps=10_000,
        warmup_ratio=0.0,
        **extra,
    )


def plain_loop(cfg: Any, data_dir: Path) -> dict[str, Any]:
    """The obvious alternative: chat template, right padding, the model's own loss on full
    logits (prompt labels -100), backward, AdamW; nothing else."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.formats import read_examples
    from training.run import lora_config

    rows = read_examples(data_dir / "train.jsonl")
    tok = AutoTokenizer.from_pretrained(cfg.base_model_dir)
    tok.pad_token = tok.pad_token or tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(cfg.base_model_dir, dtype=torch.float32)
    torch.manual_seed(cfg.seed)
    model = get_peft_model(model, lora_config(cfg))
    opt = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate
    )
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
    model.train()
    tokens, loss = 0, float("nan")
    wall, cpu = time.perf_counter(), time.process_time()
    for step in range(cfg.max_steps):
        batch = [rows[i] for i in order[step * BATCH : (step + 1) * BATCH]]
        prompts = [
            tok.apply_chat_template(r["messages"][:-1], tokenize=False, add_generation_prompt=True)
            for r in batch
        ]
        fulls = [tok.apply_chat_template(r["messages"], tokenize=False) for r in batch]
        enc = tok(
            fulls,
            add_special_tokens=False,
            truncation=True,
            max_length=MAX_LENGTH,
            padding=True,
            return_tensors="pt",
        )
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        for i, p in enumerate(tok(prompts, add_special_tokens=False)["input_ids"]):
            labels[i, : len(p)] = -100
        out = model(**enc, labels=labels)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += int(enc["attention_mask"].sum())
        loss = float(out.loss.detach())
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"tokens": tokens, "wall_s": wall, "cpu_s": cpu, "final_train_loss": round(loss, 4)}


def project(cfg: Any, data_dir: Path, out: Path) -> dict[str, Any]:
    """`train_sft` as `loraplex train` runs it; CPU time measured around its training loop."""
    from training import loop
    from training.sft import train_sft

    cpu: dict[str, float] = {}
    original = loop.Loop.train

    def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.process_time()
        try:
            return original(self, *args, **kwargs)
        finally:
            cpu["s"] = time.process_time() - started

    loop.Loop.train = timed  # type: ignore[method-assign]
    report = train_sft(cfg, data_dir, out, progress=False).report
    return {
        "tokens": report["tokens_seen"],
        "wall_s": report["wall_s"],
        "cpu_s": cpu["s"],
        "final_train_loss": report["last_train_loss"],
    }


def _child(
    label: str, model_dir: str, data_dir: str, out: str, steps: int, threads: int, q: Any
) -> None:
    import torch

    # The same threads on both sides: the project's default, one per CPU this process may use.
    threads = threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    cfg = _config(model_dir, steps, threads=threads, **CONFIGS[label])
    r = (
        plain_loop(cfg, Path(data_dir))
        if label == PLAIN
        else project(cfg, Path(data_dir), Path(out))
    )
    r["tokens_per_s"] = round(r["tokens"] / r["wall_s"], 1)
    r["cpu_s_per_1k_tokens"] = round(1000 * r["cpu_s"] / r["tokens"], 2)
    r["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    r["threads"] = torch.get_num_threads()
    q.put(r)


def throughput(args: argparse.Namespace, data_dir: Path, root: Path) -> dict[str, Any]:
    """Every configuration once per round, rounds interleaved; medians and paired speedups."""
    ctx = mp.get_context("spawn")
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in CONFIGS}
    load_before = os.getloadavg()
    for rnd in range(args.rounds):
        for label in CONFIGS:
            q = ctx.Queue()
            p = ctx.Process(
                target=_child,
                args=(
                    label,
                    args.model_dir,
                    str(data_dir),
                    str(root / f"{label}-{rnd}"),
                    args.steps,
                    args.threads,
                    q,
                ),
            )
            p.start()
            p.join()
            runs[label].append(q.get() if p.exitcode == 0 else {"error": f"exit code {p.exitcode}"})
            print(f"round {rnd + 1}/{args.rounds} {label}: {runs[label][-1]}", file=sys.stderr)
    summary: dict[str, Any] = {}
    for label, results in runs.items():
        ok = [r for r in results if "error" not in r]
        ratios = [
            r["tokens_per_s"] / b["tokens_per_s"]
            for r, b in zip(results, runs[PLAIN], strict=True)
            if "error" not in r and "error" not in b
        ]
        # CPU time per token: what the configuration costs, whatever share of the cores the
        # other processes left it (wall time, hence tokens/s, depends on that share).
        cpu_ratios = [
            b["cpu_s_per_1k_tokens"] / r["cpu_s_per_1k_tokens"]
            for r, b in zip(results, runs[PLAIN], strict=True)
            if "error" not in r and "error" not in b
        ]
        summary[label] = {
            "tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in ok), 1)
            if ok
            else None,
            "speedup_vs_plain": round(statistics.median(ratios), 2) if ratios else None,
            "cpu_speedup_vs_plain": round(statistics.median(cpu_ratios), 2) if cpu_ratios else None,
            "cpu_s_per_1k_tokens": round(statistics.median(r["cpu_s_per_1k_tokens"] for r in ok), 2)
            if ok
            else None,
            "peak_rss_mb": max((r["peak_rss_mb"] for r in ok), default=None),
            "runs": results,
        }
    conditions = {
        "rounds": args.rounds,
        "steps": args.steps,
        "batch": BATCH,
        "max_length": MAX_LENGTH,
        "threads": runs[PLAIN][0].get("threads"),
        "cpus": os.cpu_count(),
        "load_avg_before": load_before,
        "load_avg_after": os.getloadavg(),
    }
    rows = [
        [
            label,
            s["tokens_per_s"],
            f"{s['speedup_vs_plain']}x",
            s["cpu_s_per_1k_tokens"],
            f"{s['cpu_speedup_vs_plain']}x",
            s["peak_rss_mb"],
        ]
        for label, s in summary.items()
    ]
    print_table(
        f"SFT throughput: {args.steps} steps of {BATCH} x <={MAX_LENGTH} tokens, median of {args.rounds} "
        f"rounds, {conditions['threads']} threads, load {load_before[0]:.1f} -> {conditions['load_avg_after'][0]:.1f}",
        [
            "configuration",
            "tokens/s",
            "vs plain (wall)",
            "CPU s / 1k tokens",
            "vs plain (CPU)",
            "peak RSS MB",
        ],
        rows,
    )
    return {"conditions": conditions, "configs": summary}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model-dir", default="data/models/SmolLM2-135M-Instruct")
    ap.add_argument("--steps", type=int, default=8, help="steps per throughput run")
    ap.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="interleaved repetitions of every configuration (0: skip)",
    )
    ap.add_argument(
        "--threads", type=int, default=0, help="torch threads in every run (0: one per CPU)"
    )
    ap.add_argument(
        "--effect-steps", type=int, default=40, help="steps for the JSON-task adapter (0: skip)"
    )
    ap.add_argument("--heldout", type=int, default=20, help="held-out examples for the effect")
    ap.add_argument(
        "--general-limit", type=int, default=8, help="general-set items (forgetting check)"
    )
    ap.add_argument(
        "--eval-backend",
        default="transformers",
        choices=["transformers", "vllm"],
        help="what generates the effect's answers (vllm: the offline engine, slow to start)",
    )
    args = ap.parse_args()

    from training.config import TrainConfig
    from training.curation import PrepareConfig, prepare
    from training.evaluate import evaluate
    from training.formats import write_jsonl
    from training.sft import train_sft
    from training.synthetic import json_task

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_jsonl(root / "raw.jsonl", json_task(400, seed=1))
        prepare(
            [root / "raw.jsonl"],
            root / "data",
            PrepareConfig(dedup_threshold=1.0, validation_fraction=0.05, test_fraction=0.1),
        )
        if args.rounds > 0:
            results["throughput"] = throughput(args, root / "data", root)
        if args.effect_steps > 0:
            cfg = TrainConfig(
                base_model_dir=Path(args.model_dir),
                max_steps=args.effect_steps,
                batch_size=BATCH,
                max_length=MAX_LENGTH,
                learning_rate=5e-4,
                eval_steps=10,
                threads=args.threads,
            )
            run = train_sft(cfg, root / "data", root / "effect", progress=False)
            report = evaluate(
                run.adapter_dir,
                root / "data",
                Path(args.model_dir),
                backend=args.eval_backend,
                limit=args.heldout,
                general_limit=args.general_limit,
                out_dir=root / "effect-eval",
            )
            shown = ["json_valid", "key_match", "exact_match", "general_accuracy"]
            results["effect"] = {
                "steps": args.effect_steps,
                "heldout": report["data"]["examples"],
                "general_items": report["general"]["overall"]["items"],
                "backend": args.eval_backend,
                "base": {k: report["base"].get(k) for k in shown},
                "adapter": {k: report["adapter"].get(k) for k in shown},
                "verdict": report["verdict"],
            }
            print_table(
                f"strict-JSON task, {report['data']['examples']} held-out examples and "
                f"{report['general']['overall']['items']} general items, adapter after "
                f"{args.effect_steps} steps ({report['verdict']})",
                ["metric", "base", "adapter"],
                [
                    [k, f"{report['base'][k]:.3f}", f"{report['adapter'][k]:.3f}"]
                    for k in shown
                    if report["base"].get(k) is not None
                ],
            )
    path = write_result("training", results)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
