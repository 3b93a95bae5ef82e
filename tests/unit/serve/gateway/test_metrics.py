"""Routing metrics: decisions by tenant, path and adapter; decision latency; router version."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from adapters.registry import AdapterVersion
from serve.gateway.metrics import Metrics
from serve.routing import Decision

ORDERS = AdapterVersion(
    name="orders", version=2, digest="0" * 64, path=Path("/x"), base_model="base", rank=8,
    alpha=8.0, target_modules=["q_proj"], size_bytes=1, created_at=datetime(2026, 1, 1, tzinfo=UTC),
)  # fmt: skip


def test_decisions_latency_and_router_version() -> None:
    m = Metrics()
    m.observe_decision(
        "acme", Decision("combined", "orders-v2", ORDERS, router_version="v3", latency_ms=12.0)
    )
    m.observe_decision("acme", Decision("rag", "base", router_version="v3", latency_ms=4.0))
    m.observe_decision(
        "globex", Decision("prompt", "base", router_version="thresholds", latency_ms=2.0)
    )
    m.observe_decision("globex", Decision("prompt", "base", latency_ms=0.1))  # explicit
    text = m.render().decode()
    assert (
        'loraplex_router_decisions_total{adapter="orders",route="combined",router_version="v3",tenant="acme"} 1.0'
        in text
    )
    assert (
        'loraplex_router_decisions_total{adapter="",route="prompt",router_version="explicit",tenant="globex"} 1.0'
        in text
    )
    assert 'loraplex_router_decision_seconds_bucket{le="0.005",tenant="acme"} 1.0' in text
    assert 'loraplex_router_decision_seconds_count{tenant="acme"} 2.0' in text
    assert 'loraplex_router_version{tenant="acme"} 3.0' in text
    assert 'loraplex_router_version{tenant="globex"} 0.0' in text
