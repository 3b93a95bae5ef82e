"""`POST /v1/chat/completions` and `GET /v1/models`: the OpenAI surface tenants call."""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sse_starlette import EventSourceResponse

from serve.chat import complete, stream_events
from serve.deps import StateDep, TenantDep
from serve.errors import ApiError, model_not_found
from serve.protocol import ChatCompletionRequest

router = APIRouter(tags=["openai"])


async def parse_chat_request(request: Request) -> ChatCompletionRequest:
    """Parse and validate the body ourselves, so every mistake gets a 400 that names the field."""
    raw = await request.body()
    try:
        payload = json.loads(raw or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"The body is not valid JSON: {exc}", "invalid_json") from None
    except RecursionError:
        raise ApiError(400, "The body's JSON is nested too deeply.", "invalid_json") from None
    if not isinstance(payload, dict):
        raise ApiError(400, "The body must be a JSON object.", "invalid_json")
    try:
        return ChatCompletionRequest.model_validate(payload)
    except RecursionError:
        raise ApiError(400, "The body's JSON is nested too deeply.", "invalid_request") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ApiError(
            400, f"Invalid '{loc}': {err['msg']}", "invalid_request", param=loc or None
        ) from None


@router.post("/v1/chat/completions")
async def chat_completions(request: Request, state: StateDep, tenant: TenantDep) -> Any:
    """OpenAI chat completions, streamed (SSE) or not, routed per tenant."""
    started = time.perf_counter()
    req = await parse_chat_request(request)
    metrics = state.extras["metrics"]
    request_log = state.extras.get("request_log")

    def record(status: int, model: str, decision: Any, usage: dict[str, int] | None,
               first_at: float | None = None, error: str | None = None) -> None:  # fmt: skip
        """The request's facts to the metrics and the request log, once it has ended."""
        seconds = time.perf_counter() - started
        route = decision.route if decision is not None else "unrouted"
        metrics.observe_chat(tenant=tenant.name, model=model, route=route, status=status,
                             seconds=seconds, usage=usage)  # fmt: skip
        if first_at is not None:
            metrics.ttft.labels(tenant.name, model).observe(first_at - started)
        if request_log is not None:
            adapter = decision.adapter if decision is not None else None
            request_log.write(
                tenant=tenant.name, model=model, route=route, status=status, error=error,
                adapter=f"{adapter.name}@{adapter.version}" if adapter else None,
                reason=decision.reason if decision is not None else None,
                stream=req.stream, latency_ms=round(seconds * 1000, 1), usage=usage,
            )  # fmt: skip

    try:
        outcome = await complete(state, tenant, req)
    except ApiError as exc:
        # A name the tenant may not use is the caller's free text: one label for all of them
        # keeps the metric's label set bounded.
        model = "_unknown" if exc.code == "model_not_found" else req.model
        record(exc.status_code, model, None, None, error=exc.code)
        raise
    decision = outcome.decision
    headers = {
        "x-loraplex-route": decision.route,
        "x-loraplex-adapter": (
            f"{decision.adapter.name}@{decision.adapter.version}" if decision.adapter else ""
        ),
    }
    if outcome.stream is not None:

        def done(status: int, usage: dict[str, int] | None, first_at: float | None) -> None:
            record(status, req.model, decision, usage, first_at)

        return EventSourceResponse(
            stream_events(outcome, req, done), headers=headers, ping=15, sep="\n"
        )
    record(200, req.model, decision, (outcome.body or {}).get("usage"))
    return JSONResponse(outcome.body, headers=headers)


def _model_card(model_id: str, created: int, owned_by: str, **extra: Any) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": owned_by, **extra}


def visible_models(state: StateDep, tenant: TenantDep) -> list[dict[str, Any]]:
    settings = state.settings
    now = int(time.time())
    cards = [_model_card("auto", now, "loraplex", parent=settings.base_model)]
    if tenant.policy.allow_base_model or settings.base_model in tenant.policy.models:
        cards.append(_model_card(settings.base_model, now, "loraplex", root=settings.base_model))
    if state.registry is not None:
        for av in state.registry.list_for_tenant(tenant.name):
            created = getattr(av, "created_at", None)
            cards.append(
                _model_card(
                    av.name,
                    int(created.timestamp()) if created else now,
                    getattr(av, "owner", None) or "loraplex",
                    parent=settings.base_model,
                    root=settings.base_model,
                    version=av.version,
                )
            )
    return cards


@router.get("/v1/models")
async def list_models(state: StateDep, tenant: TenantDep) -> dict[str, Any]:
    """The models this tenant may call: `auto`, the base model and its adapters."""
    return {"object": "list", "data": visible_models(state, tenant)}


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, state: StateDep, tenant: TenantDep) -> dict[str, Any]:
    for card in visible_models(state, tenant):
        if card["id"] == model_id:
            return card
    raise model_not_found(model_id)
