"""FastAPI dependencies: the app state, the calling tenant, the admin check."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from serve.errors import ApiError
from serve.state import AppState
from serve.tenants import Tenant


async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.loraplex
    return state


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401,
            "Missing API key: send 'Authorization: Bearer <key>'. "
            "`loraplex tenants create NAME` makes one.",
            "missing_api_key",
        )
    return token.strip()


async def get_tenant(request: Request, state: Annotated[AppState, Depends(get_state)]) -> Tenant:
    # Async, with a short-lived cache in front of the database: a sync dependency would cost a
    # thread hop and a query on every request (measured ~1-2 ms of the gateway's overhead).
    token = bearer_token(request)
    tenant = state.tenants.cached(token)
    if tenant is None:
        tenant = await run_in_threadpool(state.tenants.authenticate, token)
    if tenant is None:
        raise ApiError(401, "Incorrect API key provided.", "invalid_api_key")
    request.state.tenant = tenant.name
    return tenant


async def require_admin(request: Request, state: Annotated[AppState, Depends(get_state)]) -> None:
    # Bytes, not str: compare_digest rejects non-ASCII str, and a header may carry any latin-1.
    if not hmac.compare_digest(bearer_token(request).encode(), state.admin_key.encode()):
        raise ApiError(401, "This endpoint needs the admin key.", "invalid_admin_key")
    request.state.tenant = "_admin"


StateDep = Annotated[AppState, Depends(get_state)]
TenantDep = Annotated[Tenant, Depends(get_tenant)]
AdminDep = Annotated[None, Depends(require_admin)]
