"""What the gateway adds on top of calling vLLM directly, and whose cost that is.

The same chat request is sent N times down each of four paths, interleaved (each round runs
the four in a rotated order, so every path sees the same machine load):

  vllm     a plain httpx POST from this process straight to vLLM (the floor of all);
  litellm  `litellm.acompletion` in this process against the same vLLM, configured as the
           gateway configures it: litellm's own in-process cost, with no HTTP hop in front;
  proxy    a minimal pass-through proxy (raw ASGI under the gateway's uvicorn settings,
           forwarding bytes to vLLM with one shared httpx client): the floor for any
           Python gateway process in front of vLLM;
  gateway  the real gateway (authentication, validation, routing, litellm, metrics, log).

From these: `litellm share` = litellm - vllm, `added` = gateway - vllm, and `ours` =
gateway - litellm (what the gateway adds beyond litellm's in-process cost: the HTTP hop,
FastAPI and our own per-request work). The shares are paired: each round's difference of the
two paths, then its median (p50 row) and 95th percentile (p95 row). Non-streaming (1-token
answers) and streaming (time to the first chunk with text, 8-token answers) are measured
separately. A failed request is counted per path and left out, not fatal.

Against a stack started with `make up` (or `loraplex up`) in another terminal:

    .venv/bin/python bench/gateway_overhead.py            # defaults: 127.0.0.1:8000 and :8100
    .venv/bin/python bench/gateway_overhead.py -n 200 --key "$KEY"

The tenant key defaults to DATA_DIR/demo_key, vLLM's key to DATA_DIR/vllm_key (`loraplex up`
writes both). On its own, starting vLLM (serve.engine.launcher) and a gateway in a temporary
data directory, and stopping both at the end:

    .venv/bin/python bench/gateway_overhead.py --start -n 200

Two versions of the gateway in one run (a fifth path, `baseline`): `--baseline URL` against
running stacks, or with --start a checkout whose code runs a second gateway on the same vLLM:

    git archive main | tar -x -C /tmp/base
    .venv/bin/python bench/gateway_overhead.py --start --baseline /tmp/base -n 200

With `--engine stub` (and --start) a stub that answers at once stands in for vLLM: the
model's own time and variance leave the figures, the hops and the gateway's work remain:

    .venv/bin/python bench/gateway_overhead.py --start --engine stub --baseline /tmp/base -n 300

The proxy always runs as a child process of this script. Results:
bench/results/gateway_overhead.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
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
from common import pct, print_table, summary_ms, write_result  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PROMPT = [{"role": "user", "content": "Say hello."}]
MODES = ("non-streaming", "streaming (TTFT)")

Call = Callable[[dict[str, Any]], Awaitable[float]]


def _has_text(data: str) -> bool:
    data = data.strip()
    if not data or data == "[DONE]":
        return False
    choices = json.loads(data).get("choices") or []
    return any((c.get("delta") or {}).get("content") for c in choices)


def http_call(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> Call:
    """Seconds to the whole answer, or (streaming) to the first chunk with text."""

    async def call(body: dict[str, Any]) -> float:
        started = time.perf_counter()
        if body.get("stream"):
            first = None
            async with client.stream("POST", url, json=body, headers=headers) as resp:
                resp.raise_for_status()
                async for line in resp.aiter_lines():
                    # The first chunk often carries only the role and "content": "".
                    if first is None and line.startswith("data:") and _has_text(line[5:]):
                        first = time.perf_counter() - started
            # Read to the end on every path, so each keeps its connections for reuse.
            return first if first is not None else time.perf_counter() - started
        resp = await client.post(url, json=body, headers=headers)
        resp.raise_for_status()
        return time.perf_counter() - started

    return call


def litellm_call(vllm: str, vllm_key: str | None) -> Call:
    """`litellm.acompletion` as the gateway's single-replica path calls it."""
    from serve.engine.client import PROVIDER, EngineClient

    engine = EngineClient([vllm], timeout_s=120.0, num_retries=1, api_key=vllm_key)
    lt, single = engine.litellm, dict(engine._single or {})

    async def call(body: dict[str, Any]) -> float:
        params = {k: v for k, v in body.items() if k not in ("model", "messages")}
        started = time.perf_counter()
        resp = await lt.acompletion(
            model=f"{PROVIDER}/{body['model']}", messages=body["messages"], **single, **params
        )
        if body.get("stream"):
            first = None
            async for chunk in resp:
                if first is None and any(getattr(c.delta, "content", None) for c in chunk.choices):
                    first = time.perf_counter() - started
            return first if first is not None else time.perf_counter() - started
        return time.perf_counter() - started

    return call


