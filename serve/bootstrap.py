"""First-run state kept under data_dir: the admin key and the demo tenant's key (mode 600)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from serve.errors import ServiceError
from serve.settings import Settings
from serve.tenants import TenantService


def write_secret(path: Path, value: str) -> None:
    """Write `value` to `path`, readable by its owner only, replacing it atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    os.replace(tmp, path)


def admin_key(settings: Settings) -> str:
    """LORAPLEX_ADMIN_KEY if set, else the key kept in data_dir/admin_key (made on first run)."""
    if settings.admin_key is not None:
        return settings.admin_key.get_secret_value()
    path = settings.data_dir / "admin_key"
    if path.is_file():
        return path.read_text().strip()
    key = "lpx-admin-" + secrets.token_urlsafe(32)
    write_secret(path, key)
    return key


def rotate_admin_key(settings: Settings) -> str:
    """A new admin key in data_dir/admin_key; running gateways take it up on their next admin
    request. A key given by LORAPLEX_ADMIN_KEY is the operator's to change, not ours."""
    if settings.admin_key is not None:
        raise ServiceError(
            "the admin key comes from LORAPLEX_ADMIN_KEY (or the config file): change it there "
            "and restart the gateways",
            "admin_key_configured",
            "conflict",
        )
    key = "lpx-admin-" + secrets.token_urlsafe(32)
    write_secret(settings.data_dir / "admin_key", key)
    return key


class AdminKey:
    """The admin key a gateway checks: the configured one, or data_dir/admin_key re-read when
    the file changes (a rotation takes effect without a restart; one stat per admin request)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.path = settings.data_dir / "admin_key"
        self._key = admin_key(settings)
        self._stamp = self._mtime()

    def _mtime(self) -> float:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return 0.0

    def current(self) -> str:
        """The key to compare with."""
        if self.settings.admin_key is None and (stamp := self._mtime()) != self._stamp:
            self._key, self._stamp = admin_key(self.settings), stamp
        return self._key


def demo_tenant(settings: Settings, tenants: TenantService) -> tuple[str, str | None] | None:
    """Create the demo tenant on first run. Returns (name, key or None if it already existed)."""
    name = settings.demo_tenant
    if not name:
        return None
    path = settings.data_dir / "demo_key"
    if tenants.get(name) is not None:
        return name, path.read_text().strip() if path.is_file() else None
    _, key = tenants.create(name)
    write_secret(path, key)
    return name, key
