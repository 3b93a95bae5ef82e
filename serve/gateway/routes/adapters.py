"""Admin endpoints for the adapter registry; every rule lives in `serve.admin.adapters`."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from adapters.errors import UploadTooLarge
from serve.admin.adapters import AdapterAdmin, Change, read_exemplars
from serve.gateway.deps import AdaptersDep, AdminDep, CanariesDep, SettingsDep, StateDep

router = APIRouter(prefix="/v1/adapters", tags=["admin"])


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _answer(admin: AdapterAdmin, change: Change) -> dict[str, Any]:
    return {"adapter": admin.describe(change.version), "notes": change.notes, **change.sync}


@router.post("", status_code=201)
async def register_adapter(
    admin: AdaptersDep,
    settings: SettingsDep,
    _: AdminDep,
    file: Annotated[UploadFile, File(description="zip or tar(.gz) of the adapter directory")],
    name: Annotated[str, Form(description="Adapter name; a new version if it exists.")],
    tenant: Annotated[str | None, Form(description="Owner tenant (none: admin-owned).")] = None,
    share: Annotated[
        str | None, Form(description="Other tenants, comma-separated; * = all.")
    ] = None,
    promote: Annotated[bool, Form(description="Make this version prod.")] = True,
    force: Annotated[
        bool, Form(description="Promote even when the archive's eval.json says NO-GO.")
    ] = False,
    exemplars: Annotated[
        str | None, Form(description="Typical prompts: a JSON list, or one per line.")
    ] = None,
) -> dict[str, Any]:
    """Upload an adapter: validated, stored by digest, versioned, and loaded into vLLM.

    The archive may carry a training run's `report.json`, `eval.json` and `exemplars.json`
    beside the adapter files: they are recorded as lineage, and a NO-GO `eval.json` keeps the
    version from becoming prod unless `force`, exactly as `loraplex adapters register` does.
    """
    prompts = read_exemplars(exemplars) if exemplars else None
    archive = await _save_upload(file, settings.data_dir / "uploads", settings.max_upload_bytes)
    try:
        change = await admin.register_archive(
            archive,
            name,
            owner=tenant or None,
            shared_with=_split(share),
            promote=promote,
            force=force,
            exemplars=prompts,
        )
    finally:
        archive.unlink(missing_ok=True)
    return {**_answer(admin, change), "existing": change.version.existing}


async def _save_upload(file: UploadFile, uploads: Path, limit: int) -> Path:
    """Copy the upload to a file in `uploads`, refusing it (413) once it passes `limit` bytes."""
    uploads.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="archive-", dir=uploads)
    path, seen = Path(name), 0
    try:
        with os.fdopen(fd, "wb") as out:
            while block := await file.read(1 << 20):
                seen += len(block)
                if seen > limit:
                    raise UploadTooLarge(
                        f"upload is larger than the limit of {limit} bytes "
                        "(LORAPLEX_MAX_UPLOAD_BYTES sets it)"
                    )
                await run_in_threadpool(out.write, block)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


@router.get("")
def list_adapters(admin: AdaptersDep, _: AdminDep, tenant: str | None = None) -> dict[str, Any]:
    """Every adapter version (optionally those the tenant named may use)."""
    return {"object": "list", "data": admin.listing(tenant)}


@router.get("/{name}")
def get_adapter(name: str, admin: AdaptersDep, _: AdminDep) -> dict[str, Any]:
    """All versions of one adapter."""
    admin.registry.get(name)  # not_found, with a message, if unknown
    return {"name": name, "versions": admin.listing(None, name)}


class PromoteBody(BaseModel):
    """Which version becomes prod, or takes a share of the traffic as a canary first."""

    version: int = Field(ge=1, description="Version number, as listed by GET /v1/adapters/{name}.")
    force: bool = Field(False, description="Promote even when its recorded evaluation is NO-GO.")
    reason: str = Field(
        "", max_length=500, description="Why (recorded on the version when forcing a NO-GO one)."
    )
    canary: int | None = Field(
        None, description="Percent (1-99) of NAME's traffic for this version; prod keeps the rest."
    )
    criteria: dict[str, float] | None = Field(
        None,
        description="When the canary counts as worse (min_requests, max_error_increase, "
        "max_latency_ratio, max_downvote_increase, min_feedback, max_grounding_drop).",
    )


class ReloadBody(BaseModel):
    """Which adapter to bring vLLM in line with (all of them when omitted)."""

    name: str | None = Field(None, description="Adapter name; omit for every adapter.")


@router.post("/reload")
async def reload_adapters(
    admin: AdaptersDep, _: AdminDep, body: ReloadBody | None = None
) -> dict[str, Any]:
    """Bring every vLLM replica in line with the registry after it was edited elsewhere (the
    CLI): load prod versions not loaded yet, unload every other version (removed, rolled back
    from, or no longer prod). A request for `NAME@N` loads that version again on demand."""
    return await admin.sync(body.name if body is not None else None)


@router.post("/{name}/promote")
async def promote_adapter(
    name: str, body: PromoteBody, admin: AdaptersDep, _: AdminDep
) -> dict[str, Any]:
    """Make a version prod (traffic for NAME moves to it at once; a running canary of it is
    completed), or with `canary` send that share of NAME's traffic to it while prod keeps the
    rest: compared in GET /v1/adapters/{name}/canary, rolled back automatically when worse."""
    ref = f"{name}@{body.version}"
    change = await admin.promote(ref, body.force, body.canary, body.criteria, body.reason)
    return _answer(admin, change)


@router.get("/{name}/canary")
def get_canary(name: str, canaries: CanariesDep, state: StateDep, _: AdminDep) -> dict[str, Any]:
    """The running canary (or the latest ended one) compared with prod: requests, error rate,
    median latency, down-votes and grounding per arm, the verdict, and the history."""
    if state.recorder is not None:
        state.recorder.write()  # this gateway's latest requests count too
    return canaries.report(name)


@router.post("/{name}/rollback")
async def rollback_adapter(name: str, admin: AdaptersDep, _: AdminDep) -> dict[str, Any]:
    """Point prod back at the previous prod version and unload the one rolled back from; while
    a canary runs, stop the canary instead (prod stays)."""
    return _answer(admin, await admin.rollback(name))


@router.delete("/{name}")
async def remove_adapter(
    name: str, admin: AdaptersDep, _: AdminDep, version: int | None = None
) -> dict[str, Any]:
    """Remove one version (?version=N) or the whole adapter; unload it from vLLM."""
    change = await admin.remove(f"{name}@{version}" if version is not None else name)
    return {"removed": [av.ref for av in change.versions], **change.sync}
