"""A vLLM LoRAResolver that finds registered adapters by name in the loraplex registry.

With it, a vLLM server started on its own (or restarted) serves `NAME`, `NAME@N` and `NAME-vN`
on the first request, loading the files from the registry's artifact store. vLLM imports every
`vllm.general_plugins` entry point in each of its processes; this one activates only when
`LORAPLEX_RESOLVER_DB` (registry database URL) and `LORAPLEX_RESOLVER_STORE` (artifact store
directory) are set. Reading them here is vLLM's plugin interface, not loraplex configuration.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("loraplex.resolver")


class RegistryResolver:
    """Resolve adapter names against the registry (wrapped as a vLLM LoRAResolver below).

    The registry is opened on the first lookup, not here: vLLM loads this plugin in every one
    of its processes (API server, engine core, worker), and only the API server ever resolves
    a name. Opening it costs about 0.4 s (SQLAlchemy's import and an engine) in a start-up that
    runs those processes one after another."""

    def __init__(self, open_registry: Callable[[], Any]) -> None:
        self._open = open_registry
        self._registry: Any = None
        self._lock = threading.Lock()

    @property
    def registry(self) -> Any:
        """The registry, opened on first use."""
        with self._lock:
            if self._registry is None:
                self._registry = self._open()
            return self._registry

    def lookup(self, lora_name: str) -> Any:
        """The registered version `lora_name` refers to, or None."""
        from sqlalchemy.exc import SQLAlchemyError

        from adapters.errors import AdapterError

        try:
            found = self.registry.get_served(lora_name)
            return found if found is not None else self.registry.get(lora_name)
        except (AdapterError, SQLAlchemyError):
            # Unknown name, or no registry tables yet: not ours to serve.
            return None


def make_resolver(database_url: str, store_dir: Path) -> Any:
    """A vLLM LoRAResolver over the registry at `database_url` / `store_dir`."""
    from vllm.lora.request import LoRARequest
    from vllm.lora.resolver import LoRAResolver

    def open_registry() -> Any:
        from adapters.registry import AdapterRegistry

        return AdapterRegistry.reader(database_url, store_dir)

    inner = RegistryResolver(open_registry)

    class LoraplexResolver(LoRAResolver):
        """Registered adapters by `NAME`, `NAME@N` or `NAME-vN` (vLLM caches the answer under
        the name asked for, so the gateway always asks for the immutable `NAME-vN`)."""

        async def resolve_lora(self, base_model_name: str, lora_name: str) -> Any:
            # A registry query is a few ms; vLLM calls this once per unknown name.
            found = await asyncio.to_thread(inner.lookup, lora_name)
            if found is None:
                return None
            log.info("resolved %s to %s at %s", lora_name, found.ref, found.path)
            return LoRARequest(
                lora_name=lora_name,
                lora_int_id=abs(hash(lora_name)) % (1 << 30) + 1,
                lora_path=str(found.path),
            )

    return LoraplexResolver()


def register() -> None:
    """vLLM plugin entry point: register the resolver when the registry is configured."""
    url = os.environ.get("LORAPLEX_RESOLVER_DB")
    if not url:
        return  # vLLM loads every installed plugin; most vLLM servers are not loraplex's
    store = os.environ.get("LORAPLEX_RESOLVER_STORE")
    if not store:
        log.warning(
            "LORAPLEX_RESOLVER_DB is set but LORAPLEX_RESOLVER_STORE (the adapter store "
            "directory) is not: registered adapters will not be resolved by name"
        )
        return
    from vllm.lora.resolver import LoRAResolverRegistry

    LoRAResolverRegistry.register_resolver("loraplex", make_resolver(url, Path(store)))
