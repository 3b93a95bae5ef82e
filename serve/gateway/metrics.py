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

        self._loop_metrics()

    def _loop_metrics(self) -> None:
        """Feedback, drift and canaries: the production loop after promotion."""
        r = self.registry
        self.feedback = Counter(
            "loraplex_feedback",
            "Feedback received, by vote (up, down).",
            ["tenant", "vote"],
            registry=r,
        )
        self.drift_input = Gauge(
            "loraplex_drift_input",
            "Input drift over the monitor window: 1 - cosine of the recent prompts' mean "
            "embedding vs the reference (the adapter's exemplars, else the window before).",
            ["tenant", "adapter"],
            registry=r,
        )
        self.drift_similarity = Gauge(
            "loraplex_drift_exemplar_similarity",
            "Mean similarity of recent prompts to the serving adapter's closest exemplar.",
            ["tenant", "adapter"],
            registry=r,
        )
        self.knowledge_gap_rate = Gauge(
            "loraplex_knowledge_gap_rate",
            "Share of rag/combined requests whose retrieval was weak.",
            ["tenant"],
            registry=r,
        )
        self.route_mix_shift = Gauge(
            "loraplex_route_mix_shift",
            "Total variation distance of the route mix vs the window before.",
            ["tenant"],
            registry=r,
        )
        self.downvote_rate = Gauge(
            "loraplex_downvote_rate",
            "Share of feedback voting down (adapter '*': all the tenant's traffic).",
            ["tenant", "adapter"],
            registry=r,
        )
        self.grounded_mean = Gauge(
            "loraplex_grounded_mean",
            "Mean grounding score of answers that carry one (adapter '*': all).",
            ["tenant", "adapter"],
            registry=r,
        )
        self.monitor_warnings = Gauge(
            "loraplex_monitor_warnings",
            "Thresholds of the tenant's policy crossed now.",
            ["tenant"],
            registry=r,
        )
        self.canary_percent = Gauge(
            "loraplex_canary_percent",
            "Share of an adapter's traffic its running canary takes (0: none).",
            ["adapter"],
            registry=r,
        )
        self.canary_requests = Gauge(
            "loraplex_canary_requests",
            "Requests per arm since the running canary started.",
            ["adapter", "arm"],
            registry=r,
        )
        self.canary_error_rate = Gauge(
            "loraplex_canary_error_rate",
            "Error rate per arm since the running canary started.",
            ["adapter", "arm"],
            registry=r,
        )
        self.canary_rollbacks = Counter(
            "loraplex_canary_rollbacks",
            "Canaries rolled back automatically.",
            ["adapter"],
            registry=r,
        )
        self.records_pending = Gauge(
            "loraplex_records_pending", "Request records waiting to be written.", registry=r
        )
        self.records_dropped = Gauge(
            "loraplex_records_dropped",
            "Request records dropped because the queue was full (since start).",
            registry=r,
        )

    def observe_drift(self, tenant: str, report: dict[str, Any]) -> None:
        """One tenant's monitor report as gauges (figures without data are left unset)."""

        def put(gauge: Any, value: Any, *labels: str) -> None:
            if value is not None:
                gauge.labels(*labels).set(value)

        for a in report["adapters"]:
            key = "" if a["adapter"] == "(base model)" else a["adapter"]
            put(self.drift_input, a["input_drift"], tenant, key)
            put(self.drift_similarity, a["exemplar_similarity"], tenant, key)
            put(self.downvote_rate, a["downvote_rate"], tenant, key)
            put(self.grounded_mean, a["grounded_mean"], tenant, key)
        put(self.knowledge_gap_rate, report["knowledge_gaps"]["rate"], tenant)
        put(self.route_mix_shift, report["route_mix_shift"], tenant)
        put(self.downvote_rate, report["feedback"]["downvote_rate"], tenant, "*")
        put(self.grounded_mean, report["grounded_mean"], tenant, "*")
        self.monitor_warnings.labels(tenant).set(len(report["warnings"]))

    def observe_canaries(self, running: list[dict[str, Any]], ended: list[str]) -> None:
        """Running canaries' shares and arms; adapters in `ended` drop to 0 %."""
        for name in ended:
            self.canary_percent.labels(name).set(0)
        for c in running:
            self.canary_percent.labels(c["name"]).set(c["percent"])
            for arm, stats in c["arms"].items():
                self.canary_requests.labels(c["name"], arm).set(stats["requests"])
                if stats["error_rate"] is not None:
                    self.canary_error_rate.labels(c["name"], arm).set(stats["error_rate"])

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
