"""What feedback, capture and drift cost: on the chat path, in the background, per 10k requests.

1. Chat path (in-process, interleaved): the gateway's per-request bookkeeping
   (`ChatRecorder`: metrics, request log) with the production loop off (no recorder), and on
   with capture off, redacted and full. The difference is what the loop adds to a request: a
   trace, the cached query vector, a record queued. Streams: 64 chunks through `Trace.chunk`.
2. Background, per request (amortized over a flush of 1000): writing the records (one
   transaction), the PII pass for captures, folding into the drift statistics, adding the
   buckets to the database.
3. Drift per 10k requests: folding them into running sums (384-dim embeddings, similarity to
   16 exemplars) plus writing the buckets and computing a report, next to the obvious
   alternative: keeping every request's embedding and computing the statistics at report time
   (time, and bytes kept).

Real services on a temporary SQLite data_dir; the embedder is a deterministic 384-dim stand-in
(the router has already embedded each query; nothing here runs a model). Timings on 2 shared
cores are noisy; the load average is printed.

    .venv/bin/python bench/feedback.py                  # ~1 min
    .venv/bin/python bench/feedback.py --requests 5000

Results: bench/results/feedback.json
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import pct, print_table, write_result  # noqa: E402

DIM = 384
PROMPT = (
    "Extract the customer's order as JSON with items, quantities and the delivery address: "
    "two blue mugs and one kettle to 14 Oak Drive, York; call 07700 900123 or mail "
    "jane.doe@example.com if anything is out of stock, thanks a lot for your help"
)
ANSWER = (
    '{"items": [{"name": "blue mug", "quantity": 2}, {"name": "kettle", "quantity": 1}], '
    '"address": "14 Oak Drive, York", "contact": "jane.doe@example.com"}'
)


class StandIn:
    """Deterministic unit vectors from a text's hash (no model)."""

    name = "stand-in"
    dim = DIM

    def embed(self, texts: list[str]) -> list[list[float]]:
        out = []
        for t in texts:
            seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:4], "big")
            v = np.random.default_rng(seed).standard_normal(DIM)
            out.append((v / np.linalg.norm(v)).tolist())
        return out


def setup(root: Path) -> SimpleNamespace:
    from adapters.registry import AdapterVersion
    from serve.chat.protocol import ChatCompletionRequest
    from serve.feedback.recorder import Recorder
    from serve.gateway.metrics import Metrics
    from serve.gateway.requestlog import RequestLog
    from serve.monitor.stats import Accumulator
    from serve.routing import Decision
    from serve.routing.caches import CachedEmbedder
    from serve.services import Services
    from serve.settings import Settings

    services = Services(Settings(data_dir=root))
    embedder = CachedEmbedder(StandIn())
    exemplars = [f"exemplar prompt {i} about orders" for i in range(16)]
    vectors = embedder.inner.embed(exemplars)
    av = AdapterVersion(
        name="orders",
        version=1,
        digest="0" * 64,
        path=root,
        base_model="base",
        rank=8,
        alpha=8.0,
        target_modules=["q_proj"],
        size_bytes=1,
        created_at=datetime.now(UTC),
        exemplars=exemplars,
    )
    tenants = {
        mode: services.tenants.create(f"t-{mode}", {"capture": mode})[0]
        for mode in ("off", "redacted", "full")
    }
    recorder = Recorder(
        services.db,
        accumulator=Accumulator(3600),
        embedder=embedder,
        exemplar_vectors=lambda _: vectors,
        embed_missing=False,
    )
    log = RequestLog(root / "logs" / "requests.log")
    log.open()
    req = ChatCompletionRequest.model_validate(
        {"model": "orders", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 64}
    )
    embedder.embed([PROMPT])  # as the router does: the query's vector is in the cache
    decision = Decision("adapter", "orders-v1", av, "bench", {}, router_version="explicit")
    decision.model = "orders"
    return SimpleNamespace(
        services=services,
        recorder=recorder,
        tenants=tenants,
        req=req,
        decision=decision,
        metrics=Metrics(),
        log=log,
        vectors=vectors,
    )


