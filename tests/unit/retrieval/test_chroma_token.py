"""A Chroma server token reaches the server as Chroma's own token auth client sends it."""

from __future__ import annotations

from typing import Any

import pytest

from retrieval.store import TOKEN_AUTH_CLIENT, ChromaStore


@pytest.fixture
def built(monkeypatch) -> list[dict[str, Any]]:
    import chromadb

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(chromadb, "HttpClient", lambda **kw: calls.append(kw) or object())
    return calls


def test_a_token_configures_chromas_token_auth_client(built) -> None:
    ChromaStore(url="http://chroma.test:8123", token="t0ken-" + "x" * 20).client()
    settings = built[0]["settings"]
    assert built[0]["host"] == "chroma.test" and built[0]["port"] == 8123
    assert settings.chroma_client_auth_provider == TOKEN_AUTH_CLIENT
    assert settings.chroma_client_auth_credentials == "t0ken-" + "x" * 20
    assert settings.chroma_auth_token_transport_header in (None, "Authorization")


def test_without_a_token_no_auth_is_configured(built) -> None:
    ChromaStore(url="http://chroma.test:8124").client()
    assert built[0]["settings"].chroma_client_auth_provider is None


def test_the_token_provider_sends_a_bearer_header() -> None:
    from chromadb.auth.token_authn import TokenAuthClientProvider
    from chromadb.config import Settings, System

    settings = Settings(
        chroma_client_auth_provider=TOKEN_AUTH_CLIENT,
        chroma_client_auth_credentials="t0ken-" + "y" * 20,
    )
    headers = TokenAuthClientProvider(System(settings)).authenticate()
    assert {k: v.get_secret_value() for k, v in headers.items()} == {
        "Authorization": "Bearer " + "t0ken-" + "y" * 20
    }
