"""The gateway: a FastAPI app whose clients are created in the lifespan, never at import."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from adapters.hotswap import HotSwapper
from serve import bootstrap
from serve.admin.serving import ReplicaSync
from serve.chat.grounded import RagDefaults, token_counter
from serve.chat.service import ChatService
from serve.engine.client import EngineClient
from serve.feedback.recorder import Recorder
from serve.gateway.errors import documented_errors, install_error_handlers
from serve.gateway.limits import BodyLimitMiddleware
from serve.gateway.metrics import Metrics
from serve.gateway.requestlog import RequestLog
from serve.gateway.routes import adapters, chat, documents, feedback, monitor, ops, tenants
from serve.gateway.state import AppState
from serve.monitor.loop import FEEDBACK_LOOKUP_WAIT_S, ProductionLoop
from serve.monitor.stats import Accumulator
from serve.services import Services
from serve.settings import Settings


def build_state(settings: Settings, urls: list[str], services: Services | None = None) -> AppState:
    """Every long-lived client and service of one gateway process; `services` when the caller
    built them already (`loraplex up` does, to migrate and warm them while vLLM starts)."""
    key = settings.vllm_api_key.get_secret_value() if settings.vllm_api_key else None
    engine = EngineClient(
        urls, timeout_s=settings.request_timeout_s, num_retries=settings.num_retries, api_key=key
    )
    hotswap = HotSwapper(urls, api_key=key)
    services = services or Services(settings)
    services.serving = ReplicaSync(services.registry, hotswap)
    services.embedder.threads = settings.embedding_threads
    chat_service = ChatService(
        services.router,
        engine,
        services.retrieval,
        hotswap,
        settings.vllm_max_model_len,
        rollout=services.rollout,
        # Loaded once, offline, from the base model's directory: sources are counted in the
        # tokens vLLM will count.
        count_tokens=token_counter(settings.resolved_model_dir),
        rag_defaults=RagDefaults(
            settings.rag_template, settings.rag_max_sources, settings.rag_answer_tokens
        ),
    )
    recorder = Recorder(
        services.db,
        accumulator=Accumulator(settings.monitor_bucket_s),
        embedder=services.embedder,
        exemplar_vectors=services.router.exemplar_vectors,
        embed_missing=settings.monitor_embed_missing,
    )
    # Feedback sent right after its answer finds the record even before the next flush; an
    # answer from another gateway is in the database within that one's write interval.
    services.feedback.before_lookup = recorder.write
    services.feedback.lookup_wait_s = FEEDBACK_LOOKUP_WAIT_S
    services.monitor.exemplar_vectors = services.router.exemplar_vectors
    metrics = Metrics()
    return AppState(
        settings=settings,
        services=services,
        engine=engine,
        hotswap=hotswap,
        chat=chat_service,
        metrics=metrics,
        request_log=RequestLog(
            settings.logs_dir / "requests.log", settings.log_max_bytes, settings.log_backups
        ),
        admin_key=bootstrap.AdminKey(settings),
        recorder=recorder,
        loop=ProductionLoop(
            services, recorder, services.rollout, metrics, settings.monitor_interval_s
        ),
    )


def create_app(
    settings: Settings, vllm_urls: list[str] | None = None, services: Services | None = None
) -> FastAPI:
    """Build the gateway. `vllm_urls`: the replicas to use (default: settings.vllm_urls);
    `services`: built already by the caller (default: built in the lifespan)."""
    urls = list(vllm_urls or settings.vllm_urls)
    if not urls:
        raise ValueError("no vLLM URL: start one (`loraplex up`) or set LORAPLEX_VLLM_URLS")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = build_state(settings, urls, services)
        state.request_log.open()
        app.state.loraplex = state
        operator = (
            state.metrics.serve(settings.metrics_address) if settings.metrics_address else None
        )
        if state.loop is not None:
            state.loop.start()
        try:
            yield
        finally:
            if state.loop is not None:
                await state.loop.stop()  # writes what is still queued
            if operator is not None:
                operator.shutdown()
            state.request_log.close()
            await state.engine.close()
            await state.hotswap.aclose()
            state.services.db.dispose()

    app = FastAPI(
        title="loraplex",
        summary="OpenAI-compatible gateway for a base model, its LoRA adapters and retrieval.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.add_middleware(
        BodyLimitMiddleware,
        max_body=settings.max_body_bytes,
        max_upload=settings.max_upload_bytes,
        body_timeout_s=settings.body_timeout_s,
    )
    install_error_handlers(app)
    errors = documented_errors()
    for module in (ops, chat, tenants, adapters, documents, feedback, monitor):
        app.include_router(module.router, responses=errors)
    app.openapi = lambda: openapi_document(app)  # type: ignore[method-assign]
    return app


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, less the 422 it adds to every route with parameters: invalid
    requests are 400s here, with the OpenAI-style body documented for every error."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        doc = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
        for path in doc.get("paths", {}).values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        schemas = doc.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        app.openapi_schema = doc
    return app.openapi_schema


def server_config(app: FastAPI, settings: Settings, log_level: str = "info") -> Any:
    """The uvicorn configuration the gateway runs under (`loraplex up` and the tests alike).

    h11 rather than httptools: httptools buffers request headers of any size (a 10 MB header
    value was accepted), h11 stops at `max_header_bytes`.
    """
    import uvicorn

    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        access_log=False,
        http="h11",
        h11_max_incomplete_event_size=settings.max_header_bytes,
    )
