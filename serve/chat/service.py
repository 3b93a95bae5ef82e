"""The chat completion service: route, assemble the prompt, call the engine, shape the answer.

`ChatService.complete()` returns a `ChatOutcome` (a response dict or an async iterator of chunks,
plus the routing facts) and raises `ServiceError` for anything the caller must change; the
gateway's route turns that into HTTP.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from adapters.hotswap import HotSwapper, any_ok
from adapters.registry import AdapterVersion
from retrieval.prompt import build_rag_messages
from retrieval.service import RetrievalService
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
    citations: list[dict[str, Any]] = field(default_factory=list)
    adapter_loads: list[bool] = field(default_factory=list)  # outcome of each load it needed


class Rollout(Protocol):
    """What splits an adapter's traffic between prod and a canary (`serve.monitor.canary`)."""

    def apply(self, decision: Decision, pinned: bool, user: str | None) -> Decision: ...


def loraplex_block(decision: Decision, citations: list[dict[str, Any]]) -> dict[str, Any]:
    """The response's `loraplex` extension: what served the request and why."""
    return {
        "route": decision.route,
        "adapter": decision.adapter_ref,
        "router_version": decision.router_version,
        "reason": decision.reason,
        "scores": decision.scores,
        "alternatives": decision.alternatives,
        "citations": citations,
    }


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
    ) -> None:
        """`rollout`: canary splits applied after routing (None: prod always serves)."""
        self.router = router
        self.engine = engine
        self.retrieval = retrieval
        self.hotswap = hotswap
        self.max_model_len = max_model_len
        self.rollout = rollout

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
            messages, outcome.citations = await asyncio.to_thread(
                self._with_context, tenant, req, decision, messages
            )
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
        if req.stream:
            outcome.stream = result  # type: ignore[assignment]
            return outcome
        body: dict[str, Any] = result  # type: ignore[assignment]
        body["model"] = decision.model  # what answered: the base model or the adapter
        body["loraplex"] = loraplex_block(decision, outcome.citations)
        outcome.body = body
        return outcome

    def _with_context(
        self,
        tenant: Tenant,
        req: ChatCompletionRequest,
        decision: Decision,
        messages: list[dict[str, Any]],
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        result = decision.retrieval
        if result is None:
            result = self.retrieval.search(
                tenant.id, req.last_user_text(), top_k=req.loraplex.top_k
            )
            decision.scores.update(retrieval_scores(result))
        return build_rag_messages(messages, result.hits)

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
