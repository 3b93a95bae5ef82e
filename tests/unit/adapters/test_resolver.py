"""The vLLM LoRAResolver plugin, against a real registry (vLLM imported, no server started)."""

import asyncio

import pytest

from adapters import resolver


def test_register_is_a_no_op_without_the_registry_env(monkeypatch) -> None:
    monkeypatch.delenv("LORAPLEX_RESOLVER_DB", raising=False)
    monkeypatch.delenv("LORAPLEX_RESOLVER_STORE", raising=False)
    resolver.register()  # must not import vLLM's registry or raise


def test_resolves_name_version_and_served_name(registry, make, tmp_path, monkeypatch) -> None:
    pytest.importorskip("vllm")
    from vllm.lora.request import LoRARequest
    from vllm.lora.resolver import LoRAResolverRegistry

    v1 = registry.register(make(tmp_path / "1", seed=1), "faq", owner="acme")
    v2 = registry.register(make(tmp_path / "2", seed=2), "faq", owner="acme", promote=False)
    monkeypatch.setenv("LORAPLEX_RESOLVER_DB", str(registry.engine.url))
    monkeypatch.setenv("LORAPLEX_RESOLVER_STORE", str(registry.store.root))
    monkeypatch.setattr(LoRAResolverRegistry, "resolvers", {})
    resolver.register()
    plugin = LoRAResolverRegistry.get_resolver("loraplex")

    def resolve(name: str) -> LoRARequest | None:
        return asyncio.run(plugin.resolve_lora("tiny-base", name))

    for name, want in (("faq", v1), ("faq@2", v2), ("faq-v2", v2), ("faq-v1", v1)):
        found = resolve(name)
        assert found is not None, name
        assert (found.lora_name, found.lora_path) == (name, str(want.path))
    for unknown in ("nope", "faq@9", "faq-v9", "faq@beta"):
        assert resolve(unknown) is None, unknown


def test_the_registry_is_opened_on_the_first_lookup_only(registry, make, tmp_path) -> None:
    """vLLM loads the plugin in each of its processes; only the API server ever resolves."""
    opened: list[int] = []

    def open_registry():
        opened.append(1)
        return registry

    inner = resolver.RegistryResolver(open_registry)
    assert opened == []
    v1 = registry.register(make(tmp_path / "1", seed=1), "faq", owner="acme")
    assert inner.lookup("faq").path == v1.path
    assert inner.lookup("nope") is None
    assert opened == [1]
