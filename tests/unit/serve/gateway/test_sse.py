"""The chat stream's server-sent-events response: events, keep-alive pings, a client that goes
away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from serve.gateway.sse import EventStream


class Client:
    """An ASGI peer: records what is sent; `leave()` makes `receive` report a disconnect."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.left = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.left.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent[1:])


def test_events_are_data_lines_and_the_stream_ends() -> None:
    async def events() -> AsyncIterator[str]:
        yield '{"a":1}'
        yield "[DONE]"

    client = Client()
    response = EventStream(events(), {"x-loraplex-route": "base"})
    asyncio.run(response(None, client.receive, client.send))
    start = client.sent[0]
    assert start["status"] == 200
    headers = dict(start["headers"])
    assert headers[b"content-type"].startswith(b"text/event-stream")
    assert headers[b"x-loraplex-route"] == b"base"
    assert client.body() == b'data: {"a":1}\n\ndata: [DONE]\n\n'
    assert client.sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


def test_a_silent_stream_is_kept_alive_with_comment_lines() -> None:
    async def events() -> AsyncIterator[str]:
        await asyncio.sleep(0.25)
        yield "late"

    client = Client()
    asyncio.run(EventStream(events(), {}, ping_s=0.1)(None, client.receive, client.send))
    body = client.body()
    assert body.count(b": ping\n\n") == 2 and body.endswith(b"data: late\n\n")


def test_a_client_that_leaves_closes_the_events_at_once() -> None:
    cleaned: list[str] = []

    async def events() -> AsyncIterator[str]:
        try:
            yield "first"
            await asyncio.sleep(60)  # an engine that is slow to send the next token
            yield "never"
        finally:
            cleaned.append("closed")

    async def run() -> Client:
        client = Client()
        task = asyncio.create_task(EventStream(events(), {})(None, client.receive, client.send))
        await asyncio.sleep(0.05)
        client.left.set()
        await asyncio.wait_for(task, 5)
        return client

    client = asyncio.run(run())
    assert cleaned == ["closed"]
    assert client.body() == b"data: first\n\n"
    assert all(m.get("more_body", True) for m in client.sent[1:])  # no normal end was sent