def body(i: int) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{i:012d}",
        "object": "chat.completion",
        "model": "orders",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER}}],
        "usage": {"prompt_tokens": 60, "completion_tokens": 40, "total_tokens": 100},
        "loraplex": {"route": "adapter", "grounded": 0.8},
    }


def chat_path(env: SimpleNamespace, n: int) -> dict[str, Any]:
    """Per-request bookkeeping with the loop off and on, interleaved."""
    from serve.gateway.routes.chat import ChatRecorder

    modes = ["loop off", "capture off", "capture redacted", "capture full"]
    samples: dict[str, list[float]] = {m: [] for m in modes}
    states = {
        m: SimpleNamespace(
            metrics=env.metrics,
            request_log=env.log,
            recorder=None if m == "loop off" else env.recorder,
        )
        for m in modes
    }
    tenant_of = {
        "loop off": env.tenants["off"],
        "capture off": env.tenants["off"],
        "capture redacted": env.tenants["redacted"],
        "capture full": env.tenants["full"],
    }
    counter = 0
    for i in range(n):
        order = modes[i % 4 :] + modes[: i % 4]  # who goes first rotates
        for mode in order:
            counter += 1
            payload = body(counter)
            started = time.perf_counter()
            record = ChatRecorder(states[mode], tenant_of[mode], env.req)  # type: ignore[arg-type]
            if record.trace is not None:
                record.trace.body(payload)
            record(200, "orders", env.decision, payload["usage"])
            samples[mode].append(time.perf_counter() - started)
        if env.recorder.pending() >= 2000:
            env.recorder.flush()  # in the gateway: the production loop, off the request path
    env.recorder.flush()
    base = statistics.median(samples["loop off"])
    out = {}
    for mode in modes:
        ms = [s * 1000 for s in samples[mode]]
        out[mode] = {
            "p50_ms": round(pct(ms, 50), 4),
            "p95_ms": round(pct(ms, 95), 4),
            "added_p50_ms": round(pct(ms, 50) - base * 1000, 4),
        }
    return out


def stream_chunks(env: SimpleNamespace, n: int) -> dict[str, Any]:
    """`Trace.chunk` over a 64-chunk stream, capture off vs full."""
    chunks = [
        {"id": "chatcmpl-s", "choices": [{"index": 0, "delta": {"content": f"tok{i} "}}]}
        for i in range(64)
    ]
    out = {}
    for mode in ("off", "full"):
        times = []
        for _ in range(n):
            trace = env.recorder.trace(env.tenants[mode], env.req)
            started = time.perf_counter()
            for c in chunks:
                trace.chunk(c)
            times.append(time.perf_counter() - started)
        out[f"capture {mode}"] = round(pct([t * 1000 for t in times], 50), 4)
    return out


def background(env: SimpleNamespace, batch: int) -> dict[str, Any]:
    """Flush cost per record: write, redact, fold, buckets."""
    from serve.feedback.recorder import Record
    from serve.feedback.service import utcnow

    vector = env.vectors[0]
    out = {}
    for mode in ("off", "off", "redacted", "full"):  # the first round warms up
        tenant = env.tenants[mode]
        for i in range(batch):
            env.recorder.submit(
                Record(
                    id=f"bg-{mode}-{i}-{time.monotonic_ns()}",
                    tenant=tenant,
                    created_at=utcnow(),
                    model="orders",
                    status=200,
                    latency_ms=120.0,
                    decision=env.decision,
                    source_ids=[],
                    grounded=0.8,
                    vector=vector,
                    request=env.req if mode != "off" else None,
                    answer=ANSWER if mode != "off" else None,
                )
            )
        started = time.perf_counter()
        written = env.recorder.flush()
        seconds = time.perf_counter() - started
        out[f"capture {mode}"] = round(seconds * 1000 / written, 4)
    return out


