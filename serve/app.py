"""The gateway: a FastAPI app whose clients are created in the lifespan, never at import."""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve import bootstrap
from serve.db import make_engine
from serve.engine import EngineClient
from serve.errors import ApiError, to_api_error
from serve.limits import BodyLimitMiddleware
from serve.metrics import Metrics
from serve.requestlog import RequestLog
from serve.router import Router
from serve.settings import Settings
from serve.state import AppState
from serve.tenants import TenantService

log = logging.getLogger("loraplex.gateway")

# Optional capabilities: each router module offers `router` and, when it needs a service,
# `build(settings, vllm_urls)`. AppState field per module.
CAPABILITIES = {
    "serve.routers.adapters": "registry",
    "serve.routers.documents": "retrieval",
}


def _optional(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            return None
        raise


def create_app(settings: Settings, vllm_urls: list[str] | None = None) -> FastAPI:
    """Build the gateway. `vllm_urls`: the replicas to use (default: settings.vllm_urls)."""
    urls = list(vllm_urls or settings.vllm_urls)
    if not urls:
        raise ValueError("no vLLM URL: start one (`loraplex up`) or set LORAPLEX_VLLM_URLS")
    modules = {name: _optional(name) for name in CAPABILITIES}
    metrics = Metrics()
    requests_log = RequestLog(settings.logs_dir / "requests.log")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = make_engine(settings.resolved_database_url)
        state = AppState(
            settings=settings,
            tenants=TenantService(db),
            admin_key=bootstrap.admin_key(settings),
            vllm_urls=urls,
            engine=EngineClient(
                urls, timeout_s=settings.request_timeout_s, num_retries=settings.num_retries
            ),
        )
        state.extras["metrics"] = metrics
        requests_log.open()
        state.extras["request_log"] = requests_log
        for name, field in CAPABILITIES.items():
            module = modules[name]
            if module is not None and hasattr(module, "build"):
                built = module.build(settings, urls)
                if field == "registry":
                    state.registry, state.hotswap = built
                else:
                    setattr(state, field, built)
        state.router = Router(settings.base_model, state.registry, state.retrieval)
        app.state.loraplex = state
        try:
            yield
        finally:
            requests_log.close()
            await state.engine.close()
            close = getattr(state.hotswap, "aclose", None)
            if close is not None:
                await close()
            db.dispose()

    app = FastAPI(
        title="loraplex",
        summary="OpenAI-compatible gateway for a base model, its LoRA adapters and retrieval.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    app.add_middleware(
        BodyLimitMiddleware,
        max_body=settings.max_body_bytes,
        max_upload=settings.max_upload_bytes,
    )
    _install_error_handlers(app)

    from serve.routers import chat, ops, tenants

    app.include_router(ops.router)
    app.include_router(chat.router)
    app.include_router(tenants.router)
    for module in modules.values():
        if module is not None:
            app.include_router(module.router)
    return app


def library_errors() -> list[type[Exception]]:
    """The libraries' error base classes (they carry status_code, code and message)."""
    found: list[type[Exception]] = []
    for module, name in (
        ("adapters.errors", "AdapterError"),
        ("retrieval.errors", "RetrievalError"),
        ("training.errors", "TrainingError"),
    ):
        mod = _optional(module)
        if mod is not None and hasattr(mod, name):
            found.append(getattr(mod, name))
    return found


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> Any:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Any:
        first = exc.errors()[0] if exc.errors() else {}
        loc = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path"))
        return ApiError(
            400, f"{loc or 'request'}: {first.get('msg', 'invalid request')}", "invalid_request",
            param=loc or None,
        ).response()  # fmt: skip

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Any:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return ApiError(exc.status_code, str(exc.detail), code).response()

    from serve.tenants import TenantError

    handled: list[type[Exception]] = [TenantError, *library_errors()]
    for cls in handled:

        @app.exception_handler(cls)
        async def _library(_: Request, exc: Exception) -> Any:
            mapped = to_api_error(exc)
            assert mapped is not None
            return mapped.response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Any:
        mapped = to_api_error(exc)
        if mapped is not None:
            return mapped.response()
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return ApiError(
            500, "Internal error in the gateway; the request log has the details.", "internal_error"
        ).response()