# -- the pass-through proxy (a child process) ---------------------------------------------------


def serve_proxy(port: int, vllm: str, vllm_key: str | None) -> None:
    """Forward every request's bytes to vLLM and stream the answer back: nothing else."""
    import uvicorn

    auth = [(b"authorization", f"Bearer {vllm_key}".encode())] if vllm_key else []
    client: httpx.AsyncClient | None = None

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal client
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    client = httpx.AsyncClient(timeout=120)
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if client is not None:
                        await client.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        assert client is not None
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = client.build_request(
            scope["method"],
            vllm + scope["path"],
            content=body,
            headers=[(b"content-type", b"application/json"), *auth],
        )
        resp = await client.send(request, stream=True)
        try:
            headers = [(b"content-type", resp.headers.get("content-type", "").encode())]
            await send(
                {"type": "http.response.start", "status": resp.status_code, "headers": headers}
            )
            async for chunk in resp.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await resp.aclose()

    # The gateway's own server settings (serve.gateway.app.server_config): h11, no access log.
    uvicorn.run(app, host="127.0.0.1", port=port, http="h11", access_log=False, log_level="warning")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes] | None, timeout_s: float = 300) -> None:
    """Until `url` answers at all (any status), or the process died, or time ran out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: the process exited ({proc.returncode})")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in {timeout_s:g} s")


def child(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, *args], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class StubEngine:
    """An OpenAI server that answers every chat completion at once (bench/gateway_profile.py's
    stub), started and stopped like `VllmServer`: with it, what is timed is the HTTP hops and
    the work in front of the engine, without the model's own variance."""

    def __init__(self, port: int, log: Path) -> None:
        self.port, self.log = port, log
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        script = str(BENCH / "gateway_profile.py")
        self.proc = child([script, "--serve-stub", str(self.port)], self.log)

    def wait_ready(self) -> None:
        wait_http(f"{self.url}/health", self.proc, 60)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)


class Started:
    """vLLM (launched as `loraplex up` launches it) and a gateway in a temporary data dir;
    with `baseline_tree`, a second gateway on the same vLLM and data, run from that checkout's
    code (to compare two versions of the gateway in one interleaved run)."""

    def __init__(
        self, model_dir: Path, baseline_tree: Path | None = None, engine: str = "vllm"
    ) -> None:
        from serve.engine.launcher import VllmServer
        from serve.settings import Settings

        self.tmp = tempfile.TemporaryDirectory(prefix="loraplex-bench-")
        data = Path(self.tmp.name)
        self.vllm_key = "lpx-vllm-bench-key"
        self.settings = Settings.load(
            data_dir=data,
            model_dir=model_dir,
            vllm_port=free_port(),
            vllm_api_key=self.vllm_key,
            vllm_max_model_len=2048,
        )
        self.vllm: VllmServer | StubEngine = (
            StubEngine(self.settings.vllm_port, data / "logs" / "stub.log")
            if engine == "stub"
            else VllmServer(self.settings, model_dir, data / "logs" / "vllm.log")
        )
        self.baseline_tree = baseline_tree
        self.gateways: dict[str, str] = {}  # name: URL
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Started:
        print(f"starting the engine on {self.vllm.url}", flush=True)
        self.vllm.start()
        try:
            self.vllm.wait_ready()
            self._gateway("gateway", REPO)
            if self.baseline_tree is not None:
                self._gateway("baseline", self.baseline_tree)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _gateway(self, name: str, tree: Path) -> None:
        """A gateway as `loraplex up --vllm-url` runs it (uvicorn, its own process), from the
        code in `tree`; the first one makes the demo tenant and writes its key."""
        s = self.settings
        port = free_port()
        env = {
            **os.environ,
            "PYTHONPATH": str(tree),
            "LORAPLEX_DATA_DIR": str(s.data_dir),
            "LORAPLEX_MODEL_DIR": str(s.model_dir),
            "LORAPLEX_VLLM_API_KEY": self.vllm_key,
            "LORAPLEX_EMBEDDING_THREADS": "1",
        }
        log = s.data_dir / "logs" / f"{name}.log"
        cmd = [sys.executable, "-m", "serve.cli", "up", "--vllm-url", self.vllm.url]
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [*cmd, "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tree
            )
        self.procs.append(proc)
        url = f"http://{s.host}:{port}"
        wait_http(f"{url}/health", proc)
        self.gateways[name] = url

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            stop(proc)
        self.vllm.stop()
        self.tmp.cleanup()


# -- the measurement ---------------------------------------------------------------------------


