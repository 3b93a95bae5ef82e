"""The chat completion service: route, assemble the prompt, call the engine, shape the answer.

`ChatService.complete()` returns a `ChatOutcome` (a response dict or an async iterator of chunks,
plus the routing facts) and raises `ServiceError` for anything the caller must change; the
gateway's route turns that into HTTP.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from adapters.hotswap import HotSwapper, any_ok
from adapters.registry import AdapterVersion
from retrieval.service import RetrievalService
from serve.chat.grounded import (
    Grounded,
    RagDefaults,
    judge_body,
    judged_stream,
    not_covered_body,
    not_covered_stream,
    prepare,
)
from serve.chat.protocol import ChatCompletionRequest
from serve.database import retrying
from serve.engine.client import AdapterNotLoaded, EngineClient
from serve.errors import ServiceError, engine_unavailable
from serve.routing import Decision, Router
from serve.routing.router import retrieval_scores
from serve.tenants import Tenant

PINNED = re.compile(r"@[0-9]+$")  # NAME@N names a version: no canary split for it


@dataclass
class ChatOutcome:
    """What the gateway turns into HTTP: a body or a stream, plus routing facts for headers."""

    decision: Decision
    body: dict[str, Any] | None = None
    stream: AsyncIterator[dict[str, Any]] | None = None
    citations: list[dict[str, Any]] = field(default_factory=list)  # filled once answered
    rag: Grounded | None = None  # rag and combined: sources, citations, grounding
    adapter_loads: list[bool] = field(default_factory=list)  # outcome of each load it needed


class Rollout(Protocol):
    """What splits an adapter's traffic between prod and a canary (`serve.monitor.canary`)."""

    def apply(self, decision: Decision, pinned: bool, user: str | None) -> Decision: ...


def route_block(decision: Decision) -> dict[str, Any]:
    """What served the request and why (the first chunk of a stream carries this)."""
    return {
        "route": decision.route,
        "adapter": decision.adapter_ref,
        "router_version": decision.router_version,
        "reason": decision.reason,
        "scores": decision.scores,
        "alternatives": decision.alternatives,
    }


def loraplex_block(decision: Decision, rag: Grounded | None = None) -> dict[str, Any]:
    """The response's `loraplex` extension: the route block plus `citations` (the sources the
    answer cites), `sources` (all given to the model) and `grounded` (0..1; None where no
    source was given)."""
    block = route_block(decision)
    if rag is None:
        block.update(citations=[], sources=[], grounded=None)
    else:
        block.update(rag.fields())
    return block


