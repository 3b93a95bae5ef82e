"""Drift statistics and reports: sums that add up, windows, distances, warnings."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from serve.monitor.drift import (
    Inputs,
    cluster_questions,
    cosine_distance,
    exemplar_baseline,
    route_shift,
    summarise,
)
from serve.monitor.stats import Accumulator, BucketStats, bucket_start, read_buckets, write_buckets
from serve.tenants import DriftThresholds

NOW = datetime(2026, 12, 6, 12, 30, tzinfo=UTC)
HOUR = 3600


def unit(*xs: float) -> np.ndarray:
    v = np.asarray(xs, dtype=np.float64)
    return v / np.linalg.norm(v)


def test_distances_and_baselines() -> None:
    assert cosine_distance(unit(1, 0), unit(1, 0)) == pytest.approx(0.0)
    assert cosine_distance(unit(1, 0), unit(0, 1)) == pytest.approx(1.0)
    assert cosine_distance(unit(1, 1), unit(1, 0)) == pytest.approx(1 - 2**-0.5)
    assert (
        cosine_distance(None, unit(1, 0)) is None and cosine_distance(np.zeros(2), unit(1)) is None
    )
    ex = np.stack([unit(1, 0), unit(1, 1), unit(0, 1)])
    # closest other exemplar: 0.707 for each of the three
    assert exemplar_baseline(ex) == pytest.approx(2**-0.5)
    assert exemplar_baseline(ex[:1]) is None
    assert route_shift(Counter(rag=5, prompt=5), Counter(rag=5, prompt=5)) == 0.0
    assert route_shift(Counter(rag=10), Counter(prompt=3)) == 1.0
    assert route_shift(Counter(rag=3, prompt=1), Counter(rag=1, prompt=1)) == pytest.approx(0.25)
    assert route_shift(Counter(), Counter(rag=1)) is None


def test_bucket_sums_merge_and_round_trip(tmp_path) -> None:
    a = BucketStats()
    a.add(
        status=200,
        latency_ms=100,
        route="adapter",
        vector=[1.0, 0.0],
        similarity=0.93,
        grounded=0.5,
    )
    a.add(status=503, latency_ms=10, route="rag", vector=[0.0, 1.0], rag=True, weak=True)
    b = BucketStats()
    b.add(status=200, latency_ms=50, route="rag", rag=True, weak=False, similarity=0.05)
    a.merge(b)
    assert (a.requests, a.errors, a.latency_ms_sum) == (3, 1, 160)
    assert a.routes == Counter(adapter=1, rag=2)
    assert a.mean_vector.tolist() == [0.5, 0.5] and a.vec_n == 2
    assert a.similarity == pytest.approx(0.49) and a.sim_hist.tolist() == [
        1,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        1,
    ]
    assert a.gap_rate == 0.5 and a.grounded == 0.5 and a.error_rate == pytest.approx(1 / 3)

    from serve.monitor.tables import DriftBucketRow

    row = DriftBucketRow()
    a.store(row)
    back = BucketStats.from_row(row)
    assert back.mean_vector.tolist() == [0.5, 0.5] and back.routes == a.routes
    assert back.sim_hist.tolist() == a.sim_hist.tolist() and back.weak_n == 1


def test_buckets_by_time_and_additive_writes(tmp_path) -> None:
    from serve.services import Services
    from serve.settings import Settings

    svc = Services(Settings(data_dir=tmp_path))
    tid = svc.tenants.create("acme")[0].id
    acc = Accumulator(bucket_s=HOUR)
    for minutes in (0, 20, 70):
        acc.add(
            tid,
            "",
            NOW + timedelta(minutes=minutes),
            status=200,
            latency_ms=1,
            route="prompt",
            vector=[1.0, 0.0],
        )
    assert sorted(k[2] for k in acc.buckets) == [
        bucket_start(NOW, HOUR),
        bucket_start(NOW, HOUR) + timedelta(hours=1),
    ]
    assert bucket_start(NOW, HOUR) == datetime(2026, 12, 6, 12, tzinfo=UTC)
    write_buckets(svc.db, acc.drain())
    assert acc.buckets == {}
    acc.add(tid, "", NOW, status=200, latency_ms=1, route="rag", vector=[0.0, 1.0])
    write_buckets(svc.db, acc.drain())  # a second gateway adding to the same bucket
    stored = read_buckets(svc.db, tid, NOW - timedelta(days=1))[""]
    assert [s.requests for _, s in stored] == [3, 1]
    assert stored[0][1].mean_vector.tolist() == pytest.approx([2 / 3, 1 / 3])
    assert stored[0][1].routes == Counter(prompt=2, rag=1)


def _stats(n: int, vector, route="adapter", **facts) -> BucketStats:
    s = BucketStats()
    for _ in range(n):
        s.add(status=200, latency_ms=10, route=route, vector=vector, **facts)
    return s


def test_summarise_windows_drift_and_warnings() -> None:
    recent = bucket_start(NOW, HOUR)
    before = recent - timedelta(hours=25)  # the recent window starts at 12:00 yesterday
    exemplars = np.stack([unit(1, 0, 0), unit(1, 0.2, 0)]).astype(np.float32)
    inputs = Inputs(
        buckets={
            "json": [
                (before, _stats(30, unit(1, 0.1, 0), similarity=0.95)),
                (recent, _stats(30, unit(0, 0, 1), similarity=0.1)),  # a new topic
            ],
            "": [
                (before, _stats(30, unit(0, 1, 0), route="prompt")),
                (recent, _stats(30, unit(0, 1, 0), route="rag", rag=True, weak=True)),
            ],
        },
        references={"json": exemplars},
        feedback=[(NOW, "json", True)] * 4 + [(NOW, "json", False)] * 2 + [(before, "json", False)],
    )
    th = DriftThresholds(min_requests=20, min_feedback=5)
    report = summarise("acme", inputs, th, now=NOW, window=timedelta(hours=24), bucket_s=HOUR)
    by = {a["adapter"]: a for a in report["adapters"]}
    assert by["json"]["reference"] == "exemplars"
    assert by["json"]["input_drift"] == pytest.approx(1.0, abs=1e-3)  # orthogonal to exemplars
    assert by["json"]["exemplar_similarity"] == pytest.approx(0.1)
    assert by["json"]["similarity_histogram"][1] == 30
    assert by["(base model)"]["reference"] == "previous window"
    assert by["(base model)"]["input_drift"] == pytest.approx(0.0, abs=1e-6)
    assert (
        by["json"]["downvote_rate"] == pytest.approx(4 / 6, abs=1e-4)
        and by["json"]["feedback"] == 6
    )
    assert report["requests"] == 60
    assert report["route_mix"] == {"adapter": 0.5, "rag": 0.5}
    assert report["route_mix_before"] == {"adapter": 0.5, "prompt": 0.5}
    assert report["route_mix_shift"] == 0.5
    assert report["knowledge_gaps"]["rate"] == 1.0 and report["knowledge_gaps"]["note"]
    metrics = sorted((w["metric"], w["adapter"] or "") for w in report["warnings"])
    assert metrics == [
        ("downvote_rate", ""),
        ("downvote_rate", "json"),
        ("input_drift", "json"),
        ("knowledge_gap_rate", ""),
        ("route_mix_shift", ""),
    ]
    # Below min_requests nothing is judged, whatever the figures say.
    quiet = summarise(
        "acme",
        inputs,
        DriftThresholds(min_requests=100, min_feedback=50),
        now=NOW,
        window=timedelta(hours=24),
        bucket_s=HOUR,
    )
    assert quiet["warnings"] == []
    assert len(report["adapters"][1]["trend"]) == 1  # the recent window's buckets only


def test_low_grounding_warns() -> None:
    recent = bucket_start(NOW, HOUR)
    inputs = Inputs(buckets={"": [(recent, _stats(5, None, route="rag", rag=True, grounded=0.2))]})
    report = summarise(
        "acme",
        inputs,
        DriftThresholds(min_requests=5),
        now=NOW,
        window=timedelta(hours=1),
        bucket_s=HOUR,
        capture="full",
    )
    assert report["grounded_mean"] == 0.2 and "note" not in report["knowledge_gaps"]
    assert [w["metric"] for w in report["warnings"]] == ["grounded_mean"]


def test_questions_are_clustered() -> None:
    qs = ["Where is my order?", "where is my ORDER", "Do you ship to Mars?", "Where's my order??"]
    by_text = cluster_questions(qs, None)
    assert by_text[0] == {
        "question": "Where is my order?",
        "count": 2,
        "examples": ["Where is my order?", "where is my ORDER"],
    }
    vectors = np.stack([unit(1, 0), unit(1, 0.05), unit(0, 1), unit(1, 0.1)])
    by_meaning = cluster_questions(qs, vectors, threshold=0.9)
    assert [(c["question"], c["count"]) for c in by_meaning] == [
        ("Where is my order?", 3),
        ("Do you ship to Mars?", 1),
    ]
