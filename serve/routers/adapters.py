"""Admin endpoints for the adapter registry, with hot-swap into every vLLM replica."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from adapters.archive import extract_archive
from adapters.errors import UploadTooLarge
from adapters.hotswap import HotSwapper, ReplicaResult
from adapters.registry import SERVED_RE, AdapterRegistry, AdapterVersion
from serve.deps import AdminDep, StateDep
from serve.errors import ApiError
from serve.settings import Settings

router = APIRouter(prefix="/v1/adapters", tags=["admin"])


def build(settings: Settings, vllm_urls: list[str]) -> tuple[AdapterRegistry, HotSwapper]:
    """The registry and hot-swapper for this gateway."""
    registry = AdapterRegistry(
        settings.resolved_database_url,
        settings.adapter_store_dir,
        base_model=settings.base_model,
        max_rank=settings.vllm_max_lora_rank,
        base_model_dir=settings.resolved_model_dir,
    )
    return registry, HotSwapper(vllm_urls)


def _loads(results: list[ReplicaResult]) -> list[dict[str, Any]]:
    return [{"replica": r.url, "ok": r.ok, "detail": r.detail} for r in results]


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _exemplars(value: str | None) -> list[str]:
    if not value:
        return []
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        raise ApiError(
            400, "exemplars must be a JSON list of strings", "invalid_exemplars"
        ) from None
    if not isinstance(parsed, list) or not all(isinstance(x, str) for x in parsed):
        raise ApiError(400, "exemplars must be a JSON list of strings", "invalid_exemplars")
    return parsed


async def _swap_in(state: Any, av: AdapterVersion) -> list[dict[str, Any]]:
    return _loads(await state.hotswap.load(av.served_name, str(av.path)))


@router.post("", status_code=201)
async def register_adapter(
    state: StateDep,
    _: AdminDep,
    file: Annotated[UploadFile, File(description="zip or tar(.gz) of the adapter directory")],
    name: Annotated[str, Form(description="Adapter name; a new version if it exists.")],
    tenant: Annotated[str | None, Form(description="Owner tenant (none: admin-owned).")] = None,
    share: Annotated[
        str | None, Form(description="Other tenants, comma-separated; * = all.")
    ] = None,
    promote: Annotated[bool, Form(description="Make this version prod.")] = True,
    exemplars: Annotated[str | None, Form(description="JSON list of typical prompts.")] = None,
) -> dict[str, Any]:
    """Upload an adapter: validated, stored by digest, versioned, and loaded into vLLM."""
    owners = [tenant] if tenant else []
    for t in owners + [s for s in _split(share) if s != "*"]:
        if state.tenants.get(t) is None:
            raise ApiError(404, f"no tenant named {t!r}", "tenant_not_found")
    prompts = _exemplars(exemplars)
    uploads = state.settings.data_dir / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    archive = await _save_upload(file, uploads, state.settings.max_upload_bytes)
    try:
        src = await run_in_threadpool(
            extract_archive, archive, uploads, state.settings.max_upload_bytes
        )
        try:
            av = await run_in_threadpool(
                state.registry.register,
                src,
                name,
                owner=tenant,
                shared_with=_split(share),
                promote=promote,
                exemplars=prompts,
            )
        finally:
            shutil.rmtree(_upload_root(src, uploads), ignore_errors=True)
    finally:
        archive.unlink(missing_ok=True)
    load = await _swap_in(state, av) if av.is_prod else []
    return {"adapter": av.to_dict(), "existing": av.existing, "load": load}


async def _save_upload(file: UploadFile, uploads: Path, limit: int) -> Path:
    """Copy the upload to a file in `uploads`, refusing it (413) once it passes `limit` bytes."""
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
                out.write(block)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def _upload_root(src: Path, uploads: Path) -> Path:
    return uploads / src.relative_to(uploads).parts[0]


@router.get("")
async def list_adapters(state: StateDep, _: AdminDep, tenant: str | None = None) -> dict[str, Any]:
    """Every adapter version (optionally those a tenant may use)."""
    versions = await run_in_threadpool(state.registry.versions, tenant)
    return {"object": "list", "data": [v.to_dict() for v in versions]}


@router.get("/{name}")
async def get_adapter(name: str, state: StateDep, _: AdminDep) -> dict[str, Any]:
    """All versions of one adapter."""
    await run_in_threadpool(state.registry.get, name)  # 404 with a message if unknown
    versions = await run_in_threadpool(state.registry.versions, None, name)
    return {"name": name, "versions": [v.to_dict() for v in versions]}


class PromoteBody(BaseModel):
    """Which version becomes prod."""

    version: int = Field(ge=1, description="Version number, as listed by GET /v1/adapters/{name}.")
    force: bool = Field(False, description="Promote even when its recorded evaluation is NO-GO.")


class ReloadBody(BaseModel):
    """Which adapter to bring vLLM in line with (all of them when omitted)."""

    name: str | None = Field(None, description="Adapter name; omit for every adapter.")


@router.post("/reload")
async def reload_adapters(
    state: StateDep, _: AdminDep, body: ReloadBody | None = None
) -> dict[str, Any]:
    """Bring every vLLM replica in line with the registry after it was edited elsewhere (the
    CLI): load prod versions not loaded yet, unload every other version (removed, rolled back
    from, or no longer prod). A request for `NAME@N` loads that version again on demand."""
    name = body.name if body is not None else None
    versions = await run_in_threadpool(state.registry.versions, None, name)
    prod = [av for av in versions if av.is_prod]
    load = {}
    for av in prod:
        load[av.ref] = _loads(await state.hotswap.ensure_loaded(av.served_name, str(av.path)))
    keep = {av.served_name for av in prod}
    tracked = set().union(*state.hotswap.loaded.values()) if state.hotswap.loaded else set()
    unload = {}
    for served in sorted(tracked - keep):
        match = SERVED_RE.match(served)
        if match is not None and (name is None or match["name"] == name):
            unload[served] = _loads(await state.hotswap.unload(served))
    return {"load": load, "unload": unload}


@router.post("/{name}/promote")
async def promote_adapter(
    name: str, body: PromoteBody, state: StateDep, _: AdminDep
) -> dict[str, Any]:
    """Make a version prod; traffic for NAME moves to it at once."""
    av = await run_in_threadpool(state.registry.promote, f"{name}@{body.version}", body.force)
    return {"adapter": av.to_dict(), "load": await _swap_in(state, av)}


@router.post("/{name}/rollback")
async def rollback_adapter(name: str, state: StateDep, _: AdminDep) -> dict[str, Any]:
    """Point prod back at the previous prod version and unload the one rolled back from."""
    before = await run_in_threadpool(state.registry.get, name)
    av = await run_in_threadpool(state.registry.rollback, name)
    load = await _swap_in(state, av)
    unload = _loads(await state.hotswap.unload(before.served_name))
    return {
        "adapter": av.to_dict(),
        "rolled_back_from": before.version,
        "load": load,
        "unload": unload,
    }


@router.delete("/{name}")
async def remove_adapter(
    name: str, state: StateDep, _: AdminDep, version: int | None = None
) -> dict[str, Any]:
    """Remove one version (?version=N) or the whole adapter; unload it from vLLM."""
    ref = f"{name}@{version}" if version is not None else name
    gone = await run_in_threadpool(state.registry.remove, ref)
    unload = []
    for av in gone:
        unload += _loads(await state.hotswap.unload(av.served_name))
    return {"removed": [av.ref for av in gone], "unload": unload}
