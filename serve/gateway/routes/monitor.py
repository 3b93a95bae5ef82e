"""`GET /v1/monitor` (admin): drift, knowledge gaps, route mix, feedback, grounding, canaries."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from serve.gateway.deps import AdminDep, CanariesDep, MonitorDep, StateDep

router = APIRouter(tags=["admin"])


@router.get("/v1/monitor")
def monitor(
    monitor: MonitorDep,
    canaries: CanariesDep,
    state: StateDep,
    _: AdminDep,
    tenant: str | None = None,
    window_h: Annotated[float | None, Query(gt=0, le=24 * 90)] = None,
) -> dict[str, Any]:
    """Per tenant (or `?tenant=NAME`) and adapter over the recent window (`window_h` hours;
    default the gateway's setting): input drift, knowledge gaps, route mix shift, down-vote
    rate, grounding, trends; every threshold of the tenant's policy crossed is in `warnings`.
    Running canaries are compared with prod."""
    if state.recorder is not None:
        state.recorder.flush()  # this gateway's latest requests count too
    reports = monitor.reports(tenant, window_h)
    warnings = [{"tenant": r["tenant"], **w} for r in reports for w in r["warnings"]]
    return {
        "object": "monitor",
        "tenants": reports,
        "canaries": canaries.running(),
        "warnings": warnings,
    }
