"""Sustained load: many concurrent streaming chats over the four paths, while adapters are
registered and documents ingested; errors, time to first token, tokens/s, and whether the
gateway's memory and open files stay flat.

Each of --concurrency workers sends streaming chats back to back until --duration seconds have
passed (or --max-requests in all), taking the prompt, rag, adapter and combined paths in turn.
Meanwhile every --churn-s seconds a new adapter is registered and a document ingested. The
gateway's resident memory (RSS) and open file descriptors are read from /proc after a warm-up
and again after the load (the goal: within 10%). In the same run, the same streaming load goes
straight to vLLM for --baseline-s seconds (the prompt path without the gateway) for comparison.

By default it starts its own stack (`loraplex up` in a subprocess, with its own data dir and
free ports, stopped at the end); --gateway uses a running one on this machine instead:

    .venv/bin/python bench/load.py                                   # 64 streams, 300 s
    .venv/bin/python bench/load.py --duration 60 --concurrency 16
    .venv/bin/python bench/load.py --gateway http://127.0.0.1:8000 --vllm http://127.0.0.1:8100

Loopback only. Results: bench/results/load.json
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import pct, print_table, write_result  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BASE = "SmolLM2-135M-Instruct"
PATHS = ("prompt", "rag", "adapter", "combined")
QUESTIONS = [
    "How long does the Zorblax {n} drone fly?",
    "What does the Zorblax {n} weigh?",
    "Extract the person as JSON: 'Ada Lovelace, born 1815, mathematician ({n})'",
    "Summarise in one sentence why drones need batteries ({n}).",
]


@dataclass
class Stats:
    """What one path (or the direct baseline) saw."""

    requests: int = 0
    errors: int = 0
    tokens: int = 0
    ttft: list[float] = field(default_factory=list)
    error_kinds: dict[str, int] = field(default_factory=dict)

    def fail(self, kind: str) -> None:
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def loopback(url: str) -> str:
    host = urlparse(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"{url}: loopback only")
    return url.rstrip("/")


def proc_usage(pid: int) -> dict[str, int]:
    """Resident memory (KiB) and open file descriptors of a process, from /proc."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return {"rss_kib": rss, "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def listener_pid(port: int) -> int | None:
    """The process listening on a local TCP port (to measure a running gateway), if visible."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            parts = line.split()
            if int(parts[1].rsplit(":", 1)[1], 16) == port and parts[3] == "0A":  # LISTEN
                inodes.add(parts[9])
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return int(pid)
        except OSError:
            continue
    return None


def small_adapter(model_dir: Path, out: Path, seed: int) -> bytes:
    """A zip of a LoRA adapter with the base model's shapes on 2 of its layers (made in ms)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    config = json.loads((model_dir / "config.json").read_text())
    config.update(num_hidden_layers=2, vocab_size=256, tie_word_embeddings=True)
    torch.manual_seed(seed)
    lora = LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    model = get_peft_model(LlamaForCausalLM(LlamaConfig(**config)), lora)
    model.save_pretrained(out)
    cfg = json.loads((out / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = BASE
    (out / "adapter_config.json").write_text(json.dumps(cfg))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for file in out.iterdir():
            zf.write(file, f"adapter/{file.name}")
    return buf.getvalue()


class OwnStack:
    """`loraplex up` in a subprocess with its own data dir and ports."""

    def __init__(self, data_dir: Path, model_dir: Path) -> None:
        self.data_dir = data_dir
        self.port, self.vllm_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("LORAPLEX_")}
        env.update(
            PYTHONPATH=str(REPO),
            LORAPLEX_DATA_DIR=str(data_dir),
            LORAPLEX_MODEL_DIR=str(model_dir),
            LORAPLEX_PORT=str(self.port),
            LORAPLEX_VLLM_PORT=str(self.vllm_port),
            HF_HUB_OFFLINE="1",
            ANONYMIZED_TELEMETRY="False",
        )
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log = (data_dir / "up.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "serve.cli", "up"], env=env, stdout=self.log, stderr=self.log
        )

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def vllm(self) -> str:
        return f"http://127.0.0.1:{self.vllm_port}"

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"`loraplex up` exited; see {self.data_dir / 'up.log'}")
            try:
                if httpx.get(f"{self.gateway}/readyz", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(2)
        raise SystemExit(f"`loraplex up` not ready in {timeout_s:.0f} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


async def stream_one(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], body: dict[str, Any], stats: Stats
) -> None:
    """One streaming chat: time to the first token, tokens from the usage chunk, errors."""
    started = time.perf_counter()
    stats.requests += 1
    got_first = False
    try:
        async with client.stream("POST", url, json=body, headers=headers) as resp:
            if resp.status_code != 200:
                await resp.aread()
                stats.fail(f"http_{resp.status_code}")
                return
            done = False
            async for line in resp.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    done = True
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    stats.fail(str(chunk["error"].get("code")))
                    return
                if not got_first and any(
                    (c.get("delta") or {}).get("content") for c in chunk.get("choices") or []
                ):
                    got_first = True
                    stats.ttft.append(time.perf_counter() - started)
                if chunk.get("usage"):
                    stats.tokens += int(chunk["usage"].get("completion_tokens") or 0)
            if not done:
                stats.fail("no_done")
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        stats.fail(type(exc).__name__)


def chat_body(path: str, n: int, max_tokens: int, adapter: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "auto",
        "messages": [{"role": "user", "content": QUESTIONS[n % len(QUESTIONS)].format(n=n)}],
        "max_tokens": max_tokens,
        "temperature": 0.7,
        "stream": True,
        "stream_options": {"include_usage": True},
        "loraplex": {"route": path},
    }
    if path in ("adapter", "combined"):
        body["loraplex"]["adapter"] = adapter
    return body


async def run_load(
    url: str,
    headers: dict[str, str],
    bodies: Any,
    concurrency: int,
    duration_s: float,
    max_requests: int,
) -> tuple[dict[str, Stats], float]:
    """`concurrency` workers sending `bodies(i)` -> (stats key, body) until time or count."""
    stats: dict[str, Stats] = {}
    counter = iter(range(max_requests))
    deadline = time.monotonic() + duration_s
    limits = httpx.Limits(max_connections=concurrency + 8, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=httpx.Timeout(300, connect=10), limits=limits) as client:

        async def worker() -> None:
            while time.monotonic() < deadline:
                i = next(counter, None)
                if i is None:
                    return
                key, body = bodies(i)
                await stream_one(client, url, headers, body, stats.setdefault(key, Stats()))

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return stats, time.monotonic() - started


async def churn(
    gateway: str, admin: str, key: str, adapters: list[bytes], every_s: float, stop: asyncio.Event
) -> dict[str, int]:
    """Register an adapter version and ingest a document every `every_s`, until `stop`."""
    done = {"registered": 0, "ingested": 0, "errors": 0}
    i = 0
    async with httpx.AsyncClient(base_url=gateway, timeout=300) as client:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), every_s)
                break
            except TimeoutError:
                pass
            i += 1
            resp = await client.post(
                "/v1/adapters",
                headers={"Authorization": f"Bearer {admin}"},
                files={"file": ("a.zip", adapters[i % len(adapters)], "application/zip")},
                data={"name": f"load-churn-{i}", "tenant": "load"},
            )
            done["registered" if resp.status_code == 201 else "errors"] += 1
            record = {"id": f"churn-{i}", "text": f"Bulletin {i}: the Zorblax {i} flies {i} min."}
            resp = await client.post(
                "/v1/documents",
                headers={"Authorization": f"Bearer {key}"},
                json={"records": [record]},
            )
            done["ingested" if resp.status_code == 201 else "errors"] += 1
    return done


