"""Prometheus metrics: requests, latency, tokens, by tenant, model and route."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)

if TYPE_CHECKING:
    from serve.routing import Decision

# Routing decisions take milliseconds (an embedding and a search): finer buckets at the low end.
DECISION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    """One registry per app, so tests and several apps in one process do not collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "loraplex_requests",
            "HTTP requests handled by the gateway.",
            ["tenant", "model", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "loraplex_request_latency_seconds",
            "End-to-end latency of chat completions (to the last byte for streams).",
            ["tenant", "model", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "loraplex_time_to_first_token_seconds",
            "Time to the first streamed chunk.",
            ["tenant", "model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "loraplex_tokens",
            "Tokens processed, by kind (prompt or completion).",
            ["tenant", "model", "kind"],
            registry=self.registry,
        )
        self.decisions = Counter(
            "loraplex_router_decisions",
            "Routing decisions, by tenant, path and adapter ('' for none).",
            ["tenant", "route", "adapter", "router_version"],
            registry=self.registry,
        )
        self.decision_latency = Histogram(
            "loraplex_router_decision_seconds",
            "Time to decide a request's path (exemplar match and retrieval included).",
            ["tenant"],
            buckets=DECISION_BUCKETS,
            registry=self.registry,
        )
        self.router_version = Gauge(
            "loraplex_router_version",
            "The calibrated router version each tenant's auto requests use (0: thresholds).",
            ["tenant"],
            registry=self.registry,
        )
        self.adapter_loads = Counter(
            "loraplex_adapter_loads",
            "Adapter loads into vLLM replicas, by outcome.",
            ["outcome"],
            registry=self.registry,
        )

    def observe_chat(
        self,
        *,
        tenant: str,
        model: str,
        route: str,
        status: int,
        seconds: float,
        usage: dict[str, int] | None,
    ) -> None:
        self.requests.labels(tenant, model, route, str(status)).inc()
        self.latency.labels(tenant, model, route).observe(seconds)
        if usage:
            self.tokens.labels(tenant, model, "prompt").inc(usage.get("prompt_tokens") or 0)
            self.tokens.labels(tenant, model, "completion").inc(usage.get("completion_tokens") or 0)

    def observe_decision(self, tenant: str, decision: Decision) -> None:
        """One routing decision: its path, adapter, latency and (for auto) router version."""
        name = decision.adapter.name if decision.adapter is not None else ""
        version = decision.router_version
        self.decisions.labels(tenant, decision.route, name, version).inc()
        self.decision_latency.labels(tenant).observe(decision.latency_ms / 1000)
        if version == "thresholds":
            self.router_version.labels(tenant).set(0)
        elif version.startswith("v") and version[1:].isdigit():
            self.router_version.labels(tenant).set(int(version[1:]))

    def render(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)

    def serve(self, address: str) -> Any:
        """Serve these metrics at `HOST:PORT` (a separate operator address, no key) in a
        thread; the returned server's `shutdown()` stops it."""
        host, _, port = address.rpartition(":")
        server, _thread = start_http_server(int(port), host.strip("[]"), registry=self.registry)
        return server
