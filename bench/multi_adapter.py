r"""Throughput with many adapters at once vs one adapter and the base model, in one run.

A batch of concurrent chat requests (through the gateway, fixed output length, `ignore_eos`) is
spread round-robin over 0 (base model only), 1, 4, 8, 16 and 32 distinct adapters; the table
gives completion tokens/s per traffic pattern and its ratio to one adapter and to the base
model, and how many requests vLLM ran at once (its `vllm:num_requests_running` gauge, sampled
every 0.25 s during the batch). vLLM's scheduler puts at most --max-loras distinct adapters in
one batch: requests for other adapters wait, so with more distinct adapters in flight than
slots fewer requests run at once.

Patterns run in rounds, in a rotated order each round, and the median of the rounds is shown, so
every pattern sees the same machine load; the load average is recorded per batch.

Against a running stack (`loraplex up` in another terminal: gateway on 127.0.0.1:8000, vLLM on
127.0.0.1:8100, state in ./data):

    .venv/bin/python bench/multi_adapter.py -c 32 --tokens 32

Or with stacks of its own, one `loraplex up` per --max-loras value (LORAPLEX_VLLM_MAX_LORAS),
all up at once and measured in alternation within each round:

    .venv/bin/python bench/multi_adapter.py --start --max-loras 4 32

--key is a tenant's key (adapters are registered for --tenant, default demo, which must be that
key's tenant); --admin-key and --key default to the files `loraplex up` keeps in --data-dir.
The adapters are random rank-8 LoRA weights (q/v projections) for the local base model,
registered over HTTP and removed at the end (on a running stack).

Results: bench/results/multi_adapter.json
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
sys.path[:] = (
    [str(BENCH.parent)]
    + [p for p in sys.path if Path(p or ".").resolve() not in (BENCH, BENCH.parent)]
    + [str(BENCH)]
)
from common import (  # noqa: E402
    make_random_adapters,
    print_table,
    resolve_keys,
    stack_args,
    write_result,
    zip_dir,
)

REPO = BENCH.parent
LOGS = BENCH / "results" / "multi_adapter-logs"  # each started stack's logs, kept for reading
MSG = [{"role": "user", "content": "Write a short story about a robot."}]


@dataclass
class Stack:
    """A gateway and its vLLM, with the keys to use them."""

    label: str
    gateway: str
    vllm: str
    key: str
    admin_key: str
    vllm_key: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    log: Any = None
    results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def stop(self) -> None:
        """Ctrl-C the `loraplex up` this script started (it stops its vLLM); keep its logs."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
        data_dir = Path(self.log.name).parent
        LOGS.mkdir(parents=True, exist_ok=True)
        for log in (data_dir / "up.log", data_dir / "logs" / "vllm.log"):
            if log.is_file():
                shutil.copyfile(log, LOGS / f"{self.label}-{log.name}")


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_stack(max_loras: int, model_dir: Path, data_dir: Path) -> Stack:
    """`loraplex up` in a subprocess with its own data dir, ports and LORAPLEX_VLLM_MAX_LORAS."""
    port, vllm_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORAPLEX_")}
    env.update(
        PYTHONPATH=str(REPO),
        LORAPLEX_DATA_DIR=str(data_dir),
        LORAPLEX_MODEL_DIR=str(model_dir.resolve()),
        LORAPLEX_PORT=str(port),
        LORAPLEX_VLLM_PORT=str(vllm_port),
        LORAPLEX_VLLM_MAX_LORAS=str(max_loras),
        HF_HUB_OFFLINE="1",
        ANONYMIZED_TELEMETRY="False",
    )
    data_dir.mkdir(parents=True, exist_ok=True)
    log = (data_dir / "up.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "serve.cli", "up"], env=env, stdout=log, stderr=log, cwd=REPO
    )
    return Stack(
        f"max_loras={max_loras}",
        f"http://127.0.0.1:{port}",
        f"http://127.0.0.1:{vllm_port}",
        key="",
        admin_key="",
        proc=proc,
        log=log,
    )


