"""Admin endpoints for tenants: create (the key is shown once), list, policy, keys, delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from serve.deps import AdminDep, StateDep
from serve.tenants import Tenant, TenantError

router = APIRouter(prefix="/v1/tenants", tags=["admin"])


class TenantCreate(BaseModel):
    name: str = Field(description="Lowercase letters, digits, '-' and '_'.")
    policy: dict[str, Any] = Field(default_factory=dict)


def _card(t: Tenant) -> dict[str, Any]:
    return {
        "name": t.name,
        "policy": t.policy.model_dump(),
        "created_at": t.created_at.isoformat() if t.created_at else None,
        "keys": t.key_count,
    }


@router.post("", status_code=201)
async def create_tenant(body: TenantCreate, state: StateDep, _: AdminDep) -> dict[str, Any]:
    tenant, key = state.tenants.create(body.name, body.policy)
    return {**_card(tenant), "api_key": key}


@router.get("")
async def list_tenants(state: StateDep, _: AdminDep) -> dict[str, Any]:
    return {"object": "list", "data": [_card(t) for t in state.tenants.list()]}


@router.put("/{name}/policy")
async def set_policy(
    name: str, policy: dict[str, Any], state: StateDep, _: AdminDep
) -> dict[str, Any]:
    return _card(state.tenants.set_policy(name, policy))


@router.post("/{name}/keys", status_code=201)
async def add_key(name: str, state: StateDep, _: AdminDep) -> dict[str, Any]:
    return {"name": name, "api_key": state.tenants.add_key(name)}


@router.delete("/{name}")
async def delete_tenant(name: str, state: StateDep, _: AdminDep) -> dict[str, Any]:
    """Delete the tenant, its keys and its documents (Chroma collection and BM25 index)."""
    try:
        state.tenants.delete(name)
    except TenantError as exc:
        # A delete whose document clean-up failed after the row went can be repeated: the
        # leftovers are removed and the call succeeds; with nothing left it is a plain 404.
        if exc.code != "tenant_not_found" or state.retrieval is None:
            raise
        if not await run_in_threadpool(state.retrieval.drop_tenant, name):
            raise
        return {"name": name, "deleted": True}
    # After the row, so that no key can ingest again in between; left behind, the documents
    # would reappear for a new tenant of the same name.
    if state.retrieval is not None:
        await run_in_threadpool(state.retrieval.drop_tenant, name)
    return {"name": name, "deleted": True}


__all__ = ["router", "TenantError"]
