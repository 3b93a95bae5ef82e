"""The gateway's own per-request CPU work, in one process, against a stub engine.

A stub OpenAI server (a child process answering every chat completion at once with a fixed,
vLLM-shaped body or stream) stands in for vLLM, so what is timed is the gateway's work, not
the model's. In this process, interleaved, N requests each:

  httpx    a plain httpx POST to the stub (the floor);
  litellm  `litellm.acompletion` to the stub, configured as the gateway configures it;
  gateway  the gateway app (middleware, auth, validation, routing, litellm, metrics, request
           log, response encoding) through an in-process ASGI client, no HTTP server in front.

Then a cProfile of N more gateway requests: the functions with the most own time and the
most cumulative time. `gateway - litellm` is our own work per request.

    .venv/bin/python bench/gateway_profile.py -n 500 [--stream] [--top 25]

Results: bench/results/gateway_profile.json (the timings and the profile's top entries).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

# This script's folder goes last: bench/retrieval.py must not shadow the retrieval package.
BENCH = Path(__file__).resolve().parent
sys.path[:] = (
    [str(BENCH.parent)]
    + [p for p in sys.path if Path(p or ".").resolve() not in (BENCH, BENCH.parent)]
    + [str(BENCH)]
)
from common import print_table, summary_ms, write_result  # noqa: E402
from gateway_overhead import child, free_port, stop, wait_http  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODEL = "SmolLM2-135M-Instruct"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 1}


def _completion() -> dict[str, Any]:
    # What vLLM answers, field for field (its extensions included), for a 1-token answer.
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hello",
                    "refusal": None,
                    "annotations": None,
                    "audio": None,
                    "function_call": None,
                    "tool_calls": [],
                    "reasoning_content": None,
                },
                "logprobs": None,
                "finish_reason": "length",
                "stop_reason": None,
            }
        ],
        "service_tier": None,
        "system_fingerprint": None,
        "usage": {"prompt_tokens": 31, "total_tokens": 32, "completion_tokens": 1},
        "prompt_logprobs": None,
        "kv_transfer_params": None,
    }


def _chunks() -> list[bytes]:
    base = {"id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": 0, "model": MODEL}
    deltas = [{"role": "assistant", "content": ""}] + [{"content": w} for w in ("Hi", "!", " ")]
    out = [
        {**base, "choices": [{"index": 0, "delta": d, "logprobs": None, "finish_reason": None}]}
        for d in deltas
    ]
    out.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
    lines = [b"data: " + json.dumps(c).encode() + b"\n\n" for c in out]
    return [*lines, b"data: [DONE]\n\n"]


def serve_stub(port: int) -> None:
    """A chat completions endpoint that answers at once."""
    import uvicorn

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        stream = bool(body and json.loads(body).get("stream"))
        ctype = b"text/event-stream" if stream else b"application/json"
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", ctype)]}
        )
        parts = _chunks() if stream else [json.dumps(_completion()).encode()]
        for part in parts:
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    uvicorn.run(app, host="127.0.0.1", port=port, access_log=False, log_level="warning")


async def _timed(call: Any) -> float:
    started = time.perf_counter()
    await call()
    return time.perf_counter() - started


async def run(args: argparse.Namespace, stub: str) -> dict[str, Any]:
    from serve.engine.client import PROVIDER
    from serve.gateway.app import create_app
    from serve.settings import Settings

    tmp = tempfile.TemporaryDirectory(prefix="loraplex-profile-")
    settings = Settings.load(
        data_dir=Path(tmp.name),
        model_dir=args.model_dir,
        vllm_api_key="lpx-stub-engine-key-0123",
        embedding_threads=1,
    )
    app = create_app(settings, [stub])
    body = {**BODY, "stream": args.stream}
    async with app.router.lifespan_context(app):
        state = app.state.loraplex
        _, key = state.services.tenants.create("bench")
        engine = state.engine
        lt, single = engine.litellm, dict(engine._single or {})
        transport = httpx.ASGITransport(app=app)
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://gw", timeout=30) as gw,
            httpx.AsyncClient(timeout=30) as plain,
        ):
            headers = {"Authorization": f"Bearer {key}"}

            async def via_gateway() -> None:
                if args.stream:
                    async with gw.stream(
                        "POST", "/v1/chat/completions", json=body, headers=headers
                    ) as r:
                        r.raise_for_status()
                        async for _ in r.aiter_bytes():
                            pass
                else:
                    (
                        await gw.post("/v1/chat/completions", json=body, headers=headers)
                    ).raise_for_status()

            async def via_httpx() -> None:
                if args.stream:
                    async with plain.stream("POST", f"{stub}/v1/chat/completions", json=body) as r:
                        async for _ in r.aiter_bytes():
                            pass
                else:
                    (await plain.post(f"{stub}/v1/chat/completions", json=body)).raise_for_status()

            async def via_litellm() -> None:
                params = {k: v for k, v in body.items() if k not in ("model", "messages")}
                resp = await lt.acompletion(
                    model=f"{PROVIDER}/{MODEL}", messages=body["messages"], **single, **params
                )
                if args.stream:
                    async for _ in resp:
                        pass

            calls = {"httpx": via_httpx, "litellm": via_litellm, "gateway": via_gateway}
            for _ in range(20):
                for call in calls.values():
                    await call()
            got: dict[str, list[float]] = {name: [] for name in calls}
            names = list(calls)
            for i in range(args.n):
                for name in names[i % 3 :] + names[: i % 3]:
                    got[name].append(await _timed(calls[name]))
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(args.n):
                await via_gateway()
            profiler.disable()
    tmp.cleanup()
    return {"samples": got, "profile": profiler}


def top(profiler: cProfile.Profile, n_requests: int, key: str, count: int) -> list[list[Any]]:
    """The `count` entries with the most `key` time ('tottime' or 'cumtime'), in µs/request."""
    stats = pstats.Stats(profiler, stream=io.StringIO())
    rows = []
    for (file, line, func), (_cc, ncalls, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{_short(file)}:{line}({func})"
        per_request = [ncalls / n_requests, tt / n_requests * 1e6, ct / n_requests * 1e6]
        rows.append([where, *(round(x, 1) for x in per_request)])
    rows.sort(key=lambda r: r[2] if key == "tottime" else r[3], reverse=True)
    return rows[:count]


def _short(file: str) -> str:
    for marker in ("site-packages/", str(REPO) + "/", "lib/python3"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-n", type=int, default=300, help="requests per path (and profiled)")
    ap.add_argument("--stream", action="store_true", help="streamed requests instead")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--model-dir", type=Path, default=REPO / "data/models/SmolLM2-135M-Instruct")
    ap.add_argument("--label", default="")
    ap.add_argument("--dump", type=Path, default=None, help="also write the raw profile (pstats)")
    ap.add_argument("--serve-stub", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_stub is not None:
        serve_stub(args.serve_stub)
        return
    port = free_port()
    log = Path(tempfile.gettempdir()) / f"loraplex-stub-{os.getpid()}.log"
    stub = child([__file__, "--serve-stub", str(port)], log)
    try:
        wait_http(f"http://127.0.0.1:{port}/", stub, 60)
        out = asyncio.run(run(args, f"http://127.0.0.1:{port}"))
    finally:
        stop(stub)
        log.unlink(missing_ok=True)
    s = {name: summary_ms(v) for name, v in out["samples"].items()}
    rows = [[name, v["p50_ms"], v["p95_ms"], v["mean_ms"]] for name, v in s.items()]
    for label, a, b in (
        ("litellm - httpx", "litellm", "httpx"),
        ("gateway - litellm", "gateway", "litellm"),
    ):
        rows.append(
            [label, *(round(s[a][q] - s[b][q], 2) for q in ("p50_ms", "p95_ms", "mean_ms"))]
        )
    mode = "streamed" if args.stream else "non-streamed"
    print_table(
        f"in-process cost per {mode} request (ms), n={args.n}, stub engine",
        ["path", "p50", "p95", "mean"],
        rows,
    )
    if args.dump is not None:
        out["profile"].dump_stats(args.dump)
    cols = ["function", "calls/req", "own µs/req", "cum µs/req"]
    tops = {}
    for key in ("tottime", "cumtime"):
        tops[key] = top(out["profile"], args.n, key, args.top)
        print_table(f"gateway profile: top {args.top} by {key}", cols, tops[key])
    path = write_result(
        "gateway_profile_stream" if args.stream else "gateway_profile",
        {"n": args.n, "label": args.label, "timings": s, "top": tops},
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
