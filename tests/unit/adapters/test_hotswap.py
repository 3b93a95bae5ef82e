"""Hot-swap fan-out against fake replicas (httpx MockTransport): no vLLM needed."""

import asyncio

import httpx

from adapters.hotswap import HotSwapper


def fake_replicas(refuse: set[str]):
    held: dict[str, set[str]] = {}
    calls: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        host = request.url.host
        body = __import__("json").loads(request.content)
        calls.append((host, request.url.path))
        names = held.setdefault(host, set())
        if request.url.path.endswith("load_lora_adapter") and "unload" not in request.url.path:
            if host in refuse:
                return httpx.Response(500, text="out of memory")
            if body["lora_name"] in names:
                return httpx.Response(400, text="has already been loaded")
            names.add(body["lora_name"])
            return httpx.Response(200, text="ok")
        if body["lora_name"] not in names:
            return httpx.Response(404, text="cannot be found")
        names.remove(body["lora_name"])
        return httpx.Response(200, text="ok")

    return handler, held, calls


def test_loads_fan_out_and_failures_are_reported() -> None:
    handler, held, calls = fake_replicas(refuse={"b"})
    swap = HotSwapper(
        ["http://a", "http://b"], httpx.AsyncClient(transport=httpx.MockTransport(handler))
    )

    async def run():
        results = await swap.load("x-v1", "/store/x")
        assert {r.url: r.ok for r in results} == {"http://a": True, "http://b": False}
        assert "out of memory" in results[1].detail
        again = await swap.ensure_loaded("x-v1", "/store/x")  # only b is retried
        assert [r.url for r in again] == ["http://b"]
        held["a"].clear()  # replica a restarted and forgot
        forced = await swap.ensure_loaded("x-v1", "/store/x", force=True)
        assert {r.url: r.ok for r in forced}["http://a"]
        assert all(r.ok for r in await swap.unload("x-v1"))
        assert held["a"] == set()

    asyncio.run(run())


def test_concurrent_loads_of_one_adapter_load_once() -> None:
    handler, held, calls = fake_replicas(refuse=set())
    swap = HotSwapper(["http://a"], httpx.AsyncClient(transport=httpx.MockTransport(handler)))

    async def run():
        await asyncio.gather(*(swap.ensure_loaded("x-v1", "/p") for _ in range(10)))

    asyncio.run(run())
    assert calls.count(("a", "/v1/load_lora_adapter")) == 1
