"""Hot-swap fan-out against fake replicas (httpx MockTransport): no vLLM needed."""

import asyncio

import httpx

from adapters.hotswap import HotSwapper, any_ok


def swapper(urls, handler) -> HotSwapper:
    return HotSwapper(urls, httpx.AsyncClient(transport=httpx.MockTransport(handler)))


def test_loads_fan_out_and_failures_are_reported(fake_replicas) -> None:
    handler, held, calls = fake_replicas(refuse={"b"})
    swap = swapper(["http://a", "http://b"], handler)

    async def run():
        results = await swap.load("x-v1", "/store/x")
        assert {r.url: r.ok for r in results} == {"http://a": True, "http://b": False}
        assert "out of memory" in results[1].detail
        assert held == {"a": {"x-v1"}, "b": set()}
        again = await swap.ensure_loaded("x-v1", "/store/x")  # only b is tried again
        assert calls[-1] == ("b", "/v1/load_lora_adapter") and len(calls) == 3
        # a holds it, so the request can be served although b refused
        assert any_ok(again) and {r.url: r.ok for r in again} == {
            "http://a": True,
            "http://b": False,
        }
        assert all(r.ok for r in await swap.unload("x-v1"))
        assert held == {"a": set(), "b": set()}

    asyncio.run(run())


def test_unsure_loads_ask_each_replica_first(fake_replicas) -> None:
    handler, held, calls = fake_replicas(refuse=set())
    swap = swapper(["http://a", "http://b"], handler)

    async def run():
        await swap.load("x-v1", "/p")
        held["a"].clear()  # replica a restarted and forgot; the swapper still believes it holds
        assert [r.detail for r in await swap.ensure_loaded("x-v1", "/p")] == ["already loaded"] * 2
        calls.clear()
        forced = await swap.ensure_loaded("x-v1", "/p", force=True)
        assert all(r.ok for r in forced) and held == {"a": {"x-v1"}, "b": {"x-v1"}}
        loads = [c for c in calls if c[1] == "/v1/load_lora_adapter"]
        assert loads == [("a", "/v1/load_lora_adapter")]  # b still held it: not reloaded

    asyncio.run(run())


def test_already_loaded_counts_as_success(fake_replicas) -> None:
    handler, held, _ = fake_replicas(refuse=set())
    held["a"] = {"x-v1"}  # loaded by someone else (another gateway replica)
    swap = swapper(["http://a"], handler)
    results = asyncio.run(swap.load("x-v1", "/p"))
    assert results[0].ok and swap.loaded["http://a"] == {"x-v1"}


def test_unreachable_replica_is_reported() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    results = asyncio.run(swapper(["http://down"], handler).load("x-v1", "/p"))
    assert not results[0].ok and "unreachable: ConnectError" in results[0].detail


def test_concurrent_loads_of_one_adapter_load_once(fake_replicas) -> None:
    handler, held, calls = fake_replicas(refuse=set())
    swap = swapper(["http://a"], handler)

    async def run():
        await asyncio.gather(*(swap.ensure_loaded("x-v1", "/p") for _ in range(10)))

    asyncio.run(run())
    assert calls.count(("a", "/v1/load_lora_adapter")) == 1
