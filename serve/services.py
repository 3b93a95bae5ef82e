"""The one place that builds loraplex's services from settings, for the gateway and the CLI alike.

Each service is built on first use, so a CLI command pays only for what it touches (listing
tenants opens no Chroma and loads no embedding model). The database is migrated once, when the
first service that needs it is built.
"""

from __future__ import annotations

from functools import cached_property

from sqlalchemy import Engine

from adapters.registry import AdapterRegistry
from retrieval.embeddings import SentenceTransformerEmbedder
from retrieval.service import RetrievalService
from serve import database
from serve.admin.adapters import AdapterAdmin, NoServing, Serving
from serve.admin.tenants import TenantAdmin
from serve.feedback.service import FeedbackService
from serve.monitor.canary import CanaryService, Rollout
from serve.monitor.service import Monitor
from serve.quotas import QuotaLimiter
from serve.routing import Router
from serve.routing.caches import AdapterCatalog, CachedEmbedder
from serve.routing.calibration import Calibration
from serve.routing.versions import RouterVersions
from serve.settings import Settings
from serve.tenants import TenantService


class Services:
    """Registry, retrieval, tenants, router and adapter admin for one process."""

    def __init__(self, settings: Settings, serving: Serving | None = None) -> None:
        """`serving` brings vLLM in line after adapter changes (see `serve.admin.serving`)."""
        self.settings = settings
        self.serving: Serving = serving or NoServing()

    @cached_property
    def db(self) -> Engine:
        """The database engine, with every table migrated to the newest schema."""
        url = self.settings.resolved_database_url
        engine = database.make_engine(url, self.settings.database_busy_timeout_s)
        database.migrate(url, engine)
        return engine

    @cached_property
    def tenants(self) -> TenantService:
        """Tenants, keys and policies."""
        return TenantService(self.db)

    @cached_property
    def registry(self) -> AdapterRegistry:
        """The adapter registry and its artifact store."""
        s = self.settings
        return AdapterRegistry(
            s.resolved_database_url,
            s.adapter_store_dir,
            base_model=s.base_model,
            max_rank=s.vllm_max_lora_rank,
            base_model_dir=s.resolved_model_dir,
            run_migrations=False,
            engine=self.db,
        )

    @cached_property
    def embedder(self) -> CachedEmbedder:
        """The one embedding model of this process, shared by retrieval and the router: a query
        the router embedded is not embedded again by the search that follows."""
        # The ONNX export is kept under data_dir: a restart loads it instead of exporting again
        # (about 2 s of CPU on the reference machine).
        inner = SentenceTransformerEmbedder(
            self.settings.embedding_model, cache_dir=self.settings.data_dir / "cache" / "onnx"
        )
        return CachedEmbedder(inner)

    @cached_property
    def retrieval(self) -> RetrievalService:
        """Per-tenant documents: embedded Chroma under data_dir unless a server URL is set."""
        s = self.settings
        return RetrievalService(
            bm25_dir=s.data_dir / "bm25",
            chroma_path=None if s.chroma_url else s.chroma_dir,
            chroma_url=s.chroma_url,
            chroma_token=s.chroma_token.get_secret_value() if s.chroma_token else None,
            embedder=self.embedder,
            max_file_bytes=s.max_upload_bytes,
        )

    @cached_property
    def adapter_catalog(self) -> AdapterCatalog:
        """Each tenant's prod adapters, cached for the router until the registry changes."""
        return AdapterCatalog(self.registry)

    @cached_property
    def router_versions(self) -> RouterVersions:
        """Calibrated routers per tenant."""
        return RouterVersions(self.db)

    @cached_property
    def router(self) -> Router:
        """The per-request path chooser."""
        return Router(
            self.settings.base_model,
            self.adapter_catalog,
            self.retrieval,
            embedder=self.embedder,
            versions=self.router_versions,
        )

    @cached_property
    def calibration(self) -> Calibration:
        """Fitting, storing and rolling back per-tenant routers."""
        return Calibration(self.router, self.router_versions)

    @cached_property
    def adapters(self) -> AdapterAdmin:
        """Adapter administration (the same rules for HTTP and the CLI)."""
        return AdapterAdmin(
            self.registry,
            self.tenants,
            self.serving,
            uploads_dir=self.settings.data_dir / "uploads",
            max_upload_bytes=self.settings.max_upload_bytes,
            on_change=self._adapters_changed,
        )

    def _adapters_changed(self, name: str | None) -> None:
        self.adapter_catalog.invalidate(name)
        if "rollout" in self.__dict__:  # built: the gateway splits traffic for canaries
            self.rollout.invalidate(name)

    @cached_property
    def tenant_admin(self) -> TenantAdmin:
        """Tenant administration that spans tenants, their documents, adapters and feedback."""
        return TenantAdmin(self.tenants, self.retrieval, self.adapters, self.feedback)

    @cached_property
    def feedback(self) -> FeedbackService:
        """Request records, captures and feedback."""
        return FeedbackService(self.db, max_correction_chars=self.settings.feedback_max_chars)

    @cached_property
    def monitor(self) -> Monitor:
        """Drift, knowledge gaps, route mix, feedback and grounding reports."""
        s = self.settings
        return Monitor(
            self.db,
            self.tenants,
            self.registry,
            embedder=self.embedder,
            window_h=s.monitor_window_h,
            bucket_s=s.monitor_bucket_s,
        )

    @cached_property
    def canaries(self) -> CanaryService:
        """Canary comparisons and automatic rollback."""
        return CanaryService(self.registry, self.db)

    @cached_property
    def rollout(self) -> Rollout:
        """The per-request split between prod versions and running canaries."""
        return Rollout(self.registry)

    @cached_property
    def quotas(self) -> QuotaLimiter:
        """Per-tenant quotas, counted in the database every gateway replica shares."""
        return QuotaLimiter(self.db, stream_lease_s=max(600.0, 2 * self.settings.request_timeout_s))
