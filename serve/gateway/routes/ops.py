"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from serve.gateway.deps import AdminDep, StateDep

router = APIRouter(tags=["ops"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The gateway process answers."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={
        503: {"description": "no vLLM replica answers", "content": {"application/json": {}}}
    },
)
async def readyz(state: StateDep) -> JSONResponse:
    """Ready only when at least one vLLM replica answers its health check."""
    replicas = await state.engine.ready()
    ready = any(replicas.values())
    body = {"status": "ready" if ready else "unavailable", "replicas": replicas}
    headers = {} if ready else {"Retry-After": "5"}
    return JSONResponse(body, status_code=200 if ready else 503, headers=headers)


@router.get(
    "/metrics",
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
async def metrics(state: StateDep, _: AdminDep) -> Response:
    """Prometheus text format, with the admin key: it names every tenant and its traffic.
    (`LORAPLEX_METRICS_ADDRESS` serves the same on a separate operator address instead.)"""
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4")
