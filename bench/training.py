"""Training speed and effect: LoRA vs QLoRA (with and without packing), and whether training
measurably changes the model on a strict-JSON task.

1. Throughput: each configuration trains --steps steps in its own process on the same data;
   tokens/s (non-padding input tokens) and peak resident memory are reported side by side.
2. Effect: a LoRA adapter is trained on the generated strict-JSON task, then base and adapter
   answer held-out examples greedily; JSON format compliance and exact match are compared.

    .venv/bin/python bench/training.py                       # defaults: 8 steps each, 40 effect steps
    .venv/bin/python bench/training.py --steps 4 --effect-steps 20

Results: bench/results/training.json
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import print_table, write_result  # noqa: E402

CONFIGS = [("LoRA", False, False), ("LoRA + packing", False, True),
           ("QLoRA (nf4)", True, False), ("QLoRA (nf4) + packing", True, True)]  # fmt: skip


def _one(
    model_dir: str, data_dir: str, out: str, qlora: bool, packing: bool, steps: int, q
) -> None:
    from training.config import TrainConfig
    from training.sft import train_sft

    cfg = TrainConfig(base_model_dir=Path(model_dir), max_steps=steps, batch_size=8, max_length=128,
                      eval_steps=10_000, qlora=qlora, packing=packing, warmup_ratio=0.0)  # fmt: skip
    result = train_sft(cfg, Path(data_dir), Path(out), progress=False)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    q.put({"tokens_per_s": result.report["tokens_per_s"], "peak_rss_mb": round(peak_mb),
           "wall_s": result.report["wall_s"], "final_train_loss": result.report["last_train_loss"]})  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model-dir", default="data/models/SmolLM2-135M-Instruct")
    ap.add_argument("--steps", type=int, default=8, help="steps per throughput configuration")
    ap.add_argument("--effect-steps", type=int, default=40, help="steps for the JSON-task adapter")
    ap.add_argument("--heldout", type=int, default=20)
    args = ap.parse_args()

    from training.config import TrainConfig
    from training.curation import PrepareConfig, prepare
    from training.evaluate import evaluate
    from training.formats import write_jsonl
    from training.sft import train_sft
    from training.synthetic import json_task

    results: dict = {"throughput": {}, "effect": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_jsonl(root / "raw.jsonl", json_task(400, seed=1))
        prepare([root / "raw.jsonl"], root / "data",
                PrepareConfig(dedup_threshold=1.0, validation_fraction=0.05, test_fraction=0.1))  # fmt: skip
        ctx = mp.get_context("spawn")
        rows = []
        for label, qlora, packing in CONFIGS:
            q = ctx.Queue()
            p = ctx.Process(target=_one, args=(args.model_dir, str(root / "data"), str(root / label),
                                               qlora, packing, args.steps, q))  # fmt: skip
            p.start()
            p.join()
            if p.exitcode != 0:
                results["throughput"][label] = {"error": f"exit code {p.exitcode}"}
                rows.append([label, "failed", "", ""])
                continue
            r = q.get()
            results["throughput"][label] = r
            rows.append([label, r["tokens_per_s"], r["peak_rss_mb"], r["wall_s"]])
        print_table(f"training throughput, {args.steps} steps of 8 x <=128 tokens",
                    ["configuration", "tokens/s", "peak RSS MB", "wall s"], rows)  # fmt: skip

        cfg = TrainConfig(base_model_dir=Path(args.model_dir), max_steps=args.effect_steps,
                          batch_size=8, max_length=128, learning_rate=5e-4, eval_steps=10)  # fmt: skip
        run = train_sft(cfg, root / "data", root / "effect", progress=False)
        report = evaluate(run.adapter_dir, root / "data", Path(args.model_dir), limit=args.heldout)
        results["effect"] = {"steps": args.effect_steps, "heldout": report["examples"],
                             "base": report["base"], "adapter": report["adapter"], "go": report["go"]}  # fmt: skip
        print_table(
            f"strict-JSON task, {report['examples']} held-out examples, adapter after {args.effect_steps} steps",
            ["metric", "base", "adapter"],
            [
                [k, f"{report['base'][k]:.3f}", f"{report['adapter'][k]:.3f}"]
                for k in report["adapter"]
            ],
        )
    path = write_result("training", results)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
