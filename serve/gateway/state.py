"""What the gateway holds while it runs; built in the app's lifespan, never at import."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from adapters.hotswap import HotSwapper
from serve.bootstrap import AdminKey
from serve.chat.service import ChatService
from serve.engine.client import EngineClient
from serve.gateway.metrics import Metrics
from serve.gateway.requestlog import RequestLog
from serve.services import Services
from serve.settings import Settings

if TYPE_CHECKING:
    from serve.feedback.recorder import Recorder
    from serve.monitor.loop import ProductionLoop


@dataclass
class AppState:
    """Long-lived clients and services, handed to handlers through `serve.gateway.deps`."""

    settings: Settings
    services: Services
    engine: EngineClient
    hotswap: HotSwapper
    chat: ChatService
    metrics: Metrics
    request_log: RequestLog
    admin_key: AdminKey
    recorder: Recorder | None = None  # request records for feedback, capture and drift
    loop: ProductionLoop | None = None  # writes them, updates drift gauges, judges canaries
