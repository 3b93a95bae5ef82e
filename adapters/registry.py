"""The adapter registry: the system of record for adapter names, versions, aliases and lineage.

Versions are immutable and numbered from 1; a number is never given out twice for a name, even
after the version or the whole adapter is removed. Each adapter has a `prod` alias; `NAME` alone
means `NAME@prod`, and `NAME@N` a specific version. The vLLM name of a version is `NAME-vN`.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from adapters import canary as canary_rows
from adapters.canary import Canary, check_percent, to_canary
from adapters.db import make_engine, upgrade
from adapters.errors import AdapterConflict, AdapterError, AdapterNotFound
from adapters.models import AdapterRow, CanaryRow, VersionCounterRow, VersionRow
from adapters.store import ArtifactStore
from adapters.validation import AdapterInfo, check_files, validate_adapter

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
SERVED_RE = re.compile(r"^(?P<name>.+)-v(?P<version>[0-9]+)$")
# ASCII digits only: str.isdigit() and \d accept characters such as '²' that int() refuses.
NUMBER_RE = re.compile(r"[0-9]+")
EVERYONE = "*"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


@dataclass(frozen=True)
class AdapterVersion:
    """One immutable version, as callers see it."""

    name: str
    version: int
    digest: str
    path: Path
    base_model: str
    rank: int
    alpha: float
    target_modules: list[str]
    size_bytes: int
    created_at: datetime
    owner: str | None = None
    shared_with: list[str] = field(default_factory=list)
    is_prod: bool = False
    dataset_digest: str | None = None
    training_config: dict[str, Any] | None = None
    eval_report: dict[str, Any] | None = None
    exemplars: list[str] = field(default_factory=list)
    # Set when an admin promoted the version over a NO-GO evaluation: {"at", "reason"}.
    forced: dict[str, Any] | None = None
    existing: bool = False  # set by register() when the same bytes were already registered

    @property
    def gated_out(self) -> bool:
        """Its recorded evaluation is NO-GO and no admin has overridden it: not to be served."""
        return (self.eval_report or {}).get("go") is False and self.forced is None

    @property
    def served_name(self) -> str:
        """The name vLLM serves this version under: stable and unique per version."""
        return f"{self.name}-v{self.version}"

    @property
    def ref(self) -> str:
        """`NAME@N`, the registry's own reference to this version."""
        return f"{self.name}@{self.version}"

    def usable_by(self, tenant: str) -> bool:
        """The owner, tenants it is shared with, or everyone when shared with '*'."""
        return (
            (self.owner is not None and self.owner == tenant)
            or tenant in self.shared_with
            or EVERYONE in self.shared_with
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (what the admin API returns)."""
        return {
            "name": self.name,
            "version": self.version,
            "served_name": self.served_name,
            "prod": self.is_prod,
            "owner": self.owner,
            "shared_with": self.shared_with,
            "base_model": self.base_model,
            "rank": self.rank,
            "alpha": self.alpha,
            "target_modules": self.target_modules,
            "digest": self.digest,
            "size_bytes": self.size_bytes,
            "created_at": self.created_at.isoformat(),
            "dataset_digest": self.dataset_digest,
            "training_config": self.training_config,
            "eval_report": self.eval_report,
            "exemplars": self.exemplars,
            "forced": self.forced,
        }


def parse_ref(ref: str) -> tuple[str, int | str]:
    """`name` -> (name, "prod"); `name@3` -> (name, 3); `name@prod` -> (name, "prod")."""
    name, _, selector = ref.partition("@")
    if not selector:
        return name, "prod"
    if NUMBER_RE.fullmatch(selector):
        return name, int(selector)
    return name, selector


def check_name(name: str) -> str:
    """`name` if it can name an adapter, else an AdapterError that says what is allowed."""
    if not NAME_RE.match(name) or SERVED_RE.match(name):
        raise AdapterError(
            f"adapter name {name!r} is invalid: use 1-63 lowercase letters, digits, '.', '-' "
            "or '_', starting with a letter or digit, not ending in -v<number>",
            "invalid_name",
        )
    return name


def migrate(database_url: str) -> None:
    """Bring the registry schema to the newest alembic revision."""
    upgrade(MIGRATIONS, database_url)


class AdapterRegistry:
    """Register, resolve, promote, roll back and remove adapter versions."""

    def __init__(
        self,
        database_url: str,
        store_dir: Path,
        *,
        base_model: str,
        max_rank: int,
        base_model_dir: Path | None = None,
        run_migrations: bool = True,
        engine: Engine | None = None,
    ) -> None:
        """`run_migrations=False` when the caller has migrated the database already; `engine`
        shares the caller's connection pool to the same database."""
        self.engine = engine or make_engine(database_url)  # first: makes a SQLite file's directory
        if run_migrations:
            migrate(database_url)
        self.store = ArtifactStore(store_dir)
        # What opening the registry cleaned up (`adapters gc` reports it).
        self.collected: dict[str, list[str]] = self.collect_garbage()
        self.base_model = base_model
        self.base_model_dir = base_model_dir
        self.max_rank = max_rank
        self.base_config: dict[str, Any] | None = None
        if base_model_dir is not None and (base_model_dir / "config.json").is_file():
            self.base_config = json.loads((base_model_dir / "config.json").read_text())
        self._lock = threading.Lock()

    @classmethod
    def reader(cls, database_url: str, store_dir: Path) -> AdapterRegistry:
        """A lookup-only registry (no migrations, no clean-up): for the vLLM resolver plugin."""
        self = cls.__new__(cls)
        self.engine = make_engine(database_url)
        self.store = ArtifactStore(store_dir)
        self.base_model, self.base_model_dir, self.max_rank = "", None, 0
        self.base_config = None
        self.collected = {}
        self._lock = threading.Lock()
        return self

    # -- writing --------------------------------------------------------------------------------
    def validate(self, src: Path) -> AdapterInfo:
        """Check `src` against the served base model and limits; raise AdapterError."""
        return validate_adapter(
            src,
            base_model=self.base_model,
            max_rank=self.max_rank,
            base_config=self.base_config,
            base_model_dir=self.base_model_dir,
        )

    def register(
        self,
        src: Path,
        name: str,
        *,
        owner: str | None = None,
        shared_with: list[str] | None = None,
        promote: bool = True,
        lineage: dict[str, Any] | None = None,
        exemplars: list[str] | None = None,
    ) -> AdapterVersion:
        """Validate, store and record a new version of `name`. All or nothing."""
        check_name(name)
        check_files(Path(src))
        self.collect_garbage()  # what earlier registrations killed part-way left behind
        lineage = lineage or {}
        # Validate the staged copy, not the source: what is checked is what gets stored, even if
        # the source changes meanwhile.
        staging = self.store.stage(src)
        try:
            info = self.validate(staging)
            with self._lock, Session(self.engine) as s:
                row = s.get(AdapterRow, name)
                if row is not None and row.owner != owner:
                    raise AdapterConflict(
                        f"adapter name {name!r} is taken; choose another name", "name_taken"
                    )
                if row is not None:
                    for v in row.versions:
                        if v.digest == info.digest:
                            self.store.discard(staging)
                            return _replace(self._to_version(row, v), existing=True)
                store_path = self.store.commit(staging, info.digest)
                now = datetime.now(UTC)
                if row is None:
                    row = AdapterRow(
                        name=name, owner=owner, shared_with=sorted(set(shared_with or [])),
                        prod_history=[], created_at=now,
                    )  # fmt: skip
                    s.add(row)
                elif shared_with:
                    row.shared_with = sorted(set(row.shared_with) | set(shared_with))
                number = self._next_number(s, row)
                version = VersionRow(
                    version=number,
                    digest=info.digest,
                    base_model=info.base_model,
                    rank=info.rank,
                    alpha=info.alpha,
                    target_modules=info.target_modules,
                    size_bytes=info.size_bytes,
                    created_at=now,
                    dataset_digest=lineage.get("dataset_digest"),
                    training_config=lineage.get("training_config"),
                    eval_report=lineage.get("eval_report"),
                    exemplars=list(exemplars or []),
                )
                row.versions.append(version)
                if promote:
                    row.prod_history = [*row.prod_history, number]
                try:
                    s.commit()
                except Exception as exc:
                    s.rollback()
                    if not self._digest_in_use(info.digest):
                        self.store.delete(info.digest)
                    if isinstance(exc, IntegrityError):
                        # Another process (the CLI beside a gateway, or a second gateway) took
                        # the same name or number first: the caller's retry sees its row.
                        raise AdapterConflict(
                            f"adapter {name!r} was registered by another process at the same "
                            "moment; try again", "concurrent_registration",
                        ) from None  # fmt: skip
                    raise
                assert store_path.is_dir()
                return self._to_version(row, version)
        finally:
            self.store.discard(staging)

    def collect_garbage(
        self, min_age_s: float = 60.0, staging_min_age_s: float = 3600.0
    ) -> dict[str, list[str]]:
        """Delete what registrations killed part-way left: stored files no version refers to
        (older than `min_age_s`) and staged copies (older than `staging_min_age_s`; staging and
        validating a large adapter takes a while). Younger ones may belong to a registration
        running in another process. Returns the digests and staging entries removed."""
        return {
            "staging": self.store.clean_staging(staging_min_age_s),
            "unreferenced": self.store.collect_garbage(self._all_digests(), min_age_s),
        }

    def promote(self, ref: str, force: bool = False, reason: str = "") -> AdapterVersion:
        """Point `prod` at a version (`NAME@N`); one whose recorded evaluation is NO-GO only
        with `force`, which is recorded on the version with the time and `reason`."""
        name, selector = parse_ref(ref)
        if not isinstance(selector, int):
            raise AdapterError(f"promote needs NAME@VERSION, got {ref!r}", "invalid_reference")
        with self._lock, Session(self.engine) as s:
            row = self._row(s, name)
            version = self._version(row, selector)
            _check_gates(ref, version, force, "promote", reason)
            if row.prod_history[-1:] != [selector]:
                row.prod_history = [*row.prod_history, selector]
            canary_rows.settle_on_promote(s, name, selector)
            s.commit()
            return self._to_version(row, version)

    def start_canary(
        self, ref: str, percent: int, *, force: bool = False, criteria: dict[str, Any] | None = None
    ) -> Canary:
        """Send `percent` % (1-99) of NAME's traffic to `NAME@N` while prod keeps the rest;
        a version whose recorded evaluation is NO-GO only with `force`. A canary already
        running for NAME is cancelled. `criteria`: what the judge applies (kept as given)."""
        name, selector = parse_ref(ref)
        if not isinstance(selector, int):
            raise AdapterError(f"a canary needs NAME@VERSION, got {ref!r}", "invalid_reference")
        check_percent(percent)
        with self._lock, Session(self.engine) as s:
            row = self._row(s, name)
            version = self._version(row, selector)
            _check_gates(ref, version, force, "start the canary")
            started = canary_rows.start(s, row, selector, percent, criteria or {})
            s.commit()
            return to_canary(started)

    def canary(self, name: str) -> Canary | None:
        """The running canary of `name`, or None."""
        with Session(self.engine) as s:
            row = canary_rows.running_row(s, name)
            return to_canary(row) if row is not None else None

    def canaries(self, name: str | None = None, running: bool = False) -> list[Canary]:
        """Canaries, oldest first (of one adapter; only running ones)."""
        query = select(CanaryRow).order_by(CanaryRow.id)
        if name is not None:
            query = query.where(CanaryRow.name == name)
        if running:
            query = query.where(CanaryRow.state == canary_rows.RUNNING)
        with Session(self.engine) as s:
            return [to_canary(r) for r in s.scalars(query)]

    def end_canary(
        self, name: str, state: str, reason: str, canary_id: int | None = None
    ) -> Canary | None:
        """End the running canary of `name` (`state`: completed, rolled_back or cancelled);
        with `canary_id`, only that canary (a judge that looked at an older one must not end
        its successor). None when nothing matching was running."""
        with self._lock, Session(self.engine) as s:
            row = canary_rows.running_row(s, name)
            if row is None or (canary_id is not None and row.id != canary_id):
                return None
            canary_rows.end(row, state, reason)
            s.commit()
            return to_canary(row)

    def record_eval(self, digest: str, report: dict[str, Any]) -> list[AdapterVersion]:
        """Attach an evaluation report to every version whose weights have this sha256: the
        lineage `loraplex eval` fills in after an adapter was registered."""
        with self._lock, Session(self.engine) as s:
            rows = s.scalars(select(VersionRow).where(VersionRow.digest == digest)).all()
            for v in rows:
                v.eval_report = report
            s.commit()
            return [self._to_version(v.adapter, v) for v in rows]

    def rollback(self, name: str) -> AdapterVersion:
        """Point `prod` back at the version that was prod before the current one."""
        with self._lock, Session(self.engine) as s:
            row = self._row(s, name)
            history = list(row.prod_history)
            if not history:
                raise AdapterConflict(f"{name} has no prod version", "nothing_to_roll_back")
            current = history.pop()
            existing = {v.version for v in row.versions}
            while history and (history[-1] == current or history[-1] not in existing):
                history.pop()
            if not history:
                raise AdapterConflict(
                    f"{name} has no earlier prod version to roll back to (prod is v{current})",
                    "nothing_to_roll_back",
                )
            row.prod_history = history
            running = canary_rows.running_row(s, name)
            if running is not None:  # it was compared with the prod that is going away
                canary_rows.end(running, "cancelled", f"prod was rolled back to v{history[-1]}")
            s.commit()
            return self._to_version(row, self._version(row, history[-1]))

    def remove(self, ref: str) -> list[AdapterVersion]:
        """Remove one version (`NAME@N`) or the whole adapter (`NAME`); return what went."""
        name, selector = parse_ref(ref)
        with self._lock, Session(self.engine) as s:
            row = self._row(s, name)
            if "@" not in ref:
                gone = [self._to_version(row, v) for v in row.versions]
                s.delete(row)
            else:
                if not isinstance(selector, int):
                    raise AdapterError(
                        f"remove needs NAME or NAME@VERSION, got {ref!r}", "invalid_reference"
                    )
                version = self._version(row, selector)
                if len(row.versions) == 1:
                    gone = [self._to_version(row, version)]
                    s.delete(row)
                else:
                    if row.prod_history and row.prod_history[-1] == selector:
                        raise AdapterConflict(
                            f"{ref} is the prod version: promote or roll back first, "
                            f"or remove {name}",
                            "remove_prod",
                        )
                    gone = [self._to_version(row, version)]
                    running = canary_rows.running_row(s, name)
                    if running is not None and running.version == selector:
                        canary_rows.end(running, "cancelled", f"{ref} was removed")
                    row.prod_history = [v for v in row.prod_history if v != selector]
                    row.versions.remove(version)
                    s.delete(version)
            s.commit()
            # Under the lock: a registration of the same bytes waits, so it can neither reuse
            # a directory about to be deleted nor have its new reference overlooked here.
            for av in gone:
                if not self._digest_in_use(av.digest):
                    self.store.delete(av.digest)
        return gone

    def unshare(self, tenant: str) -> list[str]:
        """Take `tenant` out of every adapter's sharing list (it is going away); the names of
        the adapters that listed it."""
        with self._lock, Session(self.engine) as s:
            changed = []
            for row in s.scalars(select(AdapterRow)):
                if tenant in (row.shared_with or []):
                    row.shared_with = [t for t in row.shared_with if t != tenant]
                    changed.append(row.name)
            s.commit()
        return changed

    # -- reading --------------------------------------------------------------------------------
    def versions(self, tenant: str | None = None, name: str | None = None) -> list[AdapterVersion]:
        """Every version (optionally of one adapter, or usable by one tenant)."""
        with Session(self.engine) as s:
            query = select(AdapterRow).order_by(AdapterRow.name)
            if name is not None:
                query = query.where(AdapterRow.name == name)
            out = [self._to_version(r, v) for r in s.scalars(query) for v in r.versions]
        return [v for v in out if tenant is None or v.usable_by(tenant)]

    def get(self, ref: str) -> AdapterVersion:
        """Resolve `NAME`, `NAME@N` or `NAME@prod`; raise AdapterNotFound."""
        name, selector = parse_ref(ref)
        with Session(self.engine) as s:
            row = self._row(s, name)
            if selector == "prod":
                if not row.prod_history:
                    have = ", ".join(f"{name}@{v.version}" for v in row.versions)
                    raise AdapterNotFound(
                        f"{name} has no prod version yet ({have}): promote one", "no_prod_version"
                    )
                return self._to_version(row, self._version(row, row.prod_history[-1]))
            if not isinstance(selector, int):
                raise AdapterNotFound(f"{name} has no alias {selector!r} (aliases: prod)")
            return self._to_version(row, self._version(row, selector))

    def get_served(self, served_name: str) -> AdapterVersion | None:
        """The version vLLM knows as `NAME-vN`, or None."""
        match = SERVED_RE.match(served_name)
        if match is None:
            return None
        try:
            return self.get(f"{match['name']}@{match['version']}")
        except AdapterNotFound:
            return None

    def resolve_for_tenant(self, model: str, tenant: str) -> AdapterVersion | None:
        """The version `model` names if `tenant` may use it, else None (never says why)."""
        try:
            av = self.get(model)
        except AdapterNotFound:
            return None
        return av if av.usable_by(tenant) else None

    def list_for_tenant(self, tenant: str) -> list[AdapterVersion]:
        """Prod versions the tenant may use (what /v1/models shows)."""
        return [v for v in self.versions(tenant) if v.is_prod]

    # -- helpers --------------------------------------------------------------------------------
    def _row(self, s: Session, name: str) -> AdapterRow:
        row = s.get(AdapterRow, name)
        if row is None:
            raise AdapterNotFound(f"no adapter named {name!r} (`loraplex adapters list`)")
        return row

    def _version(self, row: AdapterRow, number: int) -> VersionRow:
        for v in row.versions:
            if v.version == number:
                return v
        have = ", ".join(str(v.version) for v in row.versions)
        raise AdapterNotFound(f"{row.name} has no version {number} (versions: {have})")

    def _next_number(self, s: Session, row: AdapterRow) -> int:
        """The next version number of `row`, recorded so it is never handed out again."""
        counter = s.get(VersionCounterRow, row.name)
        if counter is None:
            counter = VersionCounterRow(name=row.name, last_version=0)
            s.add(counter)
        number = max([counter.last_version, *(v.version for v in row.versions)]) + 1
        counter.last_version = number
        return number

    def _all_digests(self) -> set[str]:
        with Session(self.engine) as s:
            return set(s.scalars(select(VersionRow.digest)))

    def _digest_in_use(self, digest: str) -> bool:
        with Session(self.engine) as s:
            return (
                s.scalar(select(VersionRow.id).where(VersionRow.digest == digest).limit(1))
                is not None
            )

    def _to_version(self, row: AdapterRow, v: VersionRow) -> AdapterVersion:
        return AdapterVersion(
            name=row.name,
            version=v.version,
            digest=v.digest,
            path=self.store.path_for(v.digest),
            base_model=v.base_model,
            rank=v.rank,
            alpha=v.alpha,
            target_modules=list(v.target_modules or []),
            size_bytes=v.size_bytes,
            created_at=v.created_at,
            owner=row.owner,
            shared_with=list(row.shared_with or []),
            is_prod=bool(row.prod_history) and row.prod_history[-1] == v.version,
            dataset_digest=v.dataset_digest,
            training_config=v.training_config,
            eval_report=v.eval_report,
            exemplars=list(v.exemplars or []),
            forced=v.forced,
        )


def _check_gates(ref: str, version: VersionRow, force: bool, what: str, reason: str = "") -> None:
    """Refuse a version whose recorded evaluation is NO-GO, unless `force`; an override is
    recorded on the version with the time and `reason`."""
    report = version.eval_report or {}
    if report.get("go") is not False:
        return
    if not force:
        failed = [k for k, ok in (report.get("checks") or {}).items() if not ok]
        why = ", ".join(failed) or "see its eval report"
        raise AdapterConflict(
            f"{ref} failed its evaluation gates (NO-GO: {why}): train a better version, or "
            f"{what} with force to override",
            "gates_failed",
        )
    version.forced = {
        "at": datetime.now(UTC).isoformat(),
        "reason": reason or f"{what} with force over a NO-GO evaluation",
    }


def _replace(av: AdapterVersion, **changes: Any) -> AdapterVersion:
    from dataclasses import replace

    return replace(av, **changes)
