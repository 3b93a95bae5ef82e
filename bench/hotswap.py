r"""How fast a registered adapter serves, and what a cold (not loaded) adapter costs.

1. register -> first token: upload an adapter over the admin API, then stream a chat with it;
   time from the start of the upload to the first streamed token.
2. cold vs warm: p50 of a 1-token request to an adapter vLLM does not hold (unloaded behind
   the gateway's back, so the request pays the on-demand load) vs one it does, interleaved.

It starts nothing itself. Start the stack in another terminal with `loraplex up` (the
gateway on 127.0.0.1:8000, vLLM on 127.0.0.1:8100, state in ./data), then:

    .venv/bin/python bench/hotswap.py -n 20 --registrations 5 \
        --gateway http://127.0.0.1:8000 --admin-key "$(cat data/admin_key)" \
        --key "$(cat data/demo_key)"

--key is a tenant's key (the one `loraplex up` prints; adapters are registered for --tenant,
default demo, which must be that key's tenant); --admin-key and --key default to the files
`loraplex up` keeps in --data-dir. The adapters are random LoRA weights for the local base model
(--data-dir/models/NAME), registered over HTTP and removed at the end.

Results: bench/results/hotswap.json
"""

from __future__ import annotations

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
    summary_ms,
    write_result,
    zip_dir,
)  # fmt: skip

MSG = [{"role": "user", "content": "Say hello."}]


def first_token(http: httpx.Client, key: str, model: str) -> float:
    started = time.perf_counter()
    body = {"model": model, "messages": MSG, "max_tokens": 4, "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body,
                     headers={"Authorization": f"Bearer {key}"}) as resp:  # fmt: skip
        resp.raise_for_status()
        for line in resp.iter_lines():
            if '"content"' in line:
                return time.perf_counter() - started
    raise RuntimeError("stream ended without a token")


def one_token(http: httpx.Client, key: str, model: str) -> float:
    started = time.perf_counter()
    resp = http.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                     json={"model": model, "messages": MSG, "max_tokens": 1})  # fmt: skip
    resp.raise_for_status()
    return time.perf_counter() - started


def main() -> None:
    ap = stack_args(__doc__)
    ap.add_argument("-n", type=int, default=20, help="cold/warm request pairs")
    ap.add_argument("--registrations", type=int, default=5)
    ap.add_argument("--tenant", default="demo", help="tenant owning the bench adapters (--key's)")
    args = ap.parse_args()
    key, admin_key = resolve_keys(args)
    model_dir = args.data_dir / "models" / args.model
    admin = {"Authorization": f"Bearer {admin_key}"}
    register_s, ttft_s, total_s = [], [], []
    names = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        httpx.Client(base_url=args.gateway, timeout=300) as http,
    ):
        archives = [
            zip_dir(make_random_adapter(model_dir, Path(tmp) / f"a{i}", seed=100 + i))
            for i in range(args.registrations)
        ]
        try:
            for i, data in enumerate(archives):
                name = f"bench-hot-{i}-{int(time.time())}"
                started = time.perf_counter()
                resp = http.post("/v1/adapters", headers=admin,
                                 files={"file": ("a.zip", data, "application/zip")},
                                 data={"name": name, "tenant": args.tenant})  # fmt: skip
                resp.raise_for_status()
                names.append(name)
                registered = time.perf_counter() - started
                ttft = first_token(http, key, name)
                register_s.append(registered)
                ttft_s.append(ttft)
                total_s.append(registered + ttft)
            name = names[0]
            served = f"{name}-v1"
            cold, warm = [], []
            for _ in range(args.n):
                httpx.post(f"{args.vllm}/v1/unload_lora_adapter", json={"lora_name": served})
                cold.append(one_token(http, key, name))
                warm.append(one_token(http, key, name))
        finally:
            for name in names:
                http.delete(f"/v1/adapters/{name}", headers=admin)
    reg, ttft, total = summary_ms(register_s), summary_ms(ttft_s), summary_ms(total_s)
    c, w = summary_ms(cold), summary_ms(warm)
    print_table(
        f"register -> first token ({args.registrations} registrations)",
        ["step", "p50 ms", "p95 ms"],
        [["register (upload, validate, store, load)", reg["p50_ms"], reg["p95_ms"]],
         ["first streamed token after register", ttft["p50_ms"], ttft["p95_ms"]],
         ["register -> first token", total["p50_ms"], total["p95_ms"]]],
    )  # fmt: skip
    print_table(
        f"cold vs warm adapter, 1-token requests, n={args.n} each, interleaved",
        ["adapter", "p50 ms", "p95 ms"],
        [["cold (unloaded in vLLM)", c["p50_ms"], c["p95_ms"]],
         ["warm (loaded)", w["p50_ms"], w["p95_ms"]],
         ["cold - warm", round(c["p50_ms"] - w["p50_ms"], 2), ""]],
    )  # fmt: skip
    path = write_result("hotswap", {
        "register": reg, "first_token_after_register": ttft, "register_to_first_token": total,
        "cold": c, "warm": w,
    })  # fmt: skip
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