def drift(env: SimpleNamespace, n: int) -> dict[str, Any]:
    """Running sums vs keeping every embedding, for n requests."""
    from serve.monitor.drift import closest_similarity
    from serve.monitor.stats import HIST_BINS, Accumulator, write_buckets

    rng = np.random.default_rng(0)
    queries = rng.standard_normal((n, DIM)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exemplars = np.asarray(env.vectors, dtype=np.float32)
    tenant = env.tenants["off"]
    now = datetime.now(UTC)
    acc = Accumulator(3600)
    started = time.perf_counter()
    for q in queries:
        acc.add(
            tenant.id,
            "orders",
            now,
            status=200,
            latency_ms=100.0,
            route="adapter",
            vector=q,
            similarity=closest_similarity(q, exemplars),
            grounded=0.8,
        )
    fold_s = time.perf_counter() - started
    started = time.perf_counter()
    write_buckets(env.services.db, acc.drain())
    write_s = time.perf_counter() - started
    monitor = env.services.monitor
    monitor.exemplar_vectors = lambda _: env.vectors
    started = time.perf_counter()
    monitor.report(tenant, questions=False)
    report_s = time.perf_counter() - started
    # The alternative: every embedding kept, statistics computed when asked.
    started = time.perf_counter()
    kept = queries.copy()
    mean = kept.mean(axis=0)
    sims = (kept @ exemplars.T).max(axis=1)
    bins = np.clip((sims * HIST_BINS).astype(int), 0, HIST_BINS - 1)  # as hist_bin, vectorised
    hist = np.bincount(bins, minlength=HIST_BINS)
    alt_s = time.perf_counter() - started
    del mean, hist
    return {
        "requests": n,
        "fold_ms": round(fold_s * 1000, 1),
        "fold_us_per_request": round(fold_s * 1e6 / n, 2),
        "write_buckets_ms": round(write_s * 1000, 2),
        "report_ms": round(report_s * 1000, 2),
        "bytes_kept_running_sums": DIM * 8 + 200,  # one bucket row: the vector sum plus counters
        "alternative_report_ms": round(alt_s * 1000, 1),
        "alternative_bytes_kept": int(kept.nbytes),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=3000, help="chat-path requests per mode")
    ap.add_argument("--batch", type=int, default=1000, help="records per background flush")
    ap.add_argument("--drift-requests", type=int, default=10_000)
    args = ap.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-feedback-") as tmp:
        env = setup(Path(tmp))
        for i in range(200):  # warm-up: imports, first statements, caches
            chat_path_warm(env, i)
        env.recorder.flush()
        path = chat_path(env, args.requests)
        chunks = stream_chunks(env, 500)
        bg = background(env, args.batch)
        dr = drift(env, args.drift_requests)
        env.log.close()
        env.services.db.dispose()
    print_table(
        f"chat path, per request ({args.requests} each, interleaved; load {load:.1f})",
        ["mode", "p50 ms", "p95 ms", "added p50 ms"],
        [[m, r["p50_ms"], r["p95_ms"], r["added_p50_ms"]] for m, r in path.items()],
    )
    print_table(
        "streams: Trace.chunk over 64 chunks, p50",
        ["mode", "ms per stream"],
        [[m, v] for m, v in chunks.items()],
    )
    print_table(
        f"background flush, per request (batches of {args.batch})",
        ["mode", "ms per request"],
        [[m, v] for m, v in bg.items()],
    )
    print_table(
        f"drift statistics for {dr['requests']} requests",
        ["step", "running sums (ours)", "every embedding kept"],
        [
            ["fold on the way in", f"{dr['fold_ms']} ms ({dr['fold_us_per_request']} us/req)", "-"],
            ["write buckets", f"{dr['write_buckets_ms']} ms", "-"],
            ["report", f"{dr['report_ms']} ms", f"{dr['alternative_report_ms']} ms"],
            ["bytes kept", dr["bytes_kept_running_sums"], dr["alternative_bytes_kept"]],
        ],
    )
    out = write_result(
        "feedback",
        {
            "load_avg": load,
            "chat_path": path,
            "stream_chunks_ms": chunks,
            "background_ms": bg,
            "drift": dr,
        },
    )
    print(f"results: {out}")


def chat_path_warm(env: SimpleNamespace, i: int) -> None:
    from serve.gateway.routes.chat import ChatRecorder

    state = SimpleNamespace(metrics=env.metrics, request_log=env.log, recorder=env.recorder)
    record = ChatRecorder(state, env.tenants["full"], env.req)  # type: ignore[arg-type]
    payload = body(-1 - i)
    assert record.trace is not None
    record.trace.body(payload)
    record(200, "orders", env.decision, payload["usage"])


if __name__ == "__main__":
    main()
