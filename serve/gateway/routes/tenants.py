"""Admin endpoints for tenants: create (the key is shown once), list, policy, keys, delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from serve.gateway.deps import AdminDep, TenantAdminDep, TenantsDep
from serve.tenants import Tenant

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
def create_tenant(body: TenantCreate, tenants: TenantsDep, _: AdminDep) -> dict[str, Any]:
    """Create a tenant; the response holds its API key, shown this once."""
    tenant, key = tenants.create(body.name, body.policy)
    return {**_card(tenant), "api_key": key}


@router.get("")
def list_tenants(tenants: TenantsDep, _: AdminDep) -> dict[str, Any]:
    """Every tenant with its policy and key count."""
    return {"object": "list", "data": [_card(t) for t in tenants.list()]}


@router.put("/{name}/policy")
def set_policy(
    name: str, policy: dict[str, Any], tenants: TenantsDep, _: AdminDep
) -> dict[str, Any]:
    """Replace a tenant's policy."""
    return _card(tenants.set_policy(name, policy))


@router.post("/{name}/keys", status_code=201)
def add_key(name: str, tenants: TenantsDep, _: AdminDep) -> dict[str, Any]:
    """Another key for the tenant, shown this once."""
    return {"name": name, "api_key": tenants.add_key(name)}


@router.delete("/{name}")
def delete_tenant(name: str, admin: TenantAdminDep, _: AdminDep) -> dict[str, Any]:
    """Delete the tenant, its keys and its documents (Chroma collection and BM25 index)."""
    admin.delete(name)
    return {"name": name, "deleted": True}