def prepare(gateway: str, admin: str, model_dir: Path, work: Path) -> tuple[str, list[bytes]]:
    """A `load` tenant with documents and an adapter (with exemplars); its key, and adapter
    archives for the churn."""
    with httpx.Client(base_url=gateway, timeout=300) as client:
        auth = {"Authorization": f"Bearer {admin}"}
        resp = client.post("/v1/tenants", json={"name": "load"}, headers=auth)
        if resp.status_code == 409:
            key = client.post("/v1/tenants/load/keys", headers=auth).json()["api_key"]
        else:
            resp.raise_for_status()
            key = resp.json()["api_key"]
        records = [
            {"id": f"zorblax-{n}", "text": f"The Zorblax {n} drone flies for {40 + n} minutes "
             f"and weighs {n + 1}.{n} kg. Its battery is a {n + 2}S lithium pack."}
            for n in range(200)
        ]  # fmt: skip
        client.post(
            "/v1/documents", json={"records": records}, headers={"Authorization": f"Bearer {key}"}
        ).raise_for_status()
        archives = [small_adapter(model_dir, work / f"a{seed}", seed) for seed in range(3)]
        client.post(
            "/v1/adapters",
            headers=auth,
            files={"file": ("a.zip", archives[0], "application/zip")},
            data={"name": "load-json", "tenant": "load", "exemplars": json.dumps(QUESTIONS[2:3])},
        ).raise_for_status()
    return key, archives[1:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--duration", type=float, default=300.0, help="seconds of load (default 300)")
    ap.add_argument("--concurrency", type=int, default=64, help="concurrent streams (default 64)")
    ap.add_argument("--max-requests", type=int, default=100_000, help="stop after this many")
    ap.add_argument("--max-tokens", type=int, default=32, help="tokens per answer")
    ap.add_argument("--churn-s", type=float, default=20.0, help="adapter + document every N s")
    ap.add_argument(
        "--baseline-s", type=float, default=30.0, help="direct-to-vLLM seconds (0: none)"
    )
    ap.add_argument("--gateway", default=None, help="a running gateway (default: start one)")
    ap.add_argument("--vllm", default=None, help="its vLLM, for the baseline")
    ap.add_argument("--data-dir", type=Path, default=Path("data"), help="the running stack's")
    ap.add_argument("--model-dir", type=Path, default=REPO / "data" / "models" / BASE)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="loraplex-load-"))
    own: OwnStack | None = None
    if args.gateway is None:
        own = OwnStack(work / "data", args.model_dir)
        print(f"starting `loraplex up` in {work / 'data'} (vLLM takes 30-120 s on a CPU)")
        own.wait_ready(900)
        gateway, vllm, data_dir = own.gateway, own.vllm, own.data_dir
        pid: int | None = own.proc.pid
    else:
        gateway, data_dir = loopback(args.gateway), args.data_dir
        vllm = loopback(args.vllm) if args.vllm else None
        pid = listener_pid(urlparse(gateway).port or 80)
    try:
        admin = (data_dir / "admin_key").read_text().strip()
        key, archives = prepare(gateway, admin, args.model_dir, work)
        headers = {"Authorization": f"Bearer {key}"}
        chat_url = f"{gateway}/v1/chat/completions"

        def gateway_bodies(i: int) -> tuple[str, dict[str, Any]]:
            path = PATHS[i % len(PATHS)]
            return path, chat_body(path, i, args.max_tokens, "load-json")

        # Warm-up: every path once per worker slot, so lazy loads are done before the start.
        asyncio.run(run_load(chat_url, headers, gateway_bodies, 8, 600, 16))
        before = proc_usage(pid) if pid else None
        peak = dict(before) if before else None

        async def measured() -> tuple[dict[str, Stats], float, dict[str, int]]:
            stop = asyncio.Event()
            churner = asyncio.create_task(churn(gateway, admin, key, archives, args.churn_s, stop))

            async def sample() -> None:
                while not stop.is_set() and pid and peak is not None:
                    now = proc_usage(pid)
                    peak["rss_kib"] = max(peak["rss_kib"], now["rss_kib"])
                    peak["fds"] = max(peak["fds"], now["fds"])
                    await asyncio.sleep(1)

            sampler = asyncio.create_task(sample())
            stats, wall = await run_load(
                chat_url, headers, gateway_bodies, args.concurrency, args.duration,
                args.max_requests,
            )  # fmt: skip
            stop.set()
            done = await churner
            await sampler
            return stats, wall, done

        stats, wall, churned = asyncio.run(measured())
        time.sleep(5)  # let closed connections go before the second reading
        after = proc_usage(pid) if pid else None

        baseline: dict[str, Stats] = {}
        base_wall = 0.0
        if vllm and args.baseline_s > 0:
            vkey_file = data_dir / "vllm_key"
            vheaders = (
                {"Authorization": f"Bearer {vkey_file.read_text().strip()}"}
                if vkey_file.is_file()
                else {}
            )

            def direct(i: int) -> tuple[str, dict[str, Any]]:
                body = chat_body("prompt", i, args.max_tokens, None)
                body.pop("loraplex")
                body["model"] = BASE
                return "direct", body

            baseline, base_wall = asyncio.run(
                run_load(f"{vllm}/v1/chat/completions", vheaders, direct, args.concurrency,
                         args.baseline_s, args.max_requests)
            )  # fmt: skip
    finally:
        if own is not None:
            own.stop()

    rows, out = [], {}
    total = Stats()
    for name, s in [*sorted(stats.items()), *baseline.items()]:
        span = base_wall if name == "direct" else wall
        row = {
            "requests": s.requests,
            "errors": s.errors,
            "error_kinds": s.error_kinds,
            "ttft_p50_ms": round(pct(s.ttft, 50) * 1000, 1),
            "ttft_p95_ms": round(pct(s.ttft, 95) * 1000, 1),
            "tokens_per_s": round(s.tokens / span, 1) if span else 0.0,
        }
        out[name] = row
        label = "vLLM direct (prompt)" if name == "direct" else name
        rows.append(
            [
                label,
                s.requests,
                s.errors,
                row["ttft_p50_ms"],
                row["ttft_p95_ms"],
                row["tokens_per_s"],
            ]
        )
        if name != "direct":
            total.requests += s.requests
            total.errors += s.errors
            total.tokens += s.tokens
            total.ttft += s.ttft
    all_row = [
        "all gateway paths", total.requests, total.errors,
        round(pct(total.ttft, 50) * 1000, 1), round(pct(total.ttft, 95) * 1000, 1),
        round(total.tokens / wall, 1) if wall else 0.0,
    ]  # fmt: skip
    rows.append(all_row)
    print_table(
        f"{args.concurrency} concurrent streams for {wall:.0f} s, {args.max_tokens} tokens each; "
        f"churn: {churned}",
        ["path", "requests", "errors", "TTFT p50 ms", "TTFT p95 ms", "tokens/s"],
        rows,
    )
    growth = {}
    if before and after and peak:
        growth = {k: round(100 * (after[k] - before[k]) / before[k], 1) for k in before}
        print_table(
            f"gateway process {pid}",
            ["", "start", "end", "peak", "end vs start"],
            [
                ["RSS MiB", before["rss_kib"] // 1024, after["rss_kib"] // 1024,
                 peak["rss_kib"] // 1024, f"{growth['rss_kib']:+}%"],
                ["open fds", before["fds"], after["fds"], peak["fds"], f"{growth['fds']:+}%"],
            ],
        )  # fmt: skip
    path = write_result(
        "load",
        {
            "concurrency": args.concurrency,
            "duration_s": round(wall, 1),
            "max_tokens": args.max_tokens,
            "paths": out,
            "all": dict(
                zip(
                    ["requests", "errors", "ttft_p50_ms", "ttft_p95_ms", "tokens_per_s"],
                    all_row[1:],
                    strict=True,
                )
            ),
            "churn": churned,
            "gateway": {"start": before, "end": after, "peak": peak, "growth_pct": growth},
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
