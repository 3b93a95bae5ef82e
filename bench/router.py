"""Routing accuracy and decision latency: always-prompt, always-rag, thresholds, calibrated.

Generates its own labelled set (bench/router_data.py: two tenants, two adapters each, their
own documents, about 240 prompts over all four paths, hard cases included), builds the real
services from Settings in a temporary data_dir (embedded Chroma, SQLite, the bundled
all-MiniLM-L6-v2; random LoRA adapters registered with exemplars; no vLLM: deciding does not
generate), splits each tenant's prompts into a calibration part and a held-out part
(stratified by path), runs `router calibrate` on the first and compares, on the held-out part:

- always-prompt, always-rag: the two constant baselines;
- thresholds: the router without calibration (the policy's 0.45 / 0.5);
- calibrated: the tenant's fitted version, through `Router.decide` as a request would;
- and, for insight, both calibration candidates (logistic regression, tuned thresholds).

Accuracy counts a decision right when its path matches the label and, on adapter paths, the
adapter too. Decision latency is `Router.decide` wall time per request with the query
embedding cache cleared first (so each decision embeds its query once, and searches), after
a warm-up; "no embedding cache" shows the same with the embedder's cache off (the query
embedded again by the search). Wall time depends on how busy the machine is (the load average
is printed); CPU time is what a decision costs the process. The embedder uses one torch
thread, as the gateway does (setting embedding_threads); --torch-threads 0 shows torch's default.

Accuracy is reported for the first split (end to end through the gateway's code path) and as
the mean over --splits random splits (calibrated again on each; signals are measured once).

    .venv/bin/python bench/router.py                    # ~2 min on 2 cores
    .venv/bin/python bench/router.py --test-fraction 0.5 --seed 3
    .venv/bin/python bench/router.py --torch-threads 0      # torch's default threads

Results: bench/results/router.json
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import make_random_adapter, pct, print_table, write_result  # noqa: E402
from router_data import TenantSpec, build  # noqa: E402

from serve.routing import RouteRequest  # noqa: E402
from serve.routing.calibration import Example  # noqa: E402
from serve.routing.fitting import (
    Labelled,
    Rules,
    decide_one,
    evaluate,
    fit,
    fit_logistic,
    tune_thresholds,
)  # noqa: E402
from serve.routing.models import ThresholdModel  # noqa: E402
from serve.services import Services  # noqa: E402
from serve.settings import Settings  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


class CountingEmbedder:
    """Counts texts the model really embeds (under the cache)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.name, self.texts = inner, inner.name, 0

    @property
    def dim(self) -> int:
        return int(self.inner.dim)

    def embed(self, texts: list[str]) -> list[list[float]]:
        self.texts += len(texts)
        return list(self.inner.embed(texts))


