"""Tenants: who calls, with which keys, under which policy."""

from serve.tenants.policy import (
    ALL_ROUTES,
    Capture,
    DriftThresholds,
    Route,
    TenantPolicy,
    parse_policy,
)
from serve.tenants.service import (
    KeyInfo,
    Tenant,
    TenantService,
    hash_key,
    new_key,
    tenant_not_found,
)

__all__ = [
    "ALL_ROUTES",
    "Capture",
    "DriftThresholds",
    "KeyInfo",
    "Route",
    "Tenant",
    "TenantPolicy",
    "TenantService",
    "hash_key",
    "new_key",
    "parse_policy",
    "tenant_not_found",
]
