"""Per-path evaluation: the same questions through each serving path of a running gateway.

`loraplex eval --tenant T --questions QA.jsonl` asks every question through the prompt, rag,
adapter and combined paths the tenant may take (forcing the path with `loraplex.route`), scores
each answer (`training.evaluate.score_answer`) and writes `per_path.json` and
`best_paths.jsonl`; the latter is what `loraplex router calibrate --from-eval DIR` learns from.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import httpx

from serve.errors import ServiceError
from training.evaluate import PATHS, Item

ADAPTER_PATHS = ("adapter", "combined")
DOCUMENT_PATHS = ("rag", "combined")


@dataclass
class PathRun:
    """What each path answered (None where it was not asked), and how grounded."""

    answers: dict[str, list[str | None]] = field(default_factory=dict)
    grounded: dict[str, list[float | None]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)


def paths_for(routes: list[str], has_adapter: bool, has_documents: bool) -> list[str]:
    """The paths worth asking: allowed by the policy, with an adapter and documents to use."""
    out = []
    for path in PATHS:
        if path not in routes:
            continue
        if path in ADAPTER_PATHS and not has_adapter:
            continue
        if path in DOCUMENT_PATHS and not has_documents:
            continue
        out.append(path)
    return out


async def ask_paths(
    gateway: str,
    key: str,
    items: list[Item],
    paths: list[str],
    adapter: str | None,
    *,
    max_tokens: int = 96,
    concurrency: int = 8,
    transport: httpx.AsyncBaseTransport | None = None,
) -> PathRun:
    """Ask every item through every path (greedy); a failed request counts as no answer."""
    run = PathRun({p: [None] * len(items) for p in paths}, {p: [None] * len(items) for p in paths})
    gate = asyncio.Semaphore(concurrency)

    async def one(client: httpx.AsyncClient, path: str, i: int) -> None:
        opts: dict[str, Any] = {"route": path}
        if path in ADAPTER_PATHS and adapter:
            opts["adapter"] = adapter
        body = {
            "model": "auto",
            "messages": items[i].conversation(),
            "temperature": 0,
            "max_tokens": max_tokens,
            "loraplex": opts,
        }
        async with gate:
            resp = await client.post("/v1/chat/completions", json=body)
        if resp.status_code != 200:
            run.errors[path] = run.errors.get(path, 0) + 1
            if resp.status_code in (401, 403):
                message = resp.json().get("error", {}).get("message", resp.text[:200])
                raise ServiceError(
                    f"the gateway refused the {path} path: {message}", "path_refused", "forbidden"
                )
            run.answers[path][i] = ""  # asked, and failed: scores zero
            return
        data = resp.json()
        run.answers[path][i] = data["choices"][0]["message"].get("content") or ""
        run.grounded[path][i] = (data.get("loraplex") or {}).get("grounded")

    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(
        base_url=gateway.rstrip("/"), headers=headers, timeout=300, transport=transport
    ) as client:
        try:
            await asyncio.gather(*(one(client, p, i) for p in paths for i in range(len(items))))
        except httpx.HTTPError as exc:
            raise ServiceError(
                f"no gateway answers at {gateway} ({type(exc).__name__}): start one with "
                "`loraplex up`, or pass --gateway URL",
                "gateway_unreachable",
                "unavailable",
            ) from None
    return run
