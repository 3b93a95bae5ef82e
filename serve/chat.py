"""The chat completion service: route, assemble the prompt, call the engine, shape the answer.

Handlers stay thin: `complete()` returns either a response dict or an async iterator of chunks,
and raises `ApiError` for anything the caller must change.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool

from serve.engine import AdapterNotLoaded
from serve.errors import ApiError, engine_unavailable
from serve.protocol import ChatCompletionRequest
from serve.router import AUTO, Decision
from serve.state import AppState
from serve.tenants import Tenant


@dataclass
class ChatOutcome:
    """What the handler turns into HTTP: a body or a stream, plus routing facts for headers."""

    decision: Decision
    body: dict[str, Any] | None = None
    stream: AsyncIterator[dict[str, Any]] | None = None
    citations: list[dict[str, Any]] | None = None


def last_user_text(req: ChatCompletionRequest) -> str:
    for message in reversed(req.messages):
        if message.role == "user":
            return message.text()
    return ""


def loraplex_block(decision: Decision, citations: list[dict[str, Any]] | None) -> dict[str, Any]:
    adapter = decision.adapter
    return {
        "route": decision.route,
        "adapter": f"{adapter.name}@{adapter.version}" if adapter is not None else None,
        "reason": decision.reason,
        "scores": decision.scores,
        "citations": citations or [],
    }


def check_limits(req: ChatCompletionRequest, state: AppState) -> None:
    window = state.settings.vllm_max_model_len
    if req.token_limit is not None and req.token_limit >= window:
        raise ApiError(
            400,
            f"max_tokens={req.token_limit} is beyond the context window of {window} tokens; "
            "ask for fewer tokens",
            "context_length_exceeded",
            param="max_tokens",
        )
    if req.stream and req.n and req.n > 1:
        return  # vLLM streams n > 1 choices by index; nothing to refuse here


async def complete(state: AppState, tenant: Tenant, req: ChatCompletionRequest) -> ChatOutcome:
    """Run one chat completion for `tenant`."""
    check_limits(req, state)
    query = last_user_text(req)
    # Embedding a query and searching Chroma take milliseconds of CPU: off the event loop, so
    # open streams keep flowing. A named model with no retrieval decides inline (no thread hop).
    if req.model == AUTO or req.loraplex.route != AUTO:
        decision = await run_in_threadpool(state.router.decide, req, tenant, query)
    else:
        decision = state.router.decide(req, tenant, query)
    messages = [m.model_dump(exclude_none=True) for m in req.messages]
    citations: list[dict[str, Any]] | None = None
    if decision.route in ("rag", "combined"):
        messages, citations = await run_in_threadpool(
            _with_context, state, tenant, req, decision, messages
        )
    params = req.engine_params()
    if decision.adapter is not None and decision.route in ("adapter", "combined"):
        await _ensure_adapter(state, decision.adapter)
    call = state.engine.chat_stream if req.stream else state.engine.chat
    try:
        result = await call(decision.served_model, messages, params)
    except AdapterNotLoaded:
        if decision.adapter is None:
            raise engine_unavailable("the base model is not loaded") from None
        # vLLM restarted or evicted it: load again and retry once.
        await _ensure_adapter(state, decision.adapter, force=True)
        try:
            result = await call(decision.served_model, messages, params)
        except AdapterNotLoaded:
            raise engine_unavailable("the adapter could not be loaded into vLLM") from None
    if req.stream:
        return ChatOutcome(decision, stream=result, citations=citations)
    body = result
    body["model"] = req.model
    body["loraplex"] = loraplex_block(decision, citations)
    return ChatOutcome(decision, body=body, citations=citations)


def _with_context(
    state: AppState,
    tenant: Tenant,
    req: ChatCompletionRequest,
    decision: Decision,
    messages: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from retrieval.prompt import build_rag_messages

    result = decision.retrieval
    if result is None:
        result = state.retrieval.search(tenant.name, last_user_text(req), top_k=req.loraplex.top_k)
        strength = getattr(result, "strength", None) or {}
        decision.scores.update({f"retrieval_{k}": float(v) for k, v in dict(strength).items()})
    hits = getattr(result, "hits", result)
    return build_rag_messages(messages, hits)


async def _ensure_adapter(state: AppState, adapter: Any, force: bool = False) -> None:
    if state.hotswap is None:
        return
    started = time.perf_counter()
    report = await state.hotswap.ensure_loaded(adapter.served_name, str(adapter.path), force=force)
    ok = _load_ok(report)
    if state.extras.get("metrics") is not None:
        state.extras["metrics"].adapter_loads.labels("ok" if ok else "failed").inc()
    if not ok:
        raise engine_unavailable(
            f"adapter {adapter.name}@{adapter.version} could not be loaded "
            f"({time.perf_counter() - started:.1f} s)"
        )


def _load_ok(results: list[Any]) -> bool:
    """Serving needs the adapter on at least one replica; the others load on their next miss."""
    return any(r.ok for r in results)


async def stream_events(
    outcome: ChatOutcome,
    req: ChatCompletionRequest,
    on_done: Any,
) -> AsyncIterator[str]:
    """SSE data lines for a stream: chunks with the caller's model name, then `[DONE]`.

    The `loraplex` block rides on the first chunk; usage is forwarded only when asked for,
    but always counted. `on_done(status, usage, first_at)` gets the perf_counter time of the
    first chunk sent (None if none was), for the time-to-first-token metric.
    """
    import json

    assert outcome.stream is not None
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    usage: dict[str, int] | None = None
    first = True
    first_at: float | None = None
    status = 200
    try:
        async for chunk in outcome.stream:
            chunk["model"] = req.model
            if chunk.get("usage"):
                usage = chunk["usage"]
                if not include_usage:
                    continue
            if first:
                chunk["loraplex"] = loraplex_block(outcome.decision, outcome.citations)
                first = False
                first_at = time.perf_counter()
            yield json.dumps(chunk, separators=(",", ":"))
    except Exception as exc:  # noqa: BLE001 - a stream cannot change its status; say so inline
        status = 503
        err = engine_unavailable(type(exc).__name__)
        yield json.dumps(err.body())
    finally:
        on_done(status, usage, first_at)
    yield "[DONE]"
