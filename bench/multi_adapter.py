r"""Throughput with many adapters at once vs the base model alone, in one run.

A batch of concurrent chat requests (through the gateway, fixed output length) is spread
round-robin over 0 (base model only), 1, 4 and 8 distinct adapters; prints completion
tokens/s and batch wall time for each. vLLM batches requests for different adapters together
up to --max-loras distinct adapters per batch (4 by default).

It starts nothing itself. Start the stack in another terminal with `loraplex up` (the
gateway on 127.0.0.1:8000, vLLM on 127.0.0.1:8100, state in ./data), then:

    .venv/bin/python bench/multi_adapter.py -c 32 --tokens 32 \
        --gateway http://127.0.0.1:8000 --admin-key "$(cat data/admin_key)" \
        --key "$(cat data/demo_key)"

--key is a tenant's key (the one `loraplex up` prints; adapters are registered for --tenant,
default demo, which must be that key's tenant); --admin-key and --key default to the files
`loraplex up` keeps in --data-dir. The adapters are random LoRA weights for the local base model
(--data-dir/models/NAME), registered over HTTP and removed at the end.

Results: bench/results/multi_adapter.json
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    make_random_adapter,
    print_table,
    resolve_keys,
    stack_args,
    write_result,
    zip_dir,
)  # fmt: skip

MSG = [{"role": "user", "content": "Write a short story about a robot."}]


async def batch(
    gateway: str, key: str, models: list[str], n: int, tokens: int
) -> tuple[float, int]:
    async with httpx.AsyncClient(base_url=gateway, timeout=600) as http:

        async def one(i: int) -> int:
            resp = await http.post(
                "/v1/chat/completions",
                headers={"Authorization": f"Bearer {key}"},
                json={
                    "model": models[i % len(models)],
                    "messages": MSG,
                    "max_tokens": tokens,
                    "temperature": 0.8,
                    "seed": i,
                    "ignore_eos": True,
                },  # fmt: skip
            )
            resp.raise_for_status()
            return int(resp.json()["usage"]["completion_tokens"])

        started = time.perf_counter()
        counts = await asyncio.gather(*(one(i) for i in range(n)))
        return time.perf_counter() - started, sum(counts)


def main() -> None:
    ap = stack_args(__doc__)
    ap.add_argument("-c", "--concurrency", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--tenant", default="demo", help="tenant owning the bench adapters (--key's)")
    args = ap.parse_args()
    key, admin_key = resolve_keys(args)
    admin = {"Authorization": f"Bearer {admin_key}"}
    model_dir = args.data_dir / "models" / args.model
    stamp = int(time.time())
    names = [f"bench-multi-{i}-{stamp}" for i in range(8)]
    rows, results = [], {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        httpx.Client(base_url=args.gateway, timeout=300) as http,
    ):
        try:
            for i, name in enumerate(names):
                data = zip_dir(make_random_adapter(model_dir, Path(tmp) / name, seed=200 + i))
                http.post("/v1/adapters", headers=admin,
                          files={"file": ("a.zip", data, "application/zip")},
                          data={"name": name, "tenant": args.tenant}).raise_for_status()  # fmt: skip
            for k in (0, 1, 4, 8):
                models = [args.model] if k == 0 else names[:k]
                asyncio.run(batch(args.gateway, key, models, min(4, args.concurrency), 4))  # warm
                wall, toks = asyncio.run(
                    batch(args.gateway, key, models, args.concurrency, args.tokens)
                )
                label = "base model only" if k == 0 else f"{k} adapter{'s' * (k > 1)}"
                results[label] = {"adapters": k, "wall_s": round(wall, 2), "tokens": toks,
                                  "tokens_per_s": round(toks / wall, 1)}  # fmt: skip
                rows.append([label, args.concurrency, toks, round(wall, 2), round(toks / wall, 1)])
        finally:
            for name in names:
                http.delete(f"/v1/adapters/{name}", headers=admin)
    base = results["base model only"]["tokens_per_s"]
    for row in rows:
        row.append(f"{row[-1] / base:.2f}x")
    print_table(
        "concurrent requests spread over adapters",
        ["traffic", "requests", "tokens", "wall s", "tokens/s", "vs base"],
        rows,
    )
    path = write_result("multi_adapter", {"concurrency": args.concurrency,
                                          "tokens_per_request": args.tokens, "results": results})  # fmt: skip
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
