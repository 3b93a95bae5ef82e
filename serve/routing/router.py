"""Per-request routing: which of the four paths (prompt, rag, adapter, combined) a chat takes.

Explicit choices win (an adapter named in `model`, or `loraplex.route` / `loraplex.adapter`);
what the decision reports is always what serves: naming an adapter and a base-model route
serves the adapter (`prompt` becomes `adapter`, `rag` becomes `combined`).

With `model: "auto"` and no explicit route, the tenant's current router version decides: its
policy's two thresholds ("thresholds") until `loraplex router calibrate` fits one on labelled
traffic ("v1", "v2", ...). The decision model scores all four paths from the request's
signals (see `signals.py`); the best path the tenant's policy allows is taken, and the reason
says when a better one was not allowed. Every decision names the router version that made it
and lists the other allowed paths with their scores.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from adapters.registry import AdapterVersion
from retrieval.search import SearchResult
from serve.errors import ServiceError, model_not_found
from serve.lru import LRU
from serve.routing.models import (
    ADAPTER_PATHS,
    Choice,
    DecisionModel,
    ThresholdModel,
    allowed_paths,
    choose,
    load_model,
    ranked,
)
from serve.routing.signals import (
    Signals,
    retrieval_signals,
    split_payload,
    task_match,
    text_cues,
)
from serve.routing.versions import THRESHOLDS, RouterVersions
from serve.tenants import Tenant

AUTO = "auto"
log = logging.getLogger("loraplex.routing")
EXPLICIT = "explicit"  # the router version of a decision the caller made


class AdapterCatalog(Protocol):
    """What the router needs from the adapter registry (usually `caches.AdapterCatalog`)."""

    def resolve_for_tenant(self, model: str, tenant: str) -> AdapterVersion | None: ...

    def list_for_tenant(self, tenant: str) -> list[AdapterVersion]: ...


class Searcher(Protocol):
    """What the router needs from retrieval."""

    def search(
        self,
        tenant: str,
        query: str,
        top_k: int = 4,
        where: dict[str, Any] | None = None,
        mode: str = "hybrid",
    ) -> SearchResult: ...


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
    turns: int = 1  # user turns in the conversation


@dataclass
class Decision:
    """The path a request takes, and why."""

    route: str
    served_model: str
    adapter: AdapterVersion | None = None
    reason: str = ""
    scores: dict[str, float] = field(default_factory=dict)
    retrieval: SearchResult | None = None  # the search result, reused for prompt assembly
    router_version: str = EXPLICIT
    alternatives: list[dict[str, Any]] = field(default_factory=list)
    model: str = ""  # what the response's `model` says: the base model or the adapter's name
    latency_ms: float = 0.0
    signals: Signals | None = None

    @property
    def adapter_ref(self) -> str | None:
        """`NAME@N` of the adapter that serves the request, if one does."""
        return self.adapter.ref if self.adapter is not None else None


class Router:
    """Resolve the request's model and route against the tenant's policy and router version."""

    def __init__(
        self,
        base_model: str,
        registry: AdapterCatalog,
        retrieval: Searcher,
        embedder: Embedder | None = None,
        versions: RouterVersions | None = None,
        version_check_s: float = 2.0,
        max_tenants: int = 4096,
        max_adapters: int = 4096,
    ) -> None:
        """`versions` holds calibrated routers (None: every tenant uses its thresholds); a
        tenant's current version is re-read at most every `version_check_s` seconds, so a
        calibration or rollback from the CLI reaches a running gateway within that time.
        `max_tenants` / `max_adapters` bound what is kept in memory per tenant (its router
        version) and per adapter version (its exemplars' embeddings)."""
        self.base_model = base_model
        self.registry = registry
        self.retrieval = retrieval
        self.embedder = embedder if embedder is not None else getattr(retrieval, "embedder", None)
        self.versions = versions
        self.version_check_s = version_check_s
        # served name -> exemplar embeddings; versions are immutable, so entries never go
        # stale, but removed versions and new ones would pile up: bounded, least recently used
        # out first (one entry is a few dozen vectors, ~1.5 KB each)
        self._exemplars: LRU[str, list[list[float]]] = LRU(max_adapters)
        # tenant id -> (checked at, version number or None, model); bounded likewise: tenants
        # come and go, and ids are never reused
        self._models: LRU[str, tuple[float, int | None, DecisionModel | None]] = LRU(max_tenants)
        self._lock = threading.Lock()

    # -- router versions ------------------------------------------------------------------------
    def invalidate(self, tenant: str | None = None) -> None:
        """Re-read the current router version (of the tenant with id `tenant`, or everyone) on
        the next request."""
        with self._lock:
            if tenant is None:
                self._models.clear()
            else:
                self._models.pop(tenant, None)

    def model_for(self, tenant: Tenant, fresh: bool = False) -> tuple[str, DecisionModel]:
        """The tenant's router version label ("thresholds" or "vN") and its decision model
        (`fresh`: read the current version now, whatever the cache holds)."""
        now = time.monotonic()
        with self._lock:
            cached = self._models.get(tenant.id)
        if fresh or cached is None or now - cached[0] >= self.version_check_s:
            number = self.versions.current_number(tenant.name) if self.versions else None
            model = cached[2] if cached is not None and cached[1] == number else None
            if number is not None and model is None and self.versions is not None:
                stored = self.versions.get(tenant.name, number)
                try:
                    model = load_model(stored.kind, stored.params) if stored else None
                except (KeyError, TypeError, ValueError) as exc:
                    # A damaged row must not take the tenant's traffic down: the thresholds
                    # decide (and the responses say so) until it is rolled back or replaced.
                    log.warning("router v%s of %s is unreadable: %s", number, tenant.name, exc)
                    model = None
                number = number if model is not None else None
            cached = (now, number, model)
            with self._lock:
                self._models[tenant.id] = cached
        _, number, model = cached
        if number is None or model is None:
            p = tenant.policy
            return THRESHOLDS, ThresholdModel(p.adapter_min_similarity, p.rag_min_score)
        return f"v{number}", model

    # -- signals --------------------------------------------------------------------------------
    def exemplar_vectors(self, av: AdapterVersion) -> list[list[float]]:
        """The embeddings of an adapter version's exemplars (computed once per version)."""
        vectors = self._exemplars.get(av.served_name)
        if vectors is None and self.embedder is not None:
            vectors = self._exemplars[av.served_name] = self.embedder.embed(list(av.exemplars))
        return vectors or []

    def signals(
        self,
        tenant: str,
        query: str,
        *,
        turns: int = 1,
        adapters: list[AdapterVersion] | None = None,
        search: bool = True,
        top_k: int = 4,
        leave_out: set[str] | None = None,
    ) -> Signals:
        """Measure `query` against `adapters`' exemplars and (if `search`) the tenant's
        documents. `leave_out`: exemplar texts to ignore (calibration labels prompts that may
        be exemplars themselves)."""
        s = Signals(**text_cues(query, turns))
        candidates = [a for a in adapters or [] if a.exemplars]
        ask, payload = split_payload(query)
        texts = [query] + ([ask] if payload and search else [])
        q: list[float] | None = None
        if self.embedder is not None and query.strip() and (candidates or len(texts) > 1):
            # One batch for the query and its ask; the embedder is shared with retrieval and
            # caches by text, so the searches below get these vectors back, not recomputed.
            q = self.embedder.embed(texts)[0]
        if candidates and q is not None:
            vectors = {a.served_name: self.exemplar_vectors(a) for a in candidates}
            exclude = None
            if leave_out:
                gone = {t.strip() for t in leave_out}
                exclude = {
                    a.served_name: [i for i, e in enumerate(a.exemplars) if e.strip() in gone]
                    for a in candidates
                }
            s.task = task_match(q, candidates, vectors, exclude)
        if search and query.strip():
            s.retrieval = self.retrieval.search(tenant, query, top_k=top_k)
            for key, value in retrieval_signals(query, s.retrieval).items():
                setattr(s, key, value)
            if payload and ask.strip():
                # Does the ask itself want a document fact, or only the text it works on
                # mentions things the documents describe? (combined vs adapter)
                asked = self.retrieval.search(tenant, ask, top_k=1, mode="dense")
                s.instruction_dense = max((h.dense or 0.0 for h in asked.hits), default=0.0)
        return s

    # -- deciding -------------------------------------------------------------------------------
    def decide(self, req: RouteRequest, tenant: Tenant) -> Decision:
        """The path for `req`, or a ServiceError saying what the caller must change."""
        started = time.perf_counter()
        adapter = self._named_adapter(req, tenant)
        if req.route == AUTO and req.model != AUTO:
            # Naming a model is an explicit choice: no retrieval or exemplar look-ups.
            route = "prompt" if adapter is None else "adapter"
            what = "the base model" if adapter is None else "an adapter"
            decision = Decision(route, "", adapter, f"the request named {what}")
        elif req.route == AUTO:
            decision = self._auto(adapter, tenant, req)
        else:
            decision = self._explicit_route(adapter, req)
        self._check_policy(decision, tenant)
        if decision.route in ADAPTER_PATHS and decision.adapter is not None:
            decision.served_model = decision.adapter.served_name
        else:
            decision.adapter = None  # reported adapter == serving adapter, always
            decision.served_model = self.base_model
        if decision.adapter is None:
            decision.model = self.base_model
        elif req.model in (AUTO, self.base_model):
            decision.model = decision.adapter.name
        else:
            decision.model = req.model  # the adapter as the caller named it (NAME or NAME@N)
        decision.latency_ms = round((time.perf_counter() - started) * 1000, 2)
        return decision

    def _named_adapter(self, req: RouteRequest, tenant: Tenant) -> AdapterVersion | None:
        adapter: AdapterVersion | None = None
        if req.model == self.base_model:
            if not tenant.policy.allows_base(self.base_model):
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
        if adapter is not None and adapter.gated_out:
            # `NAME@N` must not become a way to serve a version its evaluation turned down.
            raise ServiceError(
                f"{adapter.ref} failed its evaluation gates (NO-GO) and an admin has not "
                f"overridden that: use {adapter.name} (its prod version), or ask an admin to "
                f"promote {adapter.ref} with force",
                "version_gated",
                "forbidden",
                param="model",
            )
        return adapter

    def _explicit_route(self, adapter: AdapterVersion | None, req: RouteRequest) -> Decision:
        route, reason = req.route, "requested by the caller"
        if route in ADAPTER_PATHS and adapter is None:
            raise ServiceError(
                f"route {route!r} needs an adapter: set 'model' to an adapter name or "
                "'loraplex.adapter'",
                "adapter_required",
                param="loraplex.route",
            )
        if route in ("prompt", "rag") and adapter is not None:
            # An adapter was named: it serves, and the decision says so.
            route = "adapter" if route == "prompt" else "combined"
            reason = (
                f"requested by the caller: {req.route!r} with adapter {adapter.name} is {route!r}"
            )
        return Decision(route, "", adapter, reason)

    def _check_policy(self, decision: Decision, tenant: Tenant) -> None:
        policy = tenant.policy
        if decision.route not in policy.routes:
            raise ServiceError(
                f"route {decision.route!r} is not allowed for this tenant (allowed: "
                f"{policy.routes})",
                "route_not_allowed",
                "forbidden",
                param="loraplex.route",
            )
        if decision.route in ("prompt", "rag") and not policy.allows_base(self.base_model):
            raise _base_not_allowed(decision.route)

    def auto_signals(
        self,
        tenant: Tenant,
        query: str,
        *,
        turns: int = 1,
        top_k: int = 4,
        named: AdapterVersion | None = None,
        leave_out: set[str] | None = None,
    ) -> Signals:
        """The signals `model: "auto"` decides on: the tenant's adapters (or the named one)
        only where an adapter path is allowed, its documents only where a document path is."""
        routes = tenant.policy.routes
        if named is not None:
            pool = [named]
        elif any(p in routes for p in ADAPTER_PATHS):
            pool = self.registry.list_for_tenant(tenant.id)
        else:
            pool = []
        return self.signals(
            tenant.id,
            query,
            turns=turns,
            adapters=pool,
            search=any(p in routes for p in ("rag", "combined")),
            top_k=top_k,
            leave_out=leave_out,
        )

    def _auto(self, named: AdapterVersion | None, tenant: Tenant, req: RouteRequest) -> Decision:
        policy = tenant.policy
        label, model = self.model_for(tenant)
        signals = self.auto_signals(
            tenant, req.query, turns=req.turns, top_k=req.top_k, named=named
        )
        adapter = named or signals.task.best
        base_allowed = policy.allows_base(self.base_model)
        allowed = allowed_paths(policy.routes, base_allowed, adapter is not None, named is not None)
        scores = model.path_scores(signals)
        choice = choose(scores, allowed)
        if choice is None:
            if not base_allowed and adapter is None:
                raise _base_not_allowed(ranked(scores)[0])
            raise ServiceError(
                f"no path this tenant's policy allows ({policy.routes}) can serve this request"
                + (" without an adapter" if adapter is None else ""),
                "route_not_allowed",
                "forbidden",
                param="loraplex.route",
            )
        alternatives = [
            {
                "route": p,
                "adapter": adapter.ref if p in ADAPTER_PATHS and adapter is not None else None,
                "score": round(scores[p], 4),
            }
            for p in ranked(scores)
            if p in allowed and p != choice.route
        ]
        return Decision(
            route=choice.route,
            served_model="",
            adapter=adapter if choice.route in ADAPTER_PATHS else None,
            reason=_reason(label, model, signals, choice, adapter, allowed, scores),
            scores={**signals.scores(), "route_score": round(choice.score, 4)},
            retrieval=signals.retrieval if choice.route in ("rag", "combined") else None,
            router_version=label,
            alternatives=alternatives,
            signals=signals,
        )


def _base_not_allowed(route: str) -> ServiceError:
    # model=auto must not become a way around a policy that withholds the base model.
    return ServiceError(
        f"this tenant may not use the base model and no adapter was chosen for the "
        f"{route!r} path: name one of your adapters in 'model' or 'loraplex.adapter'",
        "base_model_not_allowed",
        "forbidden",
        param="model",
    )


def _reason(
    label: str,
    model: DecisionModel,
    s: Signals,
    choice: Choice,
    adapter: AdapterVersion | None,
    allowed: list[str],
    scores: dict[str, float],
) -> str:
    """One sentence a user can check against `scores` and `alternatives`."""
    name = adapter.name if adapter is not None else None
    if isinstance(model, ThresholdModel):
        a_thr, r_thr = model.adapter_min_similarity, model.rag_min_score
        if s.task.best is None:
            task = "no adapter with exemplars to match"
        elif s.task.similarity >= a_thr:
            task = f"prompt resembles {s.task.best.name}'s exemplars ({s.task.similarity:.2f} >= {a_thr})"
        else:
            task = f"no adapter's exemplars are close ({s.task.similarity:.2f} < {a_thr})"
        op = ">=" if s.retrieval_top >= r_thr else "<"
        why = f"{task}; top retrieval score {s.retrieval_top:.2f} {op} {r_thr}"
    else:
        runner_up = next((p for p in ranked(scores) if p != choice.preferred), None)
        why = f"router {label} scores {choice.preferred} {choice.preferred_score:.2f}"
        if runner_up is not None:
            why += f" (next: {runner_up} {scores[runner_up]:.2f})"
        if name is not None:
            why += f"; {name} matches the task best ({s.task.similarity:.2f})"
    if choice.fell_back:
        if choice.preferred in ADAPTER_PATHS and adapter is None:
            blocked = "there is no adapter to take it"
        else:
            blocked = "this tenant's policy does not allow it"
        why += (
            f"; {choice.preferred} would be best but {blocked}, so {choice.route} "
            f"(the best allowed path, {choice.score:.2f})"
        )
    if choice.route in ADAPTER_PATHS and name is not None:
        why += f"; served by {name}"
    return why


def retrieval_scores(result: SearchResult) -> dict[str, float]:
    """A search result's strength as decision scores (`retrieval_top`, `retrieval_margin`...)."""
    return {f"retrieval_{k}": float(v) for k, v in result.strength.items()}
