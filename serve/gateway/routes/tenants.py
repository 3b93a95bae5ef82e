"""Admin endpoints for tenants: create (the key is shown once), list, policy, keys, delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from serve.gateway.deps import AdminDep, TenantAdminDep, TenantsDep
from serve.tenants import KeyInfo, Tenant

router = APIRouter(prefix="/v1/tenants", tags=["admin"])


class TenantCreate(BaseModel):
    name: str = Field(description="Lowercase letters, digits, '-' and '_'.")
    policy: dict[str, Any] = Field(default_factory=dict)


def _card(t: Tenant) -> dict[str, Any]:
    return {
        "name": t.name,
        "id": t.id,
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


def _key(k: KeyInfo) -> dict[str, Any]:
    return {"id": k.id, "prefix": k.prefix, "created_at": k.created_at.isoformat()}


@router.post("/{name}/keys", status_code=201)
def add_key(name: str, tenants: TenantsDep, _: AdminDep) -> dict[str, Any]:
    """Another key for the tenant, shown this once."""
    return {"name": name, "api_key": tenants.add_key(name)}


@router.get("/{name}/keys")
def list_keys(name: str, tenants: TenantsDep, _: AdminDep) -> dict[str, Any]:
    """The tenant's keys by id and prefix (a key itself is never shown again)."""
    return {"object": "list", "data": [_key(k) for k in tenants.keys(name)]}


@router.delete("/{name}/keys/{key_id}")
def revoke_key(name: str, key_id: str, tenants: TenantsDep, _: AdminDep) -> dict[str, Any]:
    """Revoke one key: refused at once by this gateway, within seconds by the others."""
    return {"revoked": _key(tenants.revoke_key(name, key_id))}


@router.post("/{name}/keys/rotate", status_code=201)
def rotate_keys(name: str, tenants: TenantsDep, _: AdminDep) -> dict[str, Any]:
    """A new key, shown this once, replacing every key the tenant had."""
    key, old = tenants.rotate_keys(name)
    return {"name": name, "api_key": key, "revoked": [_key(k) for k in old]}


@router.delete("/{name}")
async def delete_tenant(
    name: str, admin: TenantAdminDep, _: AdminDep, delete_adapters: bool = False
) -> dict[str, Any]:
    """Delete the tenant with its keys and documents; with `?delete_adapters=true` also the
    adapters it owns (refused with a 409 while it owns some otherwise). Its id is never given
    out again: a tenant created later under the same name inherits nothing."""
    return await admin.delete(name, delete_adapters)
