"""`loraplex up`: the embedded stack in the foreground, and its orderly shutdown."""

from __future__ import annotations

import signal
import sys
from types import FrameType

from rich.console import Console

from serve import bootstrap
from serve.db import make_engine
from serve.launcher import LaunchError, VllmServer
from serve.models import ModelError, check_model_dir, is_prepared, pull
from serve.settings import Settings
from serve.tenants import TenantService

console = Console(stderr=True)


def _sigterm(signum: int, _frame: FrameType | None) -> None:
    # Turn SIGTERM into the same unwinding as Ctrl-C, so `finally` stops vLLM.
    raise KeyboardInterrupt


def prepare_model(settings: Settings) -> None:
    """Pull the default base model if missing; check a user-supplied model directory."""
    model_dir = settings.resolved_model_dir
    if settings.vllm_urls and not (model_dir / "config.json").is_file():
        # The running replicas hold the model; locally it only lets registration check tensor
        # shapes, so its absence is worth a word, not a download.
        console.print(f"no local copy of the base model at {model_dir}: adapter tensor shapes "
                      "are not checked at registration (`loraplex models pull` adds it)")  # fmt: skip
        return
    if settings.model_dir is None and not is_prepared(model_dir):
        pull(model_dir, log=console.print)
    check_model_dir(model_dir)


def run_stack(settings: Settings) -> None:
    """Prepare, start, serve; on exit or Ctrl-C stop everything this process started."""
    import uvicorn

    from serve.app import create_app

    signal.signal(signal.SIGTERM, _sigterm)
    server: VllmServer | None = None
    try:
        try:
            prepare_model(settings)
        except ModelError as exc:
            raise RuntimeError(str(exc)) from None
        urls = list(settings.vllm_urls)
        if not urls:
            log_path = settings.logs_dir / "vllm.log"
            server = VllmServer(settings, settings.resolved_model_dir, log_path)
            console.print(
                f"starting vLLM ({server.device}) on {server.url}; log: {log_path} "
                "(about 30-60 s on a CPU)"
            )
            try:
                server.start()
                server.wait_ready(progress=True)
            except LaunchError as exc:
                raise RuntimeError(str(exc)) from None
            console.print("\nvLLM ready")
            urls = [server.url]
        tenants = TenantService(make_engine(settings.resolved_database_url))
        bootstrap.admin_key(settings)
        demo = bootstrap.demo_tenant(settings, tenants)
        url = f"http://{settings.host}:{settings.port}"
        console.print(f"[bold green]loraplex gateway:[/bold green] {url}/v1")
        console.print(f"admin key: {settings.data_dir / 'admin_key'} (or LORAPLEX_ADMIN_KEY)")
        if demo is not None:
            name, key = demo
            shown = key or f"(see {settings.data_dir / 'demo_key'})"
            console.print(f"demo tenant [bold]{name}[/bold] key: {shown}")
        console.print(f"base model: {settings.base_model}")
        uvicorn.run(
            create_app(settings, urls),
            host=settings.host,
            port=settings.port,
            log_level="info",
            access_log=False,
        )
    except KeyboardInterrupt:
        console.print("stopping")
    finally:
        if server is not None:
            server.stop()
            console.print("vLLM stopped")
    sys.stdout.flush()
