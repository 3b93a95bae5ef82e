"""`loraplex up`: the embedded stack in the foreground, and its orderly shutdown."""

from __future__ import annotations

import secrets
import signal
import sys
from types import FrameType
from typing import Annotated

import typer
from pydantic import SecretStr
from rich.console import Console

from serve import bootstrap
from serve.cli.common import ConfigOpt, fail, load_settings
from serve.engine.basemodel import ModelError, check_model_dir, is_prepared, pull
from serve.engine.launcher import LaunchError, Supervisor, VllmServer
from serve.services import Services
from serve.settings import Settings

console = Console(stderr=True)


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

    Example: loraplex up --port 8080
    """
    settings = load_settings(config, host=host, port=port, vllm_urls=vllm_url or None)
    try:
        run_stack(settings)
    except RuntimeError as exc:
        fail(str(exc), 1)


def _sigterm(signum: int, _frame: FrameType | None) -> None:
    # Turn SIGTERM into the same unwinding as Ctrl-C, so `finally` stops vLLM.
    raise KeyboardInterrupt


def prepare_model(settings: Settings) -> None:
    """Pull the default base model if missing; check a user-supplied model directory."""
    model_dir = settings.resolved_model_dir
    if settings.vllm_urls and not (model_dir / "config.json").is_file():
        # The running replicas hold the model; locally it only lets registration check tensor
        # shapes, so its absence is worth a word, not a download.
        console.print(
            f"no local copy of the base model at {model_dir}: adapter tensor shapes "
            "are not checked at registration (`loraplex models pull` adds it)"
        )
        return
    if settings.model_dir is None and not is_prepared(model_dir):
        pull(model_dir, log=console.print)
    check_model_dir(model_dir)


def warm_up() -> None:
    """Import litellm (about 3 s, most of what the gateway's own start costs) while vLLM starts.

    The embedding model is not loaded here: on 2 cores shared with vLLM's start, loading it too
    (about 8 s of CPU) made vLLM's start 4-8 s slower (bench/startup.py); it loads on first use.
    """
    from serve.engine.client import _import_litellm

    _import_litellm()


def run_stack(settings: Settings) -> None:
    """Prepare, start, serve; on exit or Ctrl-C stop everything this process started.

    vLLM starts first, as soon as the base model is there: it takes longest. The gateway gets
    ready meanwhile (its imports, the database and demo tenant, litellm) and starts serving as
    soon as vLLM answers.
    """
    signal.signal(signal.SIGTERM, _sigterm)
    server: VllmServer | None = None
    supervisor: Supervisor | None = None
    try:
        try:
            prepare_model(settings)
        except ModelError as exc:
            raise RuntimeError(str(exc)) from None
        urls = list(settings.vllm_urls)
        if not urls and settings.vllm_api_key is None:
            # The vLLM started here answers only the gateway: a key nobody else is told.
            vllm_key = secrets.token_urlsafe(32)
            settings = settings.model_copy(update={"vllm_api_key": SecretStr(vllm_key)})
            # For operators and benchmarks that call this vLLM directly (mode 600, like the
            # admin key); replaced on every start.
            bootstrap.write_secret(settings.data_dir / "vllm_key", vllm_key)
        if not urls:
            log_path = settings.logs_dir / "vllm.log"
            server = VllmServer(settings, settings.resolved_model_dir, log_path)
            console.print(
                f"starting vLLM ({server.device}) on {server.url}; log: {log_path} "
                "(about 30-60 s on a CPU)"
            )
            try:
                server.start()
            except LaunchError as exc:
                raise RuntimeError(str(exc)) from None
            urls = [server.url]
        services = Services(settings)
        import uvicorn

        from serve.gateway.app import create_app, server_config

        bootstrap.admin_key(settings)
        demo = bootstrap.demo_tenant(settings, services.tenants)
        config = server_config(create_app(settings, urls, services=services), settings)
        # In this thread, not another: two threads importing overlapping module graphs at
        # once can see each other's half-initialised modules (an ImportError at start).
        warm_up()
        if server is not None:
            try:
                server.wait_ready(progress=True)
            except LaunchError as exc:
                raise RuntimeError(str(exc)) from None
            console.print("\nvLLM ready")
            supervisor = Supervisor(server, console.print)
            supervisor.start()
        url = f"http://{settings.host}:{settings.port}"
        console.print(f"[bold green]loraplex gateway:[/bold green] {url}/v1")
        console.print(f"admin key: {settings.data_dir / 'admin_key'} (or LORAPLEX_ADMIN_KEY)")
        if demo is not None:
            name, demo_key = demo
            shown = demo_key or f"(see {settings.data_dir / 'demo_key'})"
            console.print(f"demo tenant [bold]{name}[/bold] key: {shown}")
        console.print(f"base model: {settings.base_model}")
        uvicorn.Server(config).run()
    except KeyboardInterrupt:
        console.print("stopping")
    finally:
        if supervisor is not None:
            supervisor.stop()
        elif server is not None:
            server.stop()
        if server is not None:
            console.print("vLLM stopped")
    sys.stdout.flush()