def split(spec: TenantSpec, fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Stratified by path: `fraction` of each path's prompts held out."""
    rng = random.Random(seed)
    by_route: dict[str, list[dict]] = defaultdict(list)
    for row in spec.prompts:
        by_route[row["route"]].append(row)
    train, test = [], []
    for rows in by_route.values():
        rows = list(rows)
        rng.shuffle(rows)
        k = round(len(rows) * fraction)
        test += rows[:k]
        train += rows[k:]
    return train, test


def setup(svc: Services, specs: list[TenantSpec], model_dir: Path, tmp: Path) -> None:
    """Tenants, their documents, and adapters registered with exemplars."""
    seed = 0
    for spec in specs:
        svc.tenants.create(spec.name)
        svc.retrieval.ingest_records(spec.name, spec.documents)
        for name, exemplars in spec.adapters.items():
            seed += 1
            path = make_random_adapter(model_dir, tmp / "adapters" / name, seed=seed)
            asyncio.run(svc.adapters.register(path, name, owner=spec.name, exemplars=exemplars))


def decisions(
    svc: Services, tenant: Any, rows: list[dict], cache: bool = True
) -> tuple[list, list[float], list[float]]:
    """(route, adapter) per row through Router.decide, each decision's wall and CPU seconds."""
    preds, wall, cpu = [], [], []
    svc.embedder.max_items = 1024 if cache else 0
    for row in rows:
        svc.embedder.clear()
        started, started_cpu = time.perf_counter(), time.process_time()
        d = svc.router.decide(RouteRequest(model="auto", query=row["prompt"]), tenant)
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
        preds.append((d.route, d.adapter.name if d.adapter is not None else None))
    svc.embedder.max_items = 1024
    return preds, wall, cpu


def labelled(rows: list[dict]) -> list[Labelled]:
    """Labels only (for scoring constant and end-to-end predictions)."""
    return [Labelled(None, r["route"], r.get("adapter")) for r in rows]  # type: ignore[arg-type]


def ms(samples: list[float]) -> dict[str, float]:
    values = [x * 1000 for x in samples]
    return {"p50_ms": round(pct(values, 50), 1), "p95_ms": round(pct(values, 95), 1)}


def examples_of(rows: list[dict]) -> list[Example]:
    return [Example(r["prompt"], r["route"], r.get("adapter")) for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seed", type=int, default=11, help="data generation and first split seed")
    ap.add_argument("--splits", type=int, default=5, help="random splits to average accuracy over")
    ap.add_argument("--test-fraction", type=float, default=0.4, help="held-out share per path")
    ap.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch threads for query embeddings, as the gateway's embedding_threads (0: torch's default)",
    )
    ap.add_argument(
        "--model-dir", type=Path, default=REPO / "data" / "models" / "SmolLM2-135M-Instruct"
    )
    args = ap.parse_args()
    specs = build(seed=args.seed)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        settings = Settings.load(data_dir=tmp / "data", model_dir=args.model_dir, demo_tenant="")
        svc = Services(settings)
        counter = CountingEmbedder(svc.embedder.inner)
        svc.embedder.inner = counter
        svc.embedder.threads = args.torch_threads  # as the gateway does (embedding_threads)
        print("setting up tenants, documents and adapters ...", file=sys.stderr)
        setup(svc, specs, args.model_dir, tmp)
        wall: dict[str, list[float]] = defaultdict(list)
        cpu: dict[str, list[float]] = defaultdict(list)
        first: dict[str, list] = defaultdict(list)  # the first split, end to end
        first_truth: list[Labelled] = []
        per_tenant: dict[str, Any] = {}
        measured: dict[str, dict[str, Labelled]] = {}
        for spec in specs:
            tenant = svc.tenants.require(spec.name)
            train, test = split(spec, args.test_fraction, args.seed)
            first_truth += labelled(test)
            decisions(svc, tenant, train[:5])  # warm-up: model, exemplar vectors, Chroma, BM25
            first["always-prompt"] += [("prompt", None)] * len(test)
            first["always-rag"] += [("rag", None)] * len(test)
            before = counter.texts
            preds, w, c = decisions(svc, tenant, test)
            embedded = (counter.texts - before) / len(test)
            first["thresholds"] += preds
            wall["thresholds"] += w
            cpu["thresholds"] += c
            _, w, c = decisions(svc, tenant, test, cache=False)
            wall["no embedding cache"] += w
            cpu["no embedding cache"] += c
            t0 = time.perf_counter()
            result = svc.calibration.calibrate(tenant, examples_of(train))
            calibrate_s = time.perf_counter() - t0
            preds, w, c = decisions(svc, tenant, test)
            first["calibrated"] += preds
            wall["calibrated"] += w
            cpu["calibrated"] += c
            # Every prompt's signals, once: the repeated splits below refit on them.
            all_l = svc.calibration.measure(tenant, examples_of(spec.prompts))
            measured[spec.name] = {
                r["prompt"]: ex for r, ex in zip(spec.prompts, all_l, strict=True)
            }
            per_tenant[spec.name] = {
                "prompts": len(spec.prompts),
                "calibration_examples": len(train),
                "held_out": len(test),
                "version": result.version.label if result.version else None,
                "kind": result.kind,
                "cv_accuracy": result.after.accuracy,
                "candidates_cv": result.candidates,
                "calibrate_s": round(calibrate_s, 2),
                "texts_embedded_per_decision": round(embedded, 2),
            }
        # Repeated random splits: the same refit, judged on each held-out part.
        rules = Rules()
        repeats: dict[str, list[float]] = defaultdict(list)
        f1s: dict[str, list[float]] = defaultdict(list)
        for r in range(args.splits):
            preds_by: dict[str, list] = defaultdict(list)
            truth: list[Labelled] = []
            for spec in specs:
                train, test = split(spec, args.test_fraction, args.seed + r)
                tr = [measured[spec.name][x["prompt"]] for x in train]
                te = [measured[spec.name][x["prompt"]] for x in test]
                truth += te
                fitted = fit(tr, rules, ThresholdModel())
                models = {"thresholds": ThresholdModel(), "calibrated": fitted.model,
                          "candidate: logistic": fit_logistic(tr),
                          "candidate: tuned thresholds": tune_thresholds(tr, rules, ThresholdModel())}  # fmt: skip
                for name, model in models.items():
                    preds_by[name] += [decide_one(model, ex.signals, rules) for ex in te]
                preds_by["always-prompt"] += [("prompt", None)] * len(te)
                preds_by["always-rag"] += [("rag", None)] * len(te)
            for name, preds in preds_by.items():
                ev = evaluate(preds, truth)
                repeats[name].append(ev.accuracy)
                f1s[name].append(ev.macro_f1)
        rows, payload = [], {}
        for method in ("always-prompt", "always-rag", "thresholds", "calibrated",
                       "candidate: logistic", "candidate: tuned thresholds", "no embedding cache"):  # fmt: skip
            ev = evaluate(first[method], first_truth) if method in first else None
            acc = repeats.get(method, [])
            mean = sum(acc) / len(acc) if acc else None
            lat_w = ms(wall[method]) if method in wall else None
            lat_c = ms(cpu[method]) if method in cpu else None
            rows.append([
                method,
                f"{ev.accuracy:.1%}" if ev else "-",
                f"{ev.macro_f1:.3f}" if ev else "-",
                f"{mean:.1%} ({min(acc):.1%}-{max(acc):.1%})" if acc else "-",
                f"{sum(f1s[method]) / len(acc):.3f}" if acc else "-",
                f"{lat_w['p50_ms']} / {lat_w['p95_ms']}" if lat_w else "-",
                f"{lat_c['p50_ms']} / {lat_c['p95_ms']}" if lat_c else "-",
            ])  # fmt: skip
            payload[method] = {
                "first_split": ev.to_dict() if ev else None,
                "splits_accuracy": acc,
                "splits_macro_f1": f1s.get(method, []),
                "mean_accuracy": round(mean, 4) if mean is not None else None,
                "wall": lat_w,
                "cpu": lat_c,
            }
        load_after = os.getloadavg()[0]
        n_labels = {
            p: sum(t.route == p for t in first_truth)
            for p in ("prompt", "rag", "adapter", "combined")
        }
        print_table(
            f"Routing, held out per path ({args.test_fraction:.0%}); first split {len(first_truth)} prompts {n_labels}; "
            f"load average {load_before:.1f} -> {load_after:.1f} on {os.cpu_count()} cores",
            ["method", "accuracy (1st split)", "macro-F1", f"accuracy, {args.splits} splits: mean (min-max)",
             "macro-F1 mean", "decision wall p50/p95 ms", "CPU p50/p95 ms"],
            rows,
        )  # fmt: skip
        print_table(
            "Per tenant (first split)",
            ["tenant", "prompts", "calibration / held out", "fitted", "cv accuracy", "texts embedded/decision"],
            [[k, v["prompts"], f"{v['calibration_examples']} / {v['held_out']}", f"{v['version']} {v['kind']}",
              f"{v['cv_accuracy']:.1%}", v["texts_embedded_per_decision"]] for k, v in per_tenant.items()],
        )  # fmt: skip
        path = write_result(
            "router",
            {
                "total_prompts": sum(len(s.prompts) for s in specs),
                "first_split_labels": n_labels,
                "test_fraction": args.test_fraction,
                "seed": args.seed,
                "splits": args.splits,
                "load_average": [load_before, load_after],
                "torch_threads": args.torch_threads or "default",
                "methods": payload,
                "tenants": per_tenant,
            },
        )
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