async def measure(
    calls: dict[str, Call],
    model: str,
    n: int,
    max_tokens: int,
    on_mode: Callable[..., None],
    settle_s: float = 0.0,
) -> dict[str, dict[str, list[float | None]]]:
    """Samples per mode and path; a request that fails is counted (`errors`), not timed.
    `settle_s`: seconds to wait after the first warm-up rounds (a gateway started just now
    may still be loading models its first requests asked for)."""
    samples: dict[str, dict[str, list[float | None]]] = {}
    names = list(calls)
    for mode in MODES:
        stream = mode != "non-streaming"
        body = {
            "model": model,
            "messages": PROMPT,
            "max_tokens": 8 if stream else max_tokens,
            "temperature": 0,
            "stream": stream,
        }
        for _ in range(5):  # warm every path (connections, caches, vLLM's prefix cache)
            for name in names:
                await calls[name](body)
        if settle_s > 0:
            print(f"waiting {settle_s:g} s for the gateways to settle", flush=True)
            await asyncio.sleep(settle_s)
            settle_s = 0.0
        got: dict[str, list[float | None]] = {name: [] for name in names}
        errors: dict[str, int] = dict.fromkeys(names, 0)
        for i in range(n):
            # Rotate the order, so no path always follows another's work.
            for name in names[i % len(names) :] + names[: i % len(names)]:
                try:
                    sample: float | None = await calls[name](body)
                except Exception as exc:  # noqa: BLE001 - a failure is reported, not fatal
                    sample = None  # kept as a gap, so rounds stay aligned across paths
                    errors[name] += 1
                    print(f"{mode} {name}: {type(exc).__name__}: {exc}", flush=True)
                got[name].append(sample)
            if (i + 1) % 25 == 0:
                print(f"{mode}: {i + 1}/{n}", flush=True)
        samples[mode] = got
        on_mode(mode, got, errors)
    return samples


def summarize(got: dict[str, list[float | None]], errors: dict[str, int]) -> dict[str, Any]:
    """Per path p50/p95 (failed requests left out), and per gateway its shares: litellm's,
    the proxy's, ours. The shares are paired: the difference of two paths within each
    round (they ran back to back), then its median and 95th percentile: steadier than the
    difference of two p50s when the machine's load drifts."""
    s: dict[str, Any] = {
        name: {**summary_ms([x for x in v if x is not None]), "errors": errors[name]}
        for name, v in got.items()
    }

    def paired(a: str, b: str, q: float) -> float:
        pairs = zip(got[a], got[b], strict=True)
        return round(
            pct([(x - y) * 1000 for x, y in pairs if x is not None and y is not None], q), 2
        )

    shares = {"litellm_share": ("litellm", "vllm"), "proxy_added": ("proxy", "vllm")}
    for gw in (name for name in got if name not in ("vllm", "litellm", "proxy")):
        shares[f"{gw}_added"] = (gw, "vllm")
        shares[f"{gw}_ours"] = (gw, "litellm")
    for key, q in (("p50_ms", 50), ("p95_ms", 95)):
        s[f"derived_{key}"] = {name: paired(a, b, q) for name, (a, b) in shares.items()}
    s["samples_ms"] = {
        name: [None if x is None else round(x * 1000, 3) for x in v] for name, v in got.items()
    }
    return s


def report(results: dict[str, Any], n: int) -> None:
    gateways = [k for k in next(iter(results.values())) if k not in ("vllm", "litellm", "proxy")]
    gateways = [g for g in gateways if not g.startswith(("derived", "samples"))]
    rows = []
    for mode, s in results.items():
        for q, label in (("p50_ms", "p50"), ("p95_ms", "p95")):
            d = s[f"derived_{q}"]
            row = [mode, label, s["vllm"][q], s["litellm"][q], s["proxy"][q]]
            row += [s[g][q] for g in gateways] + [d["litellm_share"], d["proxy_added"]]
            for g in gateways:
                row += [d[f"{g}_added"], d[f"{g}_ours"]]
            rows.append(row)
    columns = ["mode", "q", "vLLM", "litellm", "proxy", *gateways, "litellm share", "proxy added"]
    for g in gateways:
        columns += [f"{g} added", f"{g} ours"]
    title = f"gateway overhead (ms), n={n} per path and mode, interleaved; shares paired by round"
    print_table(title, columns, rows)


