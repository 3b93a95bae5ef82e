"""FastAPI dependencies: the services, the calling tenant, the admin check.

Handlers ask for exactly what they use (`ChatDep`, `AdaptersDep`, ...), so a unit test fakes one
service with `app.dependency_overrides[get_retrieval] = ...` and leaves the rest real.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from adapters.registry import AdapterRegistry
from retrieval.service import RetrievalService
from serve.admin.adapters import AdapterAdmin
from serve.admin.tenants import TenantAdmin
from serve.chat.service import ChatService
from serve.database import retrying
from serve.errors import ServiceError
from serve.feedback.service import FeedbackService
from serve.gateway.state import AppState
from serve.monitor.canary import CanaryService
from serve.monitor.service import Monitor
from serve.settings import Settings
from serve.tenants import Tenant, TenantService


def get_state(request: Request) -> AppState:
    """Everything the gateway built in its lifespan."""
    state: AppState = request.app.state.loraplex
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def get_settings(state: StateDep) -> Settings:
    return state.settings


def get_chat(state: StateDep) -> ChatService:
    return state.chat


def get_tenants(state: StateDep) -> TenantService:
    return state.services.tenants


def get_tenant_admin(state: StateDep) -> TenantAdmin:
    return state.services.tenant_admin


def get_registry(state: StateDep) -> AdapterRegistry:
    return state.services.registry


def get_adapter_admin(state: StateDep) -> AdapterAdmin:
    return state.services.adapters


def get_retrieval(state: StateDep) -> RetrievalService:
    return state.services.retrieval


def get_feedback(state: StateDep) -> FeedbackService:
    return state.services.feedback


def get_monitor(state: StateDep) -> Monitor:
    return state.services.monitor


def get_canaries(state: StateDep) -> CanaryService:
    return state.services.canaries


def bearer_token(request: Request) -> str:
    """The key in `Authorization: Bearer <key>`, or a 401 that says how to send one."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ServiceError(
            "Missing API key: send 'Authorization: Bearer <key>'. "
            "`loraplex tenants create NAME` makes one.",
            "missing_api_key",
            "unauthorized",
        )
    return token.strip()


TenantsDep = Annotated[TenantService, Depends(get_tenants)]


async def get_tenant(request: Request, tenants: TenantsDep) -> Tenant:
    """The tenant whose key the request carries."""
    # Async, with a short-lived cache in front of the database: a sync dependency would cost a
    # thread hop and a query on every request (measured ~1-2 ms of the gateway's overhead).
    token = bearer_token(request)
    tenant = tenants.cached(token)
    if tenant is None:
        tenant = await run_in_threadpool(retrying, tenants.authenticate, token)
    if tenant is None:
        raise ServiceError("Incorrect API key provided.", "invalid_api_key", "unauthorized")
    request.state.tenant = tenant.name
    return tenant


async def require_admin(request: Request, state: StateDep) -> None:
    """Pass only with the admin key."""
    # Bytes, not str: compare_digest rejects non-ASCII str, and a header may carry any latin-1.
    expected = state.admin_key.current()
    if not hmac.compare_digest(bearer_token(request).encode(), expected.encode()):
        raise ServiceError(
            "This endpoint needs the admin key.", "invalid_admin_key", "unauthorized"
        )
    request.state.tenant = "_admin"


def is_admin_key(token: str, state: AppState) -> bool:
    """Whether `token` is the admin key (constant time)."""
    # Bytes, not str: compare_digest rejects non-ASCII str, and a header may carry any latin-1.
    return hmac.compare_digest(token.encode(), state.admin_key.current().encode())


async def get_caller(request: Request, state: StateDep, tenants: TenantsDep) -> Tenant | None:
    """The tenant whose key the request carries, or None for the admin key."""
    if is_admin_key(bearer_token(request), state):
        request.state.tenant = "_admin"
        return None
    return await get_tenant(request, tenants)


SettingsDep = Annotated[Settings, Depends(get_settings)]
ChatDep = Annotated[ChatService, Depends(get_chat)]
TenantAdminDep = Annotated[TenantAdmin, Depends(get_tenant_admin)]
RegistryDep = Annotated[AdapterRegistry, Depends(get_registry)]
AdaptersDep = Annotated[AdapterAdmin, Depends(get_adapter_admin)]
RetrievalDep = Annotated[RetrievalService, Depends(get_retrieval)]
TenantDep = Annotated[Tenant, Depends(get_tenant)]
AdminDep = Annotated[None, Depends(require_admin)]
CallerDep = Annotated[Tenant | None, Depends(get_caller)]
FeedbackDep = Annotated[FeedbackService, Depends(get_feedback)]
MonitorDep = Annotated[Monitor, Depends(get_monitor)]
CanariesDep = Annotated[CanaryService, Depends(get_canaries)]
