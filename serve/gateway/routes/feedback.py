"""`POST/GET /v1/feedback`, `DELETE /v1/feedback/{id}`: ratings and corrections of answers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query

from serve.errors import ServiceError
from serve.gateway.deps import CallerDep, FeedbackDep, StateDep, TenantDep, TenantsDep

router = APIRouter(tags=["feedback"])


@router.post("/v1/feedback", status_code=201)
def post_feedback(
    payload: Annotated[dict[str, Any], Body()],
    feedback: FeedbackDep,
    state: StateDep,
    tenant: TenantDep,
) -> dict[str, Any]:
    """Rate one of this tenant's chat completions by its `id`: `rating` ('up', 'down' or 1-5),
    optionally a `correction` (the answer that should have been given), a `comment`, and the
    prompt `messages` (for tenants that do not capture prompts). Posting again replaces it."""
    card = feedback.submit(tenant, payload)
    state.metrics.feedback.labels(tenant.name, "down" if card["negative"] else "up").inc()
    return card


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ServiceError(
            f"since must be an ISO date or time (2026-12-01, 2026-12-01T08:00), got {value!r}",
            "invalid_since",
            param="since",
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@router.get("/v1/feedback")
def list_feedback(
    feedback: FeedbackDep,
    tenants: TenantsDep,
    caller: CallerDep,
    tenant: str | None = None,
    adapter: str | None = None,
    since: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """A tenant's feedback, newest first (`adapter`: NAME or NAME@N; `since`: ISO date). With
    the admin key: every tenant's, or `?tenant=NAME`'s."""
    if caller is not None:
        if tenant is not None and tenant != caller.name:
            raise ServiceError(
                "a tenant key lists its own feedback only (the admin key may name a tenant)",
                "forbidden_tenant",
                "forbidden",
                param="tenant",
            )
        tenant_id: str | None = caller.id
    else:
        tenant_id = tenants.require(tenant).id if tenant else None
    rows = feedback.listing(
        tenant_id, adapter=adapter, since=_since(since), limit=limit, offset=offset
    )
    if caller is None:  # the admin sees whose each one is
        names = tenants.names()
        for r in rows:
            r["tenant"] = names.get(r["tenant_id"], r["tenant_id"])
    for r in rows:
        r.pop("tenant_id")
    return {"object": "list", "data": rows}


@router.delete("/v1/feedback/{feedback_id}")
def delete_feedback(feedback_id: str, feedback: FeedbackDep, caller: CallerDep) -> dict[str, Any]:
    """Delete one feedback (by its completion's id): a tenant its own, the admin any."""
    return feedback.delete(caller.id if caller is not None else None, feedback_id)