async def run(
    args: argparse.Namespace, gateways: dict[str, str], key: str, vllm_key: str | None
) -> dict[str, Any]:
    vllm_headers = {"Authorization": f"Bearer {vllm_key}"} if vllm_key else {}
    proxy_port = free_port()
    log = Path(tempfile.gettempdir()) / f"loraplex-bench-proxy-{os.getpid()}.log"
    env = {**os.environ, "LORAPLEX_BENCH_VLLM_KEY": vllm_key or ""}
    proxy = child([__file__, "--serve-proxy", str(proxy_port), "--vllm", args.vllm], log, env)
    results: dict[str, Any] = {}

    def on_mode(mode: str, got: dict[str, list[float | None]], errors: dict[str, int]) -> None:
        results[mode] = summarize(got, errors)
        save(args, results)  # a later failure keeps what was measured

    try:
        wait_http(f"http://127.0.0.1:{proxy_port}/health", proxy, 60)
        async with httpx.AsyncClient(timeout=args.timeout) as client:
            path = "/v1/chat/completions"
            auth = {"Authorization": f"Bearer {key}"}
            calls = {
                "vllm": http_call(client, f"{args.vllm}{path}", vllm_headers),
                "litellm": litellm_call(args.vllm, vllm_key),
                "proxy": http_call(client, f"http://127.0.0.1:{proxy_port}{path}", {}),
            }
            for name, url in gateways.items():
                calls[name] = http_call(client, f"{url}{path}", auth)
            await measure(calls, args.model, args.n, args.max_tokens, on_mode, args.settle)
    finally:
        stop(proxy)
        log.unlink(missing_ok=True)
    return results


def save(args: argparse.Namespace, results: dict[str, Any]) -> Path:
    return write_result(
        "gateway_overhead",
        {
            "n": args.n,
            "started": args.start,
            "settle_s": args.settle,
            "label": args.label,
            "engine": args.engine if args.start else "running stack",
            "results": results,
        },
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--gateway", default="http://127.0.0.1:8000")
    ap.add_argument("--vllm", default="http://127.0.0.1:8100")
    ap.add_argument("--data-dir", default="data", type=Path, help="where `make up` keeps keys")
    ap.add_argument("--key", default=None, help="tenant key (default: DATA_DIR/demo_key)")
    ap.add_argument("--vllm-key", default=None, help="vLLM's key (default: DATA_DIR/vllm_key)")
    ap.add_argument("--model", default="SmolLM2-135M-Instruct")
    ap.add_argument("-n", type=int, default=100, help="requests per path and mode")
    ap.add_argument("--max-tokens", type=int, default=1, help="1 isolates the overhead")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    ap.add_argument("--start", action="store_true", help="start vLLM and a gateway of its own")
    ap.add_argument("--model-dir", type=Path, default=REPO / "data/models/SmolLM2-135M-Instruct")
    ap.add_argument(
        "--baseline",
        default=None,
        help="also measure this gateway: a URL, or with --start a checkout whose code\n"
        "runs a second gateway (e.g. `git worktree add /tmp/base main`)",
    )
    ap.add_argument(
        "--settle",
        type=float,
        default=None,
        help="seconds to wait after the first warm-up requests before measuring\n"
        "(default: 45 with --start, where the gateways were started just now; else 0)",
    )
    ap.add_argument(
        "--engine",
        choices=("vllm", "stub"),
        default="vllm",
        help="with --start: vLLM, or a stub that answers at once (isolates the hops)",
    )
    ap.add_argument("--label", default="", help="kept in the JSON (e.g. a commit)")
    ap.add_argument("--serve-proxy", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.settle is None:
        args.settle = 45.0 if args.start else 0.0
    if args.serve_proxy is not None:
        serve_proxy(args.serve_proxy, args.vllm, os.environ.get("LORAPLEX_BENCH_VLLM_KEY") or None)
        return
    if args.start:
        baseline = Path(args.baseline).resolve() if args.baseline else None
        with Started(args.model_dir, baseline, args.engine) as stack:
            args.vllm = stack.vllm.url
            key = (stack.settings.data_dir / "demo_key").read_text().strip()
            results = asyncio.run(run(args, stack.gateways, key, stack.vllm_key))
    else:
        key = args.key or (args.data_dir / "demo_key").read_text().strip()
        vllm_key = args.vllm_key
        if vllm_key is None and (args.data_dir / "vllm_key").is_file():
            vllm_key = (args.data_dir / "vllm_key").read_text().strip()
        gateways = {"gateway": args.gateway}
        if args.baseline:
            gateways["baseline"] = args.baseline
        results = asyncio.run(run(args, gateways, key, vllm_key))
    report(results, args.n)
    print(f"wrote {save(args, results)}")


if __name__ == "__main__":
    main()
