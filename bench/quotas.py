"""What per-tenant quotas cost a chat request, on SQLite and on PostgreSQL, against quotas off.

    PYTHONPATH=. python bench/quotas.py [--requests 400]

For each database and each set of limits it times, per request, what the gateway does: the
admission before the engine is called (on the caller's clock, thread hop included) and the
count after the answer (sent in the background for a JSON answer, at the end of a stream). The
limits are high enough that nothing is refused; a last row times a refusal once a minute is
full (answered from memory). PostgreSQL is a local pgserver (Unix socket); a networked one adds
its round trip to each statement (two per request with every limit on, one with rpm alone).
Prints a table; writes bench/results/quotas.json.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# The repository first: bench/retrieval.py would otherwise shadow the retrieval package.
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import contextlib

from common import print_table, summary_ms, write_result  # noqa: E402

from serve.database import make_engine, migrate  # noqa: E402
from serve.errors import ServiceError  # noqa: E402
from serve.quotas import QuotaLimiter  # noqa: E402
from serve.tenants import TenantService  # noqa: E402

HIGH = 10**9
CASES: dict[str, dict[str, Any]] = {
    "off": {},
    "rpm": {"requests_per_minute": HIGH},
    "rpm+tpm+budget": {
        "requests_per_minute": HIGH,
        "tokens_per_minute": HIGH,
        "token_budget": HIGH,
    },
    "all (stream)": {
        "requests_per_minute": HIGH,
        "tokens_per_minute": HIGH,
        "token_budget": HIGH,
        "concurrent_streams": 1000,
    },
}


async def _run(limiter: QuotaLimiter, tenant: Any, stream: bool, n: int) -> tuple[list, list]:
    admit, finish = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        admission = await limiter.admit(tenant, stream)
        t1 = time.perf_counter()
        if admission is not None:
            admission.tokens = 40
        await limiter.finish(admission)
        admit.append(t1 - t0)
        finish.append(time.perf_counter() - t1)
    return admit, finish


async def _refused(limiter: QuotaLimiter, tenant: Any, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        with contextlib.suppress(ServiceError):
            await limiter.admit(tenant, False)
        out.append(time.perf_counter() - t0)
    return out


def bench(db_name: str, url: str, n: int) -> list[dict[str, Any]]:
    migrate(url)
    engine = make_engine(url)
    tenants = TenantService(engine)
    limiter = QuotaLimiter(engine)
    rows = []
    for case, quotas in CASES.items():
        tenant, _ = tenants.create(f"t-{len(rows)}", {"quotas": quotas})
        stream = "stream" in case
        asyncio.run(_run(limiter, tenant, stream, 20))  # warm the pool and the statements
        admit, finish = asyncio.run(_run(limiter, tenant, stream, n))
        rows.append(
            {"db": db_name, "limits": case, "admit": summary_ms(admit), "count": summary_ms(finish)}
        )
    full, _ = tenants.create("t-full", {"quotas": {"requests_per_minute": 1}})
    asyncio.run(limiter.admit(full, False))
    refused = asyncio.run(_refused(limiter, full, n))
    rows.append({"db": db_name, "limits": "rpm, minute full (429)", "admit": summary_ms(refused)})
    engine.dispose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        results += bench("sqlite", f"sqlite:///{Path(tmp) / 'q.db'}", args.requests)
        try:
            import pgserver
        except ImportError:
            print("pgserver is not installed (dev extra): PostgreSQL skipped")
        else:
            server = pgserver.get_server(Path(tmp) / "pg", cleanup_mode="stop")
            url = server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)
            results += bench("postgresql", url, args.requests)
            server.cleanup()
    table = []
    for r in results:
        count = r.get("count")
        table.append(
            [
                r["db"],
                r["limits"],
                r["admit"]["p50_ms"],
                r["admit"]["p95_ms"],
                count["p50_ms"] if count else "-",
                count["p95_ms"] if count else "-",
            ]
        )
    print_table(
        f"Quota work per chat request ({args.requests} requests, one after another)",
        ["db", "limits", "admit p50 ms", "admit p95 ms", "count p50 ms", "count p95 ms"],
        table,
    )
    print(f"wrote {write_result('quotas', {'requests': args.requests, 'results': results})}")


if __name__ == "__main__":
    main()
