"""What the gateway holds while it runs; built in the app's lifespan, never at import."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from serve.settings import Settings
from serve.tenants import TenantService


@dataclass
class AppState:
    """Long-lived clients and services, handed to handlers through `serve.deps`."""

    settings: Settings
    tenants: TenantService
    admin_key: str
    vllm_urls: list[str]
    engine: Any = None  # serve.engine.EngineClient
    registry: Any = None  # adapters.registry.AdapterRegistry
    hotswap: Any = None  # adapters.hotswap.HotSwapper
    retrieval: Any = None  # retrieval service
    router: Any = None  # serve.router.Router
    extras: dict[str, Any] = field(default_factory=dict)
