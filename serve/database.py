"""The one database loraplex keeps (SQLite by default, PostgreSQL by URL): engine and schema.

The registry (`adapters`) and the gateway's own tables (tenants, keys) each keep an alembic
history with its own version table; `migrate` brings both up to date at start, under a lock, so
that two processes starting together (two gateways, or the CLI beside a gateway) never race.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from adapters.db import make_engine, upgrade
from adapters.registry import migrate as migrate_registry
from serve.errors import ServiceError

T = TypeVar("T")

__all__ = ["make_engine", "migrate", "retrying", "database_unavailable"]

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Any fixed number: PostgreSQL's advisory locks are keyed by a 64-bit integer.
LOCK_KEY = 0x6C6F7261706C6578


def migrate(database_url: str, engine: Engine | None = None) -> None:
    """Bring every loraplex table to the newest schema (idempotent, safe to run concurrently)."""
    engine = engine or make_engine(database_url)  # also makes a SQLite file's directory
    with _migration_lock(database_url, engine):
        migrate_registry(database_url)
        upgrade(MIGRATIONS, database_url)


def retrying(fn: Callable[..., T], *args: Any, attempts: int = 3, delay_s: float = 0.2) -> T:
    """Run an idempotent database read, again after a short pause when the database is busy
    or briefly unreachable; after the last attempt, a 503 the caller can retry."""
    for attempt in range(attempts):
        try:
            return fn(*args)
        except OperationalError as exc:
            if attempt == attempts - 1:
                raise database_unavailable(exc) from None
            time.sleep(delay_s * (attempt + 1))
    raise AssertionError("unreachable")


def database_unavailable(exc: BaseException) -> ServiceError:
    """The error for a database that is locked, down or unreachable: retry shortly."""
    first = str(getattr(exc, "orig", exc)).splitlines()[0][:200]
    return ServiceError(
        f"the database is not available right now ({first}); retry shortly",
        "database_unavailable",
        "unavailable",
        retry_after=2,
    )


@contextmanager
def _migration_lock(database_url: str, engine: Engine) -> Iterator[None]:
    if database_url.startswith("postgresql"):
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
        return
    if database_url.startswith("sqlite:///"):
        lock_path = Path(database_url.removeprefix("sqlite:///") + ".migrate.lock")
        with lock_path.open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return
    yield  # other databases: alembic's own transaction is all there is