class ChatService:
    """Answers chat completions for tenants: routing, retrieval, adapters, the engine."""

    def __init__(
        self,
        router: Router,
        engine: EngineClient,
        retrieval: RetrievalService,
        hotswap: HotSwapper,
        max_model_len: int,
        rollout: Rollout | None = None,
        count_tokens: Callable[[str], int] | None = None,
        rag_defaults: RagDefaults | None = None,
    ) -> None:
        """`rollout`: canary splits applied after routing (None: prod always serves);
        `count_tokens`: the base model's tokenizer, for fitting sources into `max_model_len`
        (`serve.chat.grounded.token_counter`); `rag_defaults`: where tenants' policies leave
        the template and number of sources open."""
        self.router = router
        self.engine = engine
        self.retrieval = retrieval
        self.hotswap = hotswap
        self.max_model_len = max_model_len
        self.rollout = rollout
        self.count_tokens = count_tokens
        self.rag_defaults = rag_defaults or RagDefaults()

    def check_limits(self, req: ChatCompletionRequest) -> None:
        """Refuse what vLLM would refuse later, with a message that says what to change."""
        window = self.max_model_len
        if req.token_limit is not None and req.token_limit >= window:
            raise ServiceError(
                f"max_tokens={req.token_limit} is beyond the context window of {window} tokens; "
                "ask for fewer tokens",
                "context_length_exceeded",
                param="max_tokens",
            )

    async def decide(self, tenant: Tenant, req: ChatCompletionRequest) -> Decision:
        """The routing decision for `req` (after the limits are checked)."""
        self.check_limits(req)
        if self.router.decides_in_memory(req.model, req.loraplex.route, req.loraplex.adapter):
            return self._decide(req, tenant)  # nothing blocks: a thread hop would cost more
        # Registry look-ups, embedding a query and searching Chroma block: off the event loop,
        # so open streams keep flowing.
        return await asyncio.to_thread(retrying, self._decide, req, tenant)

    def _decide(self, req: ChatCompletionRequest, tenant: Tenant) -> Decision:
        decision = self.router.decide(req.route_request(), tenant)
        if self.rollout is not None:
            named = (req.model, req.loraplex.adapter or "")
            pinned = any(PINNED.search(n) for n in named)
            decision = self.rollout.apply(decision, pinned, req.user)
        return decision

    async def complete(
        self, tenant: Tenant, req: ChatCompletionRequest, decision: Decision | None = None
    ) -> ChatOutcome:
        """Run one chat completion for `tenant` (`decision`: from `decide`, if already made)."""
        if decision is None:
            decision = await self.decide(tenant, req)
        outcome = ChatOutcome(decision)
        messages = [m.model_dump(exclude_none=True) for m in req.messages]
        if decision.route in ("rag", "combined"):
            rag, messages = await asyncio.to_thread(
                self._with_context, tenant, req, decision, messages
            )
            outcome.rag = rag
            if rag.outcome == "not_covered" and not self._fall_back(tenant, decision, rag):
                return self._not_covered(req, decision, outcome)
        params = req.engine_params()
        if decision.adapter is not None and decision.route in ("adapter", "combined"):
            await self._ensure_adapter(decision.adapter, outcome)
        call = self.engine.chat_stream if req.stream else self.engine.chat
        try:
            result = await call(decision.served_model, messages, params)
        except AdapterNotLoaded:
            if decision.adapter is None:
                raise engine_unavailable("the base model is not loaded") from None
            # vLLM restarted or evicted it: load again and retry once.
            await self._ensure_adapter(decision.adapter, outcome, force=True)
            try:
                result = await call(decision.served_model, messages, params)
            except AdapterNotLoaded:
                raise engine_unavailable("the adapter could not be loaded into vLLM") from None
        judged = outcome.rag if decision.route in ("rag", "combined") else None
        if req.stream:
            stream: AsyncIterator[dict[str, Any]] = result  # type: ignore[assignment]
            if judged is not None:
                stream = judged_stream(stream, judged, lambda: self._finish(decision, outcome))
            outcome.stream = stream
            return outcome
        body: dict[str, Any] = result  # type: ignore[assignment]
        body["model"] = decision.model  # what answered: the base model or the adapter
        if judged is not None:
            judge_body(body, judged)
        body["loraplex"] = self._finish(decision, outcome)
        outcome.body = body
        return outcome

    def _with_context(
        self,
        tenant: Tenant,
        req: ChatCompletionRequest,
        decision: Decision,
        messages: list[dict[str, Any]],
    ) -> tuple[Grounded, list[dict[str, Any]]]:
        # The router searched with the same query when it chose the path itself.
        query = req.search_query()
        result = decision.retrieval
        if result is None:
            result = self.retrieval.search(tenant.id, query, top_k=req.loraplex.top_k)
            decision.scores.update(retrieval_scores(result))
        return prepare(
            result,
            query,
            messages,
            decision.route,
            tenant.policy,
            self.rag_defaults,
            count_tokens=self.count_tokens,
            context_window=self.max_model_len,
            max_tokens=req.token_limit,
        )

    def _fall_back(self, tenant: Tenant, decision: Decision, rag: Grounded) -> bool:
        """Documents silent: answer on the path without retrieval where the policy says
        fallback and allows the path (rag -> prompt); combined -> adapter always (the adapter's
        task stands without the documents). False: refuse."""
        to = {"rag": "prompt", "combined": "adapter"}[decision.route]
        policy = tenant.policy
        if to == "prompt" and (policy.rag_not_covered != "fallback" or to not in policy.routes):
            return False
        why = "policy rag_not_covered=fallback" if to == "prompt" else "the adapter's own task"
        decision.reason += (
            f"; the documents do not cover this ({rag.coverage.reason}): answered on the "
            f"{to} path without sources ({why})"
        )
        decision.route = to
        rag.outcome = "fallback"
        return True

    def _not_covered(
        self, req: ChatCompletionRequest, decision: Decision, outcome: ChatOutcome
    ) -> ChatOutcome:
        assert outcome.rag is not None
        decision.reason += (
            f"; the documents do not cover this ({outcome.rag.coverage.reason}): answered so "
            "without calling the model"
        )
        n = req.n or 1
        if req.stream:
            outcome.stream = judged_stream(
                not_covered_stream(decision.model, n),
                outcome.rag,
                lambda: self._finish(decision, outcome),
            )
            return outcome
        body = not_covered_body(decision.model, n)
        body["loraplex"] = self._finish(decision, outcome)
        outcome.body = body
        return outcome

    def _finish(self, decision: Decision, outcome: ChatOutcome) -> dict[str, Any]:
        """The whole `loraplex` block once the answer is known; the request record's
        citations follow it."""
        rag = outcome.rag if decision.route in ("rag", "combined") else None
        if rag is not None:
            decision.reason += rag.note()
            outcome.citations[:] = rag.citations
        return loraplex_block(decision, rag)

    async def _ensure_adapter(
        self, adapter: AdapterVersion, outcome: ChatOutcome, force: bool = False
    ) -> None:
        started = time.perf_counter()
        report = await self.hotswap.ensure_loaded(adapter.served_name, str(adapter.path), force)
        ok = any_ok(report)
        outcome.adapter_loads.append(ok)
        if not ok:
            raise engine_unavailable(
                f"adapter {adapter.ref} could not be loaded ({time.perf_counter() - started:.1f} s)"
            )
