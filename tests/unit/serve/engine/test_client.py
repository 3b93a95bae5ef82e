"""EngineClient's fail-over across replicas (litellm's calls replaced; no server)."""

from __future__ import annotations

import pytest

from serve.engine.client import EngineClient

DEAD, LIVE = "http://127.0.0.1:9", "http://127.0.0.1:8"


def refused(litellm, api_base: str):
    return litellm.APIConnectionError(
        message=f"connection refused: {api_base}", llm_provider="hosted_vllm", model="m"
    )


@pytest.fixture
def client(monkeypatch) -> EngineClient:
    engine = EngineClient([DEAD, LIVE], timeout_s=5, num_retries=1)
    lt = engine.litellm
    calls: list[str] = []

    async def router_call(**kwargs):
        raise refused(lt, DEAD)  # the Router picked the dead replica, retry included

    async def direct(**kwargs):
        calls.append(kwargs["api_base"])
        if kwargs["api_base"] == f"{DEAD}/v1":
            raise refused(lt, DEAD)
        return "answer"

    monkeypatch.setattr(engine.router, "acompletion", router_call)
    monkeypatch.setattr(lt, "acompletion", direct)
    engine.calls = calls  # type: ignore[attr-defined]
    return engine


async def test_a_refused_connection_is_tried_on_every_other_replica(client) -> None:
    for _ in range(6):
        assert await client._acompletion("m", [{"role": "user", "content": "hi"}], {}) == "answer"
    assert f"{LIVE}/v1" in client.calls and client.calls.count(f"{LIVE}/v1") == 6


async def test_all_replicas_down_is_the_connection_error(client, monkeypatch) -> None:
    lt = client.litellm

    async def down(**kwargs):
        raise refused(lt, kwargs["api_base"])

    monkeypatch.setattr(lt, "acompletion", down)
    with pytest.raises(lt.APIConnectionError):
        await client._acompletion("m", [{"role": "user", "content": "hi"}], {})
    await client.close()


async def test_a_cannot_connect_500_fails_over_too(client, monkeypatch) -> None:
    """litellm's aiohttp transport reports a refused connection as an InternalServerError."""
    lt = client.litellm

    async def router_call(**kwargs):
        raise lt.InternalServerError(
            message="Cannot connect to host 127.0.0.1:9", llm_provider="hosted_vllm", model="m"
        )

    monkeypatch.setattr(client.router, "acompletion", router_call)
    assert await client._acompletion("m", [{"role": "user", "content": "hi"}], {}) == "answer"
