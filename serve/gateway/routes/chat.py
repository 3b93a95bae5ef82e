"""`POST /v1/chat/completions` and `GET /v1/models`: the OpenAI surface tenants call."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.background import BackgroundTask

from serve.chat.grounded import Grounded
from serve.chat.protocol import ChatCompletionRequest
from serve.chat.service import ChatOutcome, loraplex_block, route_block
from serve.errors import ServiceError, engine_unavailable, kind_of, model_not_found
from serve.gateway.deps import ChatDep, RegistryDep, SettingsDep, StateDep, TenantDep
from serve.gateway.errors import error_body, status_of, validation_error
from serve.gateway.sse import EventStream
from serve.gateway.state import AppState
from serve.quotas import Admission, QuotaLimiter
from serve.routing import Decision
from serve.tenants import Tenant

router = APIRouter(tags=["openai"])
log = logging.getLogger("loraplex.gateway")
# What a request's metrics and log line name as its model until the router has accepted the
# name: the caller's free text would make the label set unbounded.
UNROUTED_MODEL = "_unknown"


def inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with every `#/$defs/...` reference replaced by its definition (OpenAPI
    documents keep their own `components`; a body schema inlined this way stands alone)."""
    defs = schema.get("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    out: dict[str, Any] = resolve(schema)
    return out


# The body is parsed by hand (below), so FastAPI cannot describe it: the OpenAPI document
# gets the request model's own JSON schema, and a 200 that is JSON or an SSE stream.
CHAT_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": inline_refs(ChatCompletionRequest.model_json_schema()),
                "example": {
                    "model": "auto",
                    "messages": [{"role": "user", "content": "What is the capital of France?"}],
                    "max_tokens": 16,
                    "temperature": 0,
                },
            }
        },
    },
    "responses": {
        "200": {
            "description": "A chat completion, or with `stream: true` a stream of chunks "
            "(server-sent events ending in `data: [DONE]`; a failure after the first chunk is "
            'a last `data: {"error": {...}}` event before it).',
            "content": {"application/json": {}, "text/event-stream": {}},
        }
    },
}


def _invalid_json(message: str) -> ServiceError:
    return ServiceError(message, "invalid_json")


