"""Name rules, in one place: what may name a tenant or an adapter."""

from __future__ import annotations

import re

from adapters.registry import check_name as check_adapter_name
from serve.errors import ServiceError

__all__ = ["check_adapter_name", "check_tenant_name"]

TENANT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def check_tenant_name(name: str) -> str:
    """`name` if it can name a tenant, else an invalid error that says what is allowed."""
    if not TENANT_RE.match(name):
        raise ServiceError(
            f"tenant name {name!r} is invalid: use 1-63 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit",
            "invalid_tenant",
        )
    return name
