"""Adapter administration, the same for HTTP and the CLI: register, promote, roll back, remove.

Every rule lives here once: the owner and the tenants an adapter is shared with must exist, and
the adapter is recorded as theirs by tenant id (a tenant created later under a deleted one's name
inherits nothing); the name must be free or the caller's; lineage (`report.json`, `eval.json`, `exemplars.json` beside
the adapter) is recorded; a NO-GO evaluation never becomes prod without `force`. After each
change, `serving.sync(name)` brings vLLM in line: inside the gateway that loads and unloads on
the replicas (`ReplicaSync`), from the CLI it asks a running gateway to do so (`GatewayNotifier`).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from adapters.archive import extract_archive
from adapters.registry import AdapterRegistry, AdapterVersion
from serve.errors import ServiceError
from serve.monitor.canary import CanaryCriteria
from serve.names import check_adapter_name
from serve.tenants import TenantService

EVERYONE = "*"
# What the HTTP upload leaves in uploads_dir while it works: the archive, the extracted folder.
UPLOAD_PREFIXES = ("archive-", "upload-")
SyncReport = dict[str, Any]  # {"load": {ref: [replica results]}, "unload": {served: [...]}}


class Serving(Protocol):
    """Whatever brings the engines in line with the registry after a change."""

    async def sync(self, name: str | None) -> SyncReport:
        """Load prod versions of `name` (every adapter: None) and unload the rest."""
        ...


class NoServing:
    """No engine to tell (tests, offline tools): changes take effect on the next request."""

    async def sync(self, name: str | None) -> SyncReport:
        """Nothing to do."""
        return {"load": {}, "unload": {}, "note": "no engine to tell"}


@dataclass
class Change:
    """What an admin operation did: the versions it touched, its notes, the engines' report."""

    versions: list[AdapterVersion]
    notes: list[str] = field(default_factory=list)
    sync: SyncReport = field(default_factory=dict)

    @property
    def version(self) -> AdapterVersion:
        """The version the operation was about (the first, for removals)."""
        return self.versions[0]