def wait_ready(stack: Stack, data_dir: Path, timeout_s: float = 900) -> None:
    """Until the gateway's /readyz is 200; then read the keys `loraplex up` wrote."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if stack.proc is not None and stack.proc.poll() is not None:
            raise SystemExit(f"`loraplex up` exited; see {data_dir / 'up.log'}")
        try:
            if httpx.get(f"{stack.gateway}/readyz", timeout=5).status_code == 200:
                stack.key = (data_dir / "demo_key").read_text().strip()
                stack.admin_key = (data_dir / "admin_key").read_text().strip()
                stack.vllm_key = (data_dir / "vllm_key").read_text().strip()
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit(f"`loraplex up` not ready in {timeout_s:.0f} s; see {data_dir / 'up.log'}")


async def sample_running(stack: Stack, stop: asyncio.Event, into: list[float]) -> None:
    """vLLM's count of running requests, every 0.25 s until `stop`."""
    headers = {"Authorization": f"Bearer {stack.vllm_key}"} if stack.vllm_key else {}
    async with httpx.AsyncClient(timeout=5) as http:
        while not stop.is_set():
            try:
                text = (await http.get(f"{stack.vllm}/metrics", headers=headers)).text
                for line in text.splitlines():
                    if line.startswith("vllm:num_requests_running{"):
                        into.append(float(line.rsplit(" ", 1)[1]))
            except httpx.HTTPError:
                pass
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)


