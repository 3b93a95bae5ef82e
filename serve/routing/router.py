"""Per-request routing: which of the four paths (prompt, rag, adapter, combined) a chat takes.

Explicit choices win (an adapter named in `model`, or `loraplex.route` / `loraplex.adapter`);
with `model: "auto"` and no explicit route, retrieval strength decides whether the tenant's
documents have something to say. Every decision carries a human-readable reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from adapters.registry import AdapterVersion
from retrieval.search import SearchResult
from serve.errors import ServiceError, model_not_found
from serve.tenants import Tenant

AUTO = "auto"


class AdapterCatalog(Protocol):
    """What the router needs from the adapter registry."""

    def resolve_for_tenant(self, model: str, tenant: str) -> AdapterVersion | None: ...

    def list_for_tenant(self, tenant: str) -> list[AdapterVersion]: ...


class Searcher(Protocol):
    """What the router needs from retrieval."""

    def search(self, tenant: str, query: str, top_k: int = 4) -> SearchResult: ...


class Embedder(Protocol):
    """Unit-length embeddings, for exemplar similarity."""

    def embed(self, texts: list[str]) -> list[list[float]]: ...


@dataclass(frozen=True)
class RouteRequest:
    """What a routing decision depends on: the model asked for, explicit choices, the query."""

    model: str
    query: str = ""
    route: str = AUTO
    adapter: str | None = None
    top_k: int = 4


@dataclass
class Decision:
    """The path a request takes, and why."""

    route: str
    served_model: str
    adapter: AdapterVersion | None = None
    reason: str = ""
    scores: dict[str, float] = field(default_factory=dict)
    retrieval: SearchResult | None = None  # the search result, reused for prompt assembly

    @property
    def adapter_ref(self) -> str | None:
        """`NAME@N` of the adapter that serves the request, if one does."""
        return self.adapter.ref if self.adapter is not None else None


class Router:
    """Resolve the request's model and route against the tenant's policy."""

    def __init__(
        self,
        base_model: str,
        registry: AdapterCatalog,
        retrieval: Searcher,
        embedder: Embedder | None = None,
    ) -> None:
        self.base_model = base_model
        self.registry = registry
        self.retrieval = retrieval
        self.embedder = embedder if embedder is not None else getattr(retrieval, "embedder", None)
        # served name -> exemplar embeddings; versions are immutable, so entries never go stale
        self._exemplars: dict[str, list[list[float]]] = {}

    def decide(self, req: RouteRequest, tenant: Tenant) -> Decision:
        """The path for `req`, or a ServiceError saying what the caller must change."""
        policy = tenant.policy
        adapter: AdapterVersion | None = None
        base_allowed = policy.allows_base(self.base_model)
        if req.model == self.base_model:
            if not base_allowed:
                raise model_not_found(req.model)
        elif req.model != AUTO:
            adapter = self.registry.resolve_for_tenant(req.model, tenant.id)
            if adapter is None:
                raise model_not_found(req.model)
        if req.adapter:
            if adapter is not None and req.adapter != req.model:
                raise ServiceError(
                    f"'model' names adapter {req.model!r} but loraplex.adapter names "
                    f"{req.adapter!r}: name the adapter once",
                    "conflicting_adapter",
                    param="loraplex.adapter",
                )
            adapter = self.registry.resolve_for_tenant(req.adapter, tenant.id)
            if adapter is None:
                raise model_not_found(req.adapter)

        route = req.route
        reason = "requested by the caller"
        scores: dict[str, float] = {}
        result = None
        if route == AUTO and req.model != AUTO:
            # Naming a model is an explicit choice: no retrieval or exemplar look-ups.
            route = "prompt" if adapter is None else "adapter"
            reason = "the request named " + ("the base model" if adapter is None else "an adapter")
        elif route == AUTO:
            route, reason, scores, result, adapter = self._auto(adapter, tenant, req)
        elif route in ("adapter", "combined") and adapter is None:
            raise ServiceError(
                f"route {route!r} needs an adapter: set 'model' to an adapter name or "
                "'loraplex.adapter'",
                "adapter_required",
                param="loraplex.route",
            )
        elif route in ("prompt", "rag") and adapter is not None and req.model != AUTO:
            route = "adapter" if route == "prompt" else "combined"
        if route not in policy.routes:
            raise ServiceError(
                f"route {route!r} is not allowed for this tenant (allowed: {policy.routes})",
                "route_not_allowed",
                "forbidden",
                param="loraplex.route",
            )
        if route in ("prompt", "rag") and not base_allowed:
            # model=auto must not become a way around a policy that withholds the base model.
            raise ServiceError(
                f"this tenant may not use the base model and no adapter was chosen for the "
                f"{route!r} path: name one of your adapters in 'model' or 'loraplex.adapter'",
                "base_model_not_allowed",
                "forbidden",
                param="model",
            )
        served = self.base_model
        if route in ("adapter", "combined") and adapter is not None:
            served = adapter.served_name
        return Decision(route, served, adapter, reason, scores, result)

    def match_adapter(self, tenant: Tenant, query: str) -> tuple[AdapterVersion | None, float]:
        """The tenant's adapter whose exemplar prompts are most similar to `query` (cosine)."""
        if self.embedder is None or not query:
            return None, 0.0
        candidates = [a for a in self.registry.list_for_tenant(tenant.id) if a.exemplars]
        if not candidates:
            return None, 0.0
        [q] = self.embedder.embed([query])
        best, best_sim = None, 0.0
        for av in candidates:
            vectors = self._exemplars.get(av.served_name)
            if vectors is None:
                vectors = self._exemplars[av.served_name] = self.embedder.embed(av.exemplars)
            sim = max(sum(x * y for x, y in zip(q, v, strict=True)) for v in vectors)
            if sim > best_sim:
                best, best_sim = av, sim
        return best, best_sim

    def _auto(
        self, adapter: AdapterVersion | None, tenant: Tenant, req: RouteRequest
    ) -> tuple[str, str, dict[str, float], Any, AdapterVersion | None]:
        """Pick an adapter by exemplar similarity (unless one was named), then let retrieval
        strength decide between the plain and the context-augmented path."""
        matched = ""
        similarity: dict[str, float] = {}
        if adapter is None and "adapter" in tenant.policy.routes:
            found, sim = self.match_adapter(tenant, req.query)
            if found is not None:
                similarity["adapter_similarity"] = round(sim, 4)
                threshold = tenant.policy.adapter_min_similarity
                if sim >= threshold:
                    adapter = found
                    matched = (
                        f"prompt resembles {found.name}'s exemplars ({sim:.2f} >= {threshold})"
                    )
        route, reason, scores, result = self._auto_retrieval(adapter, tenant, req)
        if matched:
            reason = f"{matched}; {reason}"
        return route, reason, {**similarity, **scores}, result, adapter

    def _auto_retrieval(
        self, adapter: AdapterVersion | None, tenant: Tenant, req: RouteRequest
    ) -> tuple[str, str, dict[str, float], SearchResult | None]:
        wants_rag = any(r in tenant.policy.routes for r in ("rag", "combined"))
        result = None
        scores: dict[str, float] = {}
        strong = False
        if wants_rag and req.query:
            result = self.retrieval.search(tenant.id, req.query, top_k=req.top_k)
            scores = retrieval_scores(result)
            strong = scores.get("retrieval_top", 0.0) >= tenant.policy.rag_min_score
        threshold = tenant.policy.rag_min_score
        if adapter is not None:
            if strong:
                return (
                    "combined",
                    f"adapter chosen and retrieval score >= {threshold}",
                    scores,
                    result,
                )
            return "adapter", "adapter chosen; retrieval has nothing strong to add", scores, result
        if strong:
            return "rag", f"top retrieval score >= {threshold}", scores, result
        return "prompt", "no adapter chosen and no strong retrieval match", scores, None


def retrieval_scores(result: SearchResult) -> dict[str, float]:
    """A search result's strength as decision scores (`retrieval_top`, `retrieval_margin`...)."""
    return {f"retrieval_{k}": float(v) for k, v in result.strength.items()}