def read_exemplars(text: str) -> list[str]:
    """Typical prompts for the router: one per line, a JSON list of strings, or JSONL (or a
    JSON list) of objects with `prompt` or `messages` (the last user turn is the prompt)."""
    stripped = text.strip()
    if not stripped:
        return []
    try:
        data = json.loads(stripped)
    except json.JSONDecodeError:
        data = None
    if isinstance(data, list):
        return [_exemplar(item, f"item {i + 1}") for i, item in enumerate(data)]
    lines = [line.strip() for line in stripped.splitlines() if line.strip()]
    if not all(line.startswith("{") for line in lines):
        return lines
    out = []
    for number, line in enumerate(stripped.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(_exemplar(json.loads(line), f"line {number}"))
        except json.JSONDecodeError as exc:
            raise _bad_exemplars(f"line {number} is not valid JSON ({exc.msg})") from None
    return out


def _exemplar(item: Any, where: str) -> str:
    if isinstance(item, str) and item.strip():
        return item.strip()
    if isinstance(item, dict):
        if isinstance(item.get("prompt"), str) and item["prompt"].strip():
            return str(item["prompt"]).strip()
        messages = item.get("messages")
        if isinstance(messages, list):
            users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
            if users:
                content = users[-1].get("content")
                if isinstance(content, list):  # OpenAI content parts
                    content = " ".join(
                        str(p.get("text", "")) for p in content if isinstance(p, dict)
                    )
                if isinstance(content, str) and content.strip():
                    return content.strip()
    raise _bad_exemplars(
        f"{where} has no prompt: give a string, or an object with a 'prompt' "
        "or a user message in 'messages'"
    )


def _bad_exemplars(detail: str) -> ServiceError:
    return ServiceError(
        f"exemplars: {detail}. Accepted: one prompt per line, a JSON list of strings, or JSONL "
        "with 'prompt' or 'messages'",
        "invalid_exemplars",
    )


def lineage(directory: Path) -> tuple[dict[str, Any], list[str]]:
    """Lineage and exemplars a training run leaves beside the adapter (in it, or its parent):
    `report.json` (dataset digest, training config), `eval.json`, `exemplars.json`."""
    found: dict[str, Any] = {}
    exemplars: list[str] = []
    for folder in (directory, directory.parent):
        report = folder / "report.json"
        if report.is_file() and "training_config" not in found:
            data = _json(report)
            found["dataset_digest"] = data.get("dataset_digest")
            found["training_config"] = data.get("config")
        if (folder / "eval.json").is_file() and "eval_report" not in found:
            found["eval_report"] = _json(folder / "eval.json")
        if (folder / "exemplars.json").is_file() and not exemplars:
            exemplars = read_exemplars((folder / "exemplars.json").read_text())
    return found, exemplars


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ServiceError(
            f"{path.name} beside the adapter is not valid JSON: {exc}", "invalid_lineage"
        ) from None
    if not isinstance(data, dict):
        raise ServiceError(
            f"{path.name} beside the adapter must hold a JSON object", "invalid_lineage"
        )
    return data


class AdapterAdmin:
    """Register, promote, roll back and remove adapters, then bring serving in line."""

    def __init__(
        self,
        registry: AdapterRegistry,
        tenants: TenantService,
        serving: Serving | None = None,
        uploads_dir: Path | None = None,
        max_upload_bytes: int = 64 << 20,
        on_change: Callable[[str | None], None] | None = None,
    ) -> None:
        """`on_change(name)` runs after every change and reload (the router's adapter cache)."""
        self.registry = registry
        self.on_change = on_change or (lambda name: None)
        self.tenants = tenants
        self.serving: Serving = serving or NoServing()
        self.uploads_dir = uploads_dir
        self.max_upload_bytes = max_upload_bytes

    # -- names and ids ---------------------------------------------------------------------------
    def tenant_ids(self, owner: str | None, shared_with: list[str]) -> tuple[str | None, list[str]]:
        """The ids of the tenants named (adapters belong to ids, never to reusable names); a
        named tenant that does not exist is an error: an adapter owned by nobody could never be
        used, nor registered again by anyone else."""

        def id_of(option: str, name: str) -> str:
            tenant = self.tenants.get(name)
            if tenant is None:
                raise ServiceError(
                    f"{option}: no tenant named {name!r}; create it with "
                    f"`loraplex tenants create {name}`",
                    "tenant_not_found",
                    "not_found",
                    param=option,
                )
            return tenant.id

        owner_id = id_of("tenant", owner) if owner else None
        shared = [s if s == EVERYONE else id_of("share", s) for s in shared_with]
        return owner_id, shared

    def describe(self, av: AdapterVersion, names: dict[str, str] | None = None) -> dict[str, Any]:
        """A version as the admin API shows it: owner and sharing by tenant name."""
        names = names if names is not None else self.tenants.names()
        out = av.to_dict()
        out["owner_id"] = av.owner
        out["owner"] = names.get(av.owner, av.owner) if av.owner else None
        out["shared_with"] = [names.get(t, t) for t in av.shared_with]
        return out

    def listing(self, tenant: str | None = None, name: str | None = None) -> list[dict[str, Any]]:
        """Every version (of one adapter, or usable by the tenant named), described; `canary`
        is the share of traffic a version takes as a running canary (else None)."""
        tenant_id = self.tenants.require(tenant).id if tenant else None
        names = self.tenants.names()
        trials = {c.ref: c.percent for c in self.registry.canaries(name, running=True)}
        out = []
        for av in self.registry.versions(tenant_id, name):
            card = self.describe(av, names)
            card["canary"] = trials.get(av.ref)
            out.append(card)
        return out

    def check_registrable(self, name: str, owner: str | None) -> None:
        """Fail now, not after the work, when `name` cannot be registered by `owner`."""
        check_adapter_name(name)
        owner_id, _ = self.tenant_ids(owner, [])
        owners = {av.owner for av in self.registry.versions(name=name)}
        if owners and owners != {owner_id}:
            raise ServiceError(
                f"adapter name {name!r} is taken; choose another name", "name_taken", "conflict"
            )

    # -- operations -----------------------------------------------------------------------------
    async def register(
        self,
        src: Path,
        name: str,
        *,
        owner: str | None = None,
        shared_with: list[str] | None = None,
        promote: bool = True,
        force: bool = False,
        exemplars: list[str] | None = None,
    ) -> Change:
        """Validate, store and version the adapter in `src`, with the lineage beside it.

        A NO-GO `eval.json` keeps the version from becoming prod unless `force` (a first version
        then leaves the name with no prod version: nothing serves until one is promoted).
        """
        wanted = sorted({s.strip() for s in shared_with or [] if s.strip()})
        owner_id, shared = await asyncio.to_thread(self.tenant_ids, owner, wanted)
        found, beside = await asyncio.to_thread(lineage, Path(src))
        notes: list[str] = []
        if promote and not force and (found.get("eval_report") or {}).get("go") is False:
            notes.append(
                "eval.json beside the adapter says NO-GO: registered without promoting "
                "(promote with force to override)"
            )
            promote = False
        av = await asyncio.to_thread(
            self.registry.register,
            Path(src),
            name,
            owner=owner_id,
            shared_with=shared,
            promote=promote,
            lineage=found,
            exemplars=exemplars or beside,
        )
        change = Change([av], notes)
        self.on_change(av.name)
        if av.is_prod:
            change.sync = await self.serving.sync(av.name)
        return change

    async def register_archive(self, archive: Path, name: str, **options: Any) -> Change:
        """`register` from an uploaded zip or tar of the adapter directory (lineage included)."""
        if self.uploads_dir is None:
            raise ServiceError("uploads are not configured here", "no_uploads", "internal")
        self.uploads_dir.mkdir(parents=True, exist_ok=True)
        src = await asyncio.to_thread(
            extract_archive, archive, self.uploads_dir, self.max_upload_bytes
        )
        try:
            return await self.register(src, name, **options)
        finally:
            shutil.rmtree(
                self.uploads_dir / src.relative_to(self.uploads_dir).parts[0], ignore_errors=True
            )

    async def promote(
        self,
        ref: str,
        force: bool = False,
        canary: int | None = None,
        criteria: dict[str, Any] | None = None,
        reason: str = "",
    ) -> Change:
        """Make `NAME@N` prod (a recorded NO-GO evaluation only with `force`, which the version
        records with the time and `reason`); with `canary`,
        send that percentage of NAME's traffic to it first, judged by `criteria` (see
        `serve.monitor.canary.CanaryCriteria`). Promoting a canary's version completes it."""
        if canary is not None:
            return await self.start_canary(ref, canary, force, criteria)
        if criteria:
            raise ServiceError(
                "canary criteria need --canary PCT (a canary to judge)", "criteria_without_canary"
            )
        running = await asyncio.to_thread(self.registry.canary, ref.partition("@")[0])
        av = await asyncio.to_thread(self.registry.promote, ref, force, reason)
        self.on_change(av.name)
        notes = []
        if running is not None:
            verb = "completed" if running.version == av.version else "cancelled"
            notes.append(f"canary {running.ref} {verb}")
        return Change([av], notes, await self.serving.sync(av.name))

    async def start_canary(
        self, ref: str, percent: int, force: bool = False, criteria: dict[str, Any] | None = None
    ) -> Change:
        """Send `percent` % of NAME's traffic to `NAME@N`; prod keeps the rest."""
        checked = asdict(CanaryCriteria.from_dict(criteria))
        canary = await asyncio.to_thread(
            self.registry.start_canary, ref, percent, force=force, criteria=checked
        )
        self.on_change(canary.name)
        av = await asyncio.to_thread(self.registry.get, canary.ref)
        notes = [
            f"canary {canary.ref} takes {percent}% of {canary.name}'s traffic (prod stays "
            f"{canary.prod_ref}); `loraplex adapters canary {canary.name}` compares them"
        ]
        return Change([av], notes, await self.serving.sync(canary.name))

    async def rollback(self, name: str) -> Change:
        """Point prod back at the version that was prod before the current one; while a
        canary runs, stop the canary instead (prod stays)."""
        running = await asyncio.to_thread(self.registry.canary, name)
        if running is not None:
            await asyncio.to_thread(
                self.registry.end_canary, name, "rolled_back", "stopped by hand", running.id
            )
            self.on_change(name)
            prod = await asyncio.to_thread(self.registry.get, name)
            notes = [f"canary {running.ref} stopped; prod stays v{prod.version}"]
            return Change([prod], notes, await self.serving.sync(name))
        before = await asyncio.to_thread(self.registry.get, name)
        av = await asyncio.to_thread(self.registry.rollback, name)
        self.on_change(av.name)
        notes = [f"rolled back from v{before.version}"]
        return Change([av], notes, await self.serving.sync(av.name))

    async def remove(self, ref: str) -> Change:
        """Remove one version (`NAME@N`) or the whole adapter (`NAME`), files included."""
        gone = await asyncio.to_thread(self.registry.remove, ref)
        self.on_change(gone[0].name)
        return Change(gone, sync=await self.serving.sync(gone[0].name))

    def collect_garbage(self, min_age_s: float | None = None) -> dict[str, list[str]]:
        """Remove what a registration or an upload killed part-way left behind: stored files
        no version refers to, staged copies, and uploaded archives with their extracted
        folders. `min_age_s` (default: the registry's own ages, 60 s for stored files and an
        hour for the rest) spares younger ones, which may belong to a registration running now;
        0 when none is."""
        ages = {} if min_age_s is None else {"min_age_s": min_age_s, "staging_min_age_s": min_age_s}
        removed = self.registry.collect_garbage(**ages)
        # What opening the registry in this process collected already counts too.
        opened = getattr(self.registry, "collected", None) or {}
        for kind, names in opened.items():
            removed[kind] = [*names, *removed.get(kind, [])]
        self.registry.collected = {}
        removed["uploads"] = []
        upload_age = 3600.0 if min_age_s is None else min_age_s
        if self.uploads_dir is not None and self.uploads_dir.is_dir():
            now = time.time()
            for leftover in self.uploads_dir.iterdir():
                if leftover.name.startswith(UPLOAD_PREFIXES) and (
                    now - leftover.stat().st_mtime >= upload_age
                ):
                    if leftover.is_dir():
                        shutil.rmtree(leftover, ignore_errors=True)
                    else:
                        leftover.unlink(missing_ok=True)
                    removed["uploads"].append(leftover.name)
        return removed

    async def sync(self, name: str | None = None) -> SyncReport:
        """Bring the engines in line with the registry (after changes made elsewhere)."""
        self.on_change(name)
        return await self.serving.sync(name)