async def batch(stack: Stack, models: list[str], n: int, tokens: int) -> dict[str, Any]:
    """`n` concurrent requests round-robin over `models`; tokens/s and vLLM's concurrency."""
    running: list[float] = []
    errors: list[str] = []
    stop = asyncio.Event()
    load = os.getloadavg()[0]
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=900) as http:

        async def one(i: int) -> int:
            try:
                resp = await http.post(
                    "/v1/chat/completions",
                    headers={"Authorization": f"Bearer {stack.key}"},
                    json={
                        "model": models[i % len(models)],
                        "messages": MSG,
                        "max_tokens": tokens,
                        "temperature": 0.8,
                        "seed": i,
                        "ignore_eos": True,
                    },
                )
                resp.raise_for_status()
            except httpx.HTTPError as exc:
                # Counted and shown, not fatal: one stall on shared cores must not void a run.
                errors.append(str(exc)[:200])
                return 0
            return int(resp.json()["usage"]["completion_tokens"])

        sampler = asyncio.create_task(sample_running(stack, stop, running))
        started = time.perf_counter()
        counts = await asyncio.gather(*(one(i) for i in range(n)))
        wall = time.perf_counter() - started
        stop.set()
        await sampler
    busy = [r for r in running if r > 0]
    return {
        "wall_s": round(wall, 2),
        "tokens": sum(counts),
        "tokens_per_s": round(sum(counts) / wall, 1),
        "running_mean": round(statistics.fmean(busy), 1) if busy else None,
        "running_max": max(running) if running else None,
        "load_1m": round(load, 2),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


def register(stack: Stack, names: list[str], zips: list[bytes], tenant: str) -> None:
    """Upload every adapter over the admin API."""
    with httpx.Client(base_url=stack.gateway, timeout=300) as http:
        for name, data in zip(names, zips, strict=True):
            http.post(
                "/v1/adapters",
                headers={"Authorization": f"Bearer {stack.admin_key}"},
                files={"file": ("a.zip", data, "application/zip")},
                data={"name": name, "tenant": tenant},
            ).raise_for_status()


def label_of(k: int) -> str:
    return "base model only" if k == 0 else f"{k} adapter{'s' * (k > 1)}"


def main() -> None:
    ap = stack_args(__doc__)
    ap.add_argument("-c", "--concurrency", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2, help="rounds of every pattern (median)")
    ap.add_argument(
        "--adapters", type=int, nargs="+", default=[0, 1, 4, 8, 16, 32], help="0: base model"
    )
    ap.add_argument("--tenant", default="demo", help="tenant owning the bench adapters (--key's)")
    ap.add_argument("--start", action="store_true", help="start a `loraplex up` per --max-loras")
    ap.add_argument("--max-loras", type=int, nargs="+", default=[4], help="with --start")
    args = ap.parse_args()
    model_dir = args.data_dir / "models" / args.model
    stamp = int(time.time())
    names = [f"bench-multi-{i}-{stamp}" for i in range(max(args.adapters))]
    stacks: list[Stack] = []
    with tempfile.TemporaryDirectory(prefix="loraplex-multi-") as tmp:
        try:
            if args.start:
                for n in args.max_loras:
                    stacks.append(start_stack(n, model_dir, Path(tmp) / f"stack-{n}"))
                for stack, n in zip(stacks, args.max_loras, strict=True):
                    wait_ready(stack, Path(tmp) / f"stack-{n}")
            else:
                key, admin = resolve_keys(args)
                vllm_key_file = args.data_dir / "vllm_key"
                vllm_key = vllm_key_file.read_text().strip() if vllm_key_file.is_file() else None
                stacks.append(Stack("running stack", args.gateway, args.vllm, key, admin, vllm_key))
            paths = make_random_adapters(
                model_dir, Path(tmp) / "adapters", [200 + i for i in range(len(names))]
            )
            zips = [zip_dir(p) for p in paths]
            for stack in stacks:
                register(stack, names, zips, args.tenant)
                # Every adapter once, so each is loaded into vLLM before anything is timed.
                asyncio.run(batch(stack, [args.model, *names], len(names) + 1, 4))
            for r in range(args.rounds):
                order = (
                    args.adapters[r % len(args.adapters) :]
                    + args.adapters[: r % len(args.adapters)]
                )
                for k in order:
                    models = [args.model] if k == 0 else names[:k]
                    for stack in stacks if r % 2 == 0 else stacks[::-1]:
                        result = asyncio.run(batch(stack, models, args.concurrency, args.tokens))
                        stack.results.setdefault(label_of(k), []).append(result)
                        print(f"round {r} {stack.label} {label_of(k)}: {result}", flush=True)
        finally:
            for stack in stacks:
                if stack.proc is None:
                    with httpx.Client(base_url=stack.gateway, timeout=60) as http:
                        for name in names:
                            http.delete(
                                f"/v1/adapters/{name}",
                                headers={"Authorization": f"Bearer {stack.admin_key}"},
                            )
                stack.stop()
    summary: dict[str, dict[str, Any]] = {}
    for stack in stacks:
        per: dict[str, Any] = {}
        for label, runs in stack.results.items():
            per[label] = {
                "tokens_per_s": statistics.median(r["tokens_per_s"] for r in runs),
                "running_mean": statistics.median(r["running_mean"] or 0 for r in runs),
                "running_max": max(r["running_max"] or 0 for r in runs),
                "errors": sum(r["errors"] for r in runs),
                "rounds": runs,
            }
        one = per.get(label_of(1), {}).get("tokens_per_s")
        base = per.get(label_of(0), {}).get("tokens_per_s")
        for entry in per.values():
            entry["vs_one_adapter"] = round(entry["tokens_per_s"] / one, 2) if one else None
            entry["vs_base"] = round(entry["tokens_per_s"] / base, 2) if base else None
        summary[stack.label] = per
    columns = ["traffic"]
    for stack in stacks:
        columns += [f"{stack.label}: tok/s", "vs 1", "vs base", "running"]
    rows = []
    for k in args.adapters:
        row = [label_of(k)]
        for stack in stacks:
            e = summary[stack.label][label_of(k)]
            row += [
                f"{e['tokens_per_s']:.1f}",
                f"{e['vs_one_adapter']:.2f}x" if e["vs_one_adapter"] else "",
                f"{e['vs_base']:.2f}x" if e["vs_base"] else "",
                f"{e['running_mean']:.1f} / {e['running_max']:.0f}",
            ]
        rows.append(row)
    print_table(
        f"{args.concurrency} concurrent requests x {args.tokens} tokens spread over adapters "
        f"(median of {args.rounds} rounds; vs 1: vs one adapter; running: requests vLLM ran "
        "at once, mean / max)",
        columns,
        rows,
    )
    for stack in stacks:
        for label, entry in summary[stack.label].items():
            if entry["errors"]:
                print(f"{stack.label}, {label}: {entry['errors']} failed requests (not counted)")
    path = write_result(
        "multi_adapter",
        {
            "concurrency": args.concurrency,
            "tokens_per_request": args.tokens,
            "rounds": args.rounds,
            "results": summary,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
