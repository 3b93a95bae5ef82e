"""What the gateway adds on top of calling vLLM directly.

Sends the same chat request N times straight to vLLM and N times through the gateway,
interleaved (direct, gateway, gateway, direct, ...) so both see the same machine load, and prints
p50/p95 latency of each and the milliseconds added. Non-streaming and streaming
(time to first token) are measured separately.

Run against a stack started with `make up` (or `loraplex up`) in another terminal:

    .venv/bin/python bench/gateway_overhead.py            # defaults: 127.0.0.1:8000 and :8100
    .venv/bin/python bench/gateway_overhead.py -n 200 --key "$KEY"

The tenant key defaults to the demo tenant's (data/demo_key).
Results: bench/results/gateway_overhead.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table, summary_ms, write_result  # noqa: E402

PROMPT = [{"role": "user", "content": "Say hello."}]


def one(client: httpx.Client, url: str, headers: dict[str, str], body: dict) -> float:
    started = time.perf_counter()
    if body.get("stream"):
        with client.stream("POST", url, json=body, headers=headers) as resp:
            resp.raise_for_status()
            for line in resp.iter_lines():
                # The first chunk often carries only the role and "content": "": wait for text.
                if line.startswith("data:") and _has_text(line[5:]):
                    return time.perf_counter() - started
        return time.perf_counter() - started
    resp = client.post(url, json=body, headers=headers)
    resp.raise_for_status()
    return time.perf_counter() - started


def _has_text(data: str) -> bool:
    data = data.strip()
    if not data or data == "[DONE]":
        return False
    choices = json.loads(data).get("choices") or []
    return any((c.get("delta") or {}).get("content") for c in choices)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--gateway", default="http://127.0.0.1:8000")
    ap.add_argument("--vllm", default="http://127.0.0.1:8100")
    ap.add_argument("--key", default=None, help="tenant key (default: data/demo_key)")
    ap.add_argument("--model", default="SmolLM2-135M-Instruct")
    ap.add_argument("-n", type=int, default=100, help="requests per side and mode")
    ap.add_argument("--max-tokens", type=int, default=1, help="1 isolates the overhead")
    args = ap.parse_args()
    key = args.key or Path("data/demo_key").read_text().strip()
    gw_headers = {"Authorization": f"Bearer {key}"}
    results: dict[str, dict] = {}
    rows = []
    with httpx.Client(timeout=120) as client:
        for mode in ("non-streaming", "streaming (TTFT)"):
            body = {
                "model": args.model,
                "messages": PROMPT,
                "max_tokens": args.max_tokens if mode == "non-streaming" else 8,
                "temperature": 0,
                "stream": mode != "non-streaming",
            }
            for _ in range(5):  # warm both paths
                one(client, f"{args.vllm}/v1/chat/completions", {}, body)
                one(client, f"{args.gateway}/v1/chat/completions", gw_headers, body)
            direct, gateway = [], []
            for i in range(args.n):
                # Alternate which side goes first, so neither always follows the other's work.
                pair = [(direct, f"{args.vllm}/v1/chat/completions", {}),
                        (gateway, f"{args.gateway}/v1/chat/completions", gw_headers)]  # fmt: skip
                for samples, url, headers in pair if i % 2 == 0 else pair[::-1]:
                    samples.append(one(client, url, headers, body))
            d, g = summary_ms(direct), summary_ms(gateway)
            added = round(g["p50_ms"] - d["p50_ms"], 2)
            added95 = round(g["p95_ms"] - d["p95_ms"], 2)
            results[mode] = {
                "direct": d,
                "gateway": g,
                "added_p50_ms": added,
                "added_p95_ms": added95,
            }
            rows.append([mode, d["p50_ms"], g["p50_ms"], added, d["p95_ms"], g["p95_ms"], added95])
    print_table(
        f"gateway overhead, n={args.n} per side, interleaved",
        ["mode", "vLLM p50", "gateway p50", "added p50", "vLLM p95", "gateway p95", "added p95"],
        rows,
    )
    path = write_result("gateway_overhead", {"n": args.n, "results": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
