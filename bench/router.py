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
a warm-up; "no cache" shows the same with the embedder's cache off (two embeddings).

    .venv/bin/python bench/router.py                    # ~2 min on 2 cores
    .venv/bin/python bench/router.py --test-fraction 0.5 --seed 3

Results: bench/results/router.json
"""

from __future__ import annotations

import argparse
import asyncio
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
) -> tuple[list, list[float]]:
    """(route, adapter) per row through Router.decide, and each decision's seconds."""
    preds, seconds = [], []
    svc.embedder.max_items = 1024 if cache else 0
    for row in rows:
        svc.embedder.clear()
        started = time.perf_counter()
        d = svc.router.decide(RouteRequest(model="auto", query=row["prompt"]), tenant)
        seconds.append(time.perf_counter() - started)
        preds.append((d.route, d.adapter.name if d.adapter is not None else None))
    svc.embedder.max_items = 1024
    return preds, seconds


def labelled(rows: list[dict]) -> list[Labelled]:
    return [Labelled(None, r["route"], r.get("adapter")) for r in rows]  # type: ignore[arg-type]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seed", type=int, default=11, help="data generation and split seed")
    ap.add_argument("--test-fraction", type=float, default=0.4, help="held-out share per path")
    ap.add_argument(
        "--model-dir", type=Path, default=REPO / "data" / "models" / "SmolLM2-135M-Instruct"
    )
    args = ap.parse_args()
    specs = build(seed=args.seed)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        settings = Settings.load(data_dir=tmp / "data", model_dir=args.model_dir, demo_tenant="")
        svc = Services(settings)
        counter = CountingEmbedder(svc.embedder.inner)
        svc.embedder.inner = counter
        print("setting up tenants, documents and adapters ...", file=sys.stderr)
        setup(svc, specs, args.model_dir, tmp)
        results: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
        latency: dict[str, list[float]] = defaultdict(list)
        embeds: dict[str, float] = {}
        per_tenant: dict[str, Any] = {}
        all_test: list[dict] = []
        for spec in specs:
            tenant = svc.tenants.require(spec.name)
            train, test = split(spec, args.test_fraction, args.seed)
            all_test += test
            # Warm-up: load the model, exemplar embeddings, Chroma, BM25.
            decisions(svc, tenant, train[:5])
            results["always-prompt"]["preds"] += [("prompt", None)] * len(test)
            results["always-rag"]["preds"] += [("rag", None)] * len(test)
            before = counter.texts
            preds, secs = decisions(svc, tenant, test)
            embeds[spec.name] = (counter.texts - before) / len(test)
            results["thresholds"]["preds"] += preds
            latency["thresholds"] += secs
            _, secs = decisions(svc, tenant, test, cache=False)
            latency["thresholds, no embedding cache"] += secs
            examples = [Example(r["prompt"], r["route"], r.get("adapter")) for r in train]
            t0 = time.perf_counter()
            result = svc.calibration.calibrate(tenant, examples)
            calibrate_s = time.perf_counter() - t0
            preds, secs = decisions(svc, tenant, test)
            results["calibrated"]["preds"] += preds
            latency["calibrated"] += secs
            # Both candidates, fitted on the calibration part, judged on the held-out part.
            rules = Rules(tuple(tenant.policy.routes), True)
            train_l = svc.calibration.measure(tenant, examples)
            test_l = svc.calibration.measure(
                tenant, [Example(r["prompt"], r["route"], r.get("adapter")) for r in test]
            )
            for name, model in (
                ("candidate: logistic", fit_logistic(train_l)),
                ("candidate: tuned thresholds", tune_thresholds(train_l, rules, ThresholdModel())),
            ):
                results[name]["preds"] += [decide_one(model, ex.signals, rules) for ex in test_l]
            per_tenant[spec.name] = {
                "prompts": len(spec.prompts),
                "calibration_examples": len(train),
                "held_out": len(test),
                "version": result.version.label if result.version else None,
                "kind": result.kind,
                "cv_accuracy": result.after.accuracy,
                "candidates_cv": result.candidates,
                "calibrate_s": round(calibrate_s, 2),
                "query_embeddings_per_decision": round(embeds[spec.name], 2),
            }
        truth = labelled(all_test)
        rows, payload = [], {}
        for method in ("always-prompt", "always-rag", "thresholds", "calibrated",
                       "candidate: logistic", "candidate: tuned thresholds"):  # fmt: skip
            ev = evaluate(results[method]["preds"], truth)
            secs = latency.get(method, [])
            p50 = round(pct([s * 1000 for s in secs], 50), 1) if secs else None
            p95 = round(pct([s * 1000 for s in secs], 95), 1) if secs else None
            rows.append(
                [method, f"{ev.accuracy:.1%}", f"{ev.macro_f1:.3f}", p50 or "-", p95 or "-"]
            )
            payload[method] = {**ev.to_dict(), "p50_ms": p50, "p95_ms": p95}
        secs = latency["thresholds, no embedding cache"]
        nocache = {
            "p50_ms": round(pct([s * 1000 for s in secs], 50), 1),
            "p95_ms": round(pct([s * 1000 for s in secs], 95), 1),
        }
        rows.append(
            ["thresholds, no embedding cache", "", "", nocache["p50_ms"], nocache["p95_ms"]]
        )
        n_labels = {
            p: sum(r["route"] == p for r in all_test)
            for p in ("prompt", "rag", "adapter", "combined")
        }
        print_table(
            f"Routing on {len(all_test)} held-out prompts ({n_labels}), 2 tenants x 2 adapters",
            ["method", "accuracy", "macro-F1", "decision p50 ms", "p95 ms"],
            rows,
        )
        print_table(
            "Per tenant",
            ["tenant", "prompts", "calibration / held out", "fitted", "cv accuracy", "embeddings/decision"],
            [[k, v["prompts"], f"{v['calibration_examples']} / {v['held_out']}", f"{v['version']} {v['kind']}",
              f"{v['cv_accuracy']:.1%}", v["query_embeddings_per_decision"]] for k, v in per_tenant.items()],
        )  # fmt: skip
        path = write_result(
            "router",
            {
                "held_out": len(all_test),
                "labels": n_labels,
                "total_prompts": sum(len(s.prompts) for s in specs),
                "test_fraction": args.test_fraction,
                "seed": args.seed,
                "methods": payload,
                "no_embedding_cache": nocache,
                "tenants": per_tenant,
            },
        )
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
