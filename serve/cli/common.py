"""What every command shares: settings, services, options, and one way to report an error."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from serve.admin.adapters import SyncReport
from serve.admin.serving import GatewayNotifier
from serve.errors import kind_of
from serve.services import Services
from serve.settings import ConfigError, Settings

err = Console(stderr=True, soft_wrap=True)  # long paths and URLs stay on one line
F = TypeVar("F", bound=Callable[..., Any])

# What each kind of error means as an exit status: 2 the caller must change something, 3 try
# again later, 1 our fault.
KIND_EXIT = {
    "invalid": 2,
    "unauthorized": 2,
    "forbidden": 2,
    "not_found": 2,
    "conflict": 2,
    "too_large": 2,
    "unsupported": 2,
    "rate_limited": 3,
    "unavailable": 3,
    "timeout": 3,
    "internal": 1,
}

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="loraplex settings YAML (keys as in `Settings`)."),
]
GatewayOpt = Annotated[
    str | None,
    typer.Option(
        "--gateway",
        help="Running gateway to tell about the change (default: the configured host and "
        "port, http://127.0.0.1:8000, when it answers).",
    ),
]
AdminKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--admin-key",
        help="Admin key for --gateway (default: LORAPLEX_ADMIN_KEY or data_dir/admin_key).",
    ),
]


def fail(message: str, code: int = 2) -> NoReturn:
    """Print `error: message` on stderr and exit with `code`."""
    err.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(code)


def handle_errors(fn: F) -> F:
    """Turn a service or library error inside a command into its message and exit status."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            kind = kind_of(exc)
            if kind is None:
                raise
            fail(str(getattr(exc, "message", exc)), KIND_EXIT[kind])

    return wrapper  # type: ignore[return-value]


class Typer(typer.Typer):
    """A typer app whose commands report errors the one way above (no tracebacks for users)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("no_args_is_help", True)
        kwargs.setdefault("add_completion", False)
        kwargs.setdefault("pretty_exceptions_enable", False)
        super().__init__(**kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Callable[[F], F]:
        register = super().command(*args, **kwargs)

        def decorator(fn: F) -> F:
            register(handle_errors(fn))
            return fn

        return decorator


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Settings for a command; config mistakes exit with a message, not a traceback."""
    try:
        return Settings.load(config, **{k: v for k, v in overrides.items() if v is not None})
    except (ConfigError, ValueError) as exc:
        fail(str(exc))


def services(
    settings: Settings, gateway: str | None = None, admin_key: str | None = None
) -> Services:
    """The services `settings` describe; adapter changes are told to the running gateway."""
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    url = gateway or f"http://{host}:{settings.port}"
    return Services(settings, GatewayNotifier(url, admin_key or stored_admin_key(settings)))


def stored_admin_key(settings: Settings) -> str | None:
    """The admin key from the settings or data_dir; read, never created (a missing key means no
    gateway was ever started with this data_dir)."""
    if settings.admin_key is not None:
        return settings.admin_key.get_secret_value()
    path = settings.data_dir / "admin_key"
    return path.read_text().strip() if path.is_file() else None


def print_sync(report: SyncReport) -> None:
    """What the gateway did to bring vLLM in line, or why nothing was done (on stderr: stdout
    keeps what scripts read, such as an adapter's path)."""
    if "note" in report:
        err.print(escape(report["note"] + ": a gateway loads what vLLM lacks on the first request"))
    if "warning" in report:
        err.print(f"[yellow]{escape(report['warning'])}[/yellow]")
    where = f"gateway {report['gateway']}: " if "gateway" in report else ""
    for ref, results in report.get("load", {}).items():
        ok = sum(r["ok"] for r in results)
        err.print(escape(f"{where}{ref} loaded on {ok}/{len(results)} vLLM replica(s)"))
        for r in results:
            if not r["ok"]:
                err.print(f"[yellow]  {escape(r['url'])}: {escape(r['detail'])}[/yellow]")
    for served in report.get("unload", {}):
        err.print(escape(f"{where}unloaded {served}"))


def config_help(cls: type, name: str, text: str = "") -> str:
    """Help for an option that sets field `name` of a config dataclass: the field's own help
    (or `text`) and the dataclass's default, so the default is declared once, in the config."""
    field = {f.name: f for f in dataclasses.fields(cls)}[name]
    if field.default is not dataclasses.MISSING:
        default = field.default
    elif field.default_factory is not dataclasses.MISSING:
        default = field.default_factory()
    else:
        default = None
    described = field.metadata.get("help") or text
    return f"{described} [default: {default}]" if default is not None else described


def config_values(cls: type, options: dict[str, Any], **aliases: str) -> dict[str, Any]:
    """The options the user set (typer gives None for the others) that are fields of the
    config dataclass `cls`, by field name; `aliases` maps an option's name to its field."""
    names = {f.name for f in dataclasses.fields(cls)}
    out = {}
    for option, value in options.items():
        field = aliases.get(option, option)
        if field in names and value is not None:
            out[field] = value
    return out