async def parse_chat_request(request: Request) -> ChatCompletionRequest:
    """Parse and validate the body ourselves, so every mistake gets a 400 that names the field."""
    raw = await request.body()
    try:
        payload = json.loads(raw or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _invalid_json(f"The body is not valid JSON: {exc}") from None
    except RecursionError:
        raise _invalid_json("The body's JSON is nested too deeply.") from None
    if not isinstance(payload, dict):
        raise _invalid_json("The body must be a JSON object.")
    try:
        return ChatCompletionRequest.model_validate(payload)
    except RecursionError:
        raise _invalid_json("The body's JSON is nested too deeply.") from None
    except ValidationError as exc:
        raise validation_error(exc.errors()) from None


class ChatRecorder:
    """One request's facts to the metrics and the request log, once it has ended."""

    def __init__(self, state: AppState, tenant: Tenant, req: ChatCompletionRequest) -> None:
        self.state = state
        self.tenant = tenant
        self.req = req
        self.started = time.perf_counter()
        # The facts feedback, capture, drift and canaries need (serve.feedback.recorder).
        self.trace = state.recorder.trace(tenant, req) if state.recorder is not None else None
        self.citations: list[dict[str, Any]] = []
        self.rag: Grounded | None = None  # read when the request ends (a stream's last chunk)

    def __call__(
        self,
        status: int,
        model: str,
        decision: Decision | None,
        usage: dict[str, int] | None,
        first_at: float | None = None,
        error: str | None = None,
    ) -> None:
        seconds = time.perf_counter() - self.started
        if self.trace is not None:
            self.trace.finish(status, decision, seconds, self.citations)
        route = decision.route if decision is not None else "unrouted"
        name = self.tenant.name
        self.state.metrics.observe_chat(
            tenant=name, model=model, route=route, status=status, seconds=seconds, usage=usage
        )
        if decision is not None:
            self.state.metrics.observe_decision(name, decision)
        if self.rag is not None and status == 200:
            self.state.metrics.observe_grounding(name, self.rag)
        if first_at is not None:
            self.state.metrics.ttft.labels(name, model).observe(first_at - self.started)
        self.state.request_log.write(
            tenant=name,
            model=model,
            route=route,
            status=status,
            error=error,
            served_model=decision.model if decision is not None else None,
            adapter=decision.adapter_ref if decision is not None else None,
            router_version=decision.router_version if decision is not None else None,
            reason=decision.reason if decision is not None else None,
            stream=self.req.stream,
            latency_ms=round(seconds * 1000, 1),
            usage=usage,
        )


@router.post("/v1/chat/completions", openapi_extra=CHAT_OPENAPI)
async def chat_completions(
    request: Request, state: StateDep, chat: ChatDep, tenant: TenantDep
) -> Any:
    """OpenAI chat completions, streamed (SSE) or not, routed per tenant."""
    req = await parse_chat_request(request)
    record = ChatRecorder(state, tenant, req)
    decision: Decision | None = None
    quotas = state.services.quotas
    admission: Admission | None = None
    try:
        # Before anything costly: over a quota, the router and the engine are never asked.
        admission = await quotas.admit(tenant, req.stream)
        decision = await chat.decide(tenant, req)
        outcome = await chat.complete(tenant, req, decision)
    except Exception as exc:
        await quotas.finish(admission)
        if kind_of(exc) is not None:
            # A name the tenant may not use is the caller's free text: one label for all of
            # them keeps the metric's label set bounded.
            model = req.model if decision is not None else UNROUTED_MODEL
            record(status_of(exc), model, decision, None, error=getattr(exc, "code", None))
        raise
    record.citations = outcome.citations
    record.rag = outcome.rag
    for ok in outcome.adapter_loads:
        state.metrics.adapter_loads.labels("ok" if ok else "failed").inc()
    headers = {"x-loraplex-route": decision.route, "x-loraplex-adapter": decision.adapter_ref or ""}
    if outcome.stream is not None:

        def done(status: int, usage: dict[str, int] | None, first_at: float | None) -> None:
            error = None if status == 200 else STREAM_ERRORS.get(status)
            record(status, req.model, decision, usage, first_at, error=error)
            if admission is not None:
                admission.tokens = total_tokens(usage)

        on_chunk = record.trace.chunk if record.trace is not None else None
        events = stream_events(outcome, req, done, on_chunk)
        if admission is not None:
            events = counted(events, quotas, admission)
        return EventStream(events, headers)
    if record.trace is not None and outcome.body is not None:
        record.trace.body(outcome.body)
    usage = (outcome.body or {}).get("usage")
    record(200, req.model, decision, usage)
    if admission is None:
        return json_response(outcome.body, headers)
    admission.tokens = total_tokens(usage)
    # Counted after the answer is sent: the database write is not on the caller's clock.
    return json_response(outcome.body, headers, BackgroundTask(quotas.finish, admission))


def json_response(
    body: Any, headers: dict[str, str], background: BackgroundTask | None = None
) -> Response:
    """A JSON response encoded with orjson (a tenth of the standard encoder's time)."""
    return Response(
        orjson.dumps(body), media_type="application/json", headers=headers, background=background
    )


def total_tokens(usage: dict[str, int] | None) -> int:
    """Prompt + completion tokens of an answer's usage (0 when the engine gave none)."""
    if not usage:
        return 0
    total = usage.get("total_tokens")
    if not isinstance(total, int):
        total = int(usage.get("prompt_tokens") or 0) + int(usage.get("completion_tokens") or 0)
    return max(0, total)


async def counted(
    events: AsyncIterator[str], quotas: QuotaLimiter, admission: Admission
) -> AsyncIterator[str]:
    """`events`, keeping the stream's quota slot while it runs and counting its tokens (from
    the usage `stream_events` always asks for) once it ends, however it ends."""
    try:
        async for event in events:
            await quotas.keep(admission)
            yield event
    finally:
        # Closing `events` first runs its own clean-up, which hands over the usage; shielded:
        # a client that went away cancels this task, and the count must still land.
        close = getattr(events, "aclose", None)
        if close is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await close()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.shield(quotas.finish(admission))


# How a stream that did not end well is counted: the engine failed, or the client went away.
STREAM_ERRORS = {503: "engine_unavailable", 499: "client_closed"}


def stream_interrupted(exc: BaseException) -> ServiceError:
    """The error a stream ends with when vLLM fails after the first chunk was sent."""
    return engine_unavailable(
        f"it failed in the middle of the answer ({type(exc).__name__}); the answer above is "
        "incomplete"
    )


async def stream_events(
    outcome: ChatOutcome,
    req: ChatCompletionRequest,
    on_done: Callable[[int, dict[str, int] | None, float | None], None],
    on_chunk: Callable[[dict[str, Any]], None] | None = None,
) -> AsyncIterator[str]:
    """SSE data lines for a stream: chunks with the caller's model name, then `[DONE]`.

    The `loraplex` block rides on the first chunk (on rag and combined paths the route part
    only: a last chunk without choices carries the whole block, with citations, sources and
    grounding, once the answer is known); usage is forwarded only when asked for,
    but always counted. When vLLM fails mid-stream the last event before `[DONE]` is an
    OpenAI-style error body (the `openai` client raises it as an `APIError`), never a silent
    cut. `on_done(status, usage, first_at)`: 200, 503 (vLLM failed) or 499 (the client went
    away), and the perf_counter time of the first chunk sent (None if none was), for the
    time-to-first-token metric; `on_chunk` sees every chunk sent (the request's record: its
    id, and its text where it is captured).
    """
    assert outcome.stream is not None
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    usage: dict[str, int] | None = None
    first_at: float | None = None
    status = 499  # until the stream ends one way or the other: the client went away
    sent = 0
    try:
        async for chunk in outcome.stream:
            chunk["model"] = outcome.decision.model
            if chunk.get("usage"):
                usage = chunk["usage"]
                if not include_usage:
                    continue
            if first_at is None:
                pending = outcome.rag is not None and outcome.decision.route in ("rag", "combined")
                block = (
                    route_block(outcome.decision) if pending else loraplex_block(outcome.decision)
                )
                chunk["loraplex"] = {**block, **chunk.get("loraplex", {})}
                first_at = time.perf_counter()
            if on_chunk is not None:
                on_chunk(chunk)
            sent += 1
            yield orjson.dumps(chunk).decode()
        status = 200
    except Exception as exc:  # noqa: BLE001 - a stream cannot change its status; say so inline
        status = 503
        log.warning("stream from vLLM failed after %d chunks: %s", sent, str(exc)[:300])
        yield json.dumps(error_body(stream_interrupted(exc)))
    finally:
        # Closing the upstream stream makes vLLM abort the request (a client that went away
        # must not keep the engine generating for nobody).
        close = getattr(outcome.stream, "aclose", None)
        if close is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await close()
        on_done(status, usage, first_at)
    yield "[DONE]"


def _model_card(model_id: str, created: int, owned_by: str, **extra: Any) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": owned_by, **extra}


def visible_models(
    settings: SettingsDep, registry: RegistryDep, tenant: TenantDep
) -> list[dict[str, Any]]:
    """`auto`, the base model (where the policy allows it) and the tenant's prod adapters."""
    now = int(time.time())
    base = settings.base_model
    cards = [_model_card("auto", now, "loraplex", parent=base)]
    if tenant.policy.allows_base(base):
        cards.append(_model_card(base, now, "loraplex", root=base))
    for av in registry.list_for_tenant(tenant.id):
        cards.append(
            _model_card(
                av.name,
                int(av.created_at.timestamp()),
                tenant.name if av.owner == tenant.id else "loraplex",
                parent=base,
                root=base,
                version=av.version,
            )
        )
    return cards


@router.get("/v1/models")
def list_models(settings: SettingsDep, registry: RegistryDep, tenant: TenantDep) -> dict[str, Any]:
    """The models this tenant may call: `auto`, the base model and its adapters."""
    return {"object": "list", "data": visible_models(settings, registry, tenant)}


@router.get("/v1/models/{model_id:path}")
def get_model(
    model_id: str, settings: SettingsDep, registry: RegistryDep, tenant: TenantDep
) -> dict[str, Any]:
    """One model card, if this tenant may use it."""
    for card in visible_models(settings, registry, tenant):
        if card["id"] == model_id:
            return card
    raise model_not_found(model_id)
