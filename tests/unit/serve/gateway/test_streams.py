"""A stream that vLLM breaks ends with an OpenAI-style error event, and the `openai` client
raises it; a stream the client leaves closes the upstream one (vLLM stops generating)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import openai
import pytest

from serve.chat.protocol import ChatCompletionRequest
from serve.chat.service import ChatOutcome
from serve.gateway.routes.chat import stream_events
from serve.routing import Decision


def _chunk(i: int) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "served",
        "choices": [{"index": 0, "delta": {"content": f"t{i} "}, "finish_reason": None}],
    }


class Upstream:
    """Two chunks, then what vLLM's death looks like to the engine client (or more chunks)."""

    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.closed = False
        self.sent = 0

    def __aiter__(self) -> Upstream:
        return self

    async def __anext__(self) -> dict[str, Any]:
        if self.sent == 2 and self.fail:
            raise httpx.RemoteProtocolError("peer closed connection without sending complete body")
        self.sent += 1
        return _chunk(self.sent)

    async def aclose(self) -> None:
        self.closed = True


def _outcome(upstream: Upstream) -> ChatOutcome:
    decision = Decision("prompt", "SmolLM2-135M-Instruct", None, "the request named the base model")
    decision.model = "SmolLM2-135M-Instruct"
    return ChatOutcome(decision, stream=upstream)  # type: ignore[arg-type]


REQ = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}], stream=True)


async def _events(upstream: Upstream) -> tuple[list[str], list[tuple]]:
    done: list[tuple] = []
    events = [e async for e in stream_events(_outcome(upstream), REQ, lambda *a: done.append(a))]
    return events, done


async def test_a_stream_broken_by_the_engine_ends_with_an_error_event_then_done() -> None:
    upstream = Upstream(fail=True)
    events, done = await _events(upstream)
    assert len(events) == 4 and events[-1] == "[DONE]"
    assert [json.loads(e)["choices"][0]["delta"]["content"] for e in events[:2]] == ["t1 ", "t2 "]
    error = json.loads(events[2])["error"]
    assert error["code"] == "engine_unavailable" and error["type"] == "service_unavailable_error"
    assert "middle of the answer" in error["message"] and "RemoteProtocolError" in error["message"]
    assert done[0][0] == 503 and upstream.closed


def test_the_openai_client_raises_the_error_event_after_the_chunks() -> None:
    events, _ = asyncio.run(_events(Upstream(fail=True)))
    sse = "".join(f"data: {e}\n\n" for e in events).encode()
    transport = httpx.MockTransport(
        lambda request: httpx.Response(
            200, content=sse, headers={"content-type": "text/event-stream"}
        )
    )
    client = openai.OpenAI(
        base_url="http://gateway/v1",
        api_key="k",
        max_retries=0,
        http_client=httpx.Client(transport=transport),
    )
    stream = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    got = []
    with pytest.raises(openai.APIError) as raised:
        for chunk in stream:
            got.append(chunk.choices[0].delta.content)
    assert got == ["t1 ", "t2 "]
    assert (
        raised.value.code == "engine_unavailable" and "middle of the answer" in raised.value.message
    )


async def test_a_client_that_leaves_closes_the_upstream_stream() -> None:
    upstream = Upstream(fail=False)
    done: list[tuple] = []
    gen = stream_events(_outcome(upstream), REQ, lambda *a: done.append(a))
    assert json.loads(await gen.__anext__())["loraplex"]["route"] == "prompt"
    await gen.aclose()  # what the SSE response does when the client disconnects
    assert upstream.closed and done[0][0] == 499


async def test_a_whole_stream_is_a_200_and_closes_the_upstream_too() -> None:
    class Short(Upstream):
        async def __anext__(self) -> dict[str, Any]:
            if self.sent == 3:
                raise StopAsyncIteration
            return await super().__anext__()

    upstream = Short(fail=False)
    events, done = await _events(upstream)
    assert len(events) == 4 and events[-1] == "[DONE]" and done[0][0] == 200 and upstream.closed
