r"""The combined path: does a fact from the tenant's documents end up inside the adapter's JSON?

Makes N people (training.synthetic.people, held out: names and cities no training row uses,
ages drawn per seed), writes one record sentence per person as a section of a few Markdown
files, and ingests them for a fresh tenant through a running gateway (`POST /v1/documents`).
Trains LoRA adapters on the base model in this process, as the integration test does, and
registers them for that tenant (`POST /v1/adapters`):

  grounded     training.synthetic.grounded_json_task: the ask names a person, the facts are in
               sources rendered as the combined path renders them
  format-only  training.synthetic.json_task: the facts are in the ask; no sources ever seen

Then asks, for each person, "Extract the person's name, city and age ... Text: <name>, the
account holder in our records." (training.synthetic.grounded_ask) with the path forced:

  combined              the grounded adapter plus the tenant's documents
  combined/format-only  the format-only adapter plus the documents (an adapter not trained
                        to read sources)
  adapter               the grounded adapter alone, no documents: it cannot know the facts
  rag                   the base model plus the documents, no adapter

Measured per path: answers that are a JSON object with exactly name, city and age and nothing
around it (valid); answers whose JSON object holds the person's age, city, both (exactly, the
age as a number); answers holding both
anywhere in the text (facts in text: the rag path finds the facts, in prose); questions the
gateway answered "not covered"; mean grounding score; latency per question at --concurrency.

    .venv/bin/python bench/combined.py            # against `make up` (keys from data/)
    .venv/bin/python bench/combined.py ... --adapter-dir runs/grounded/adapter  # no training

Results: bench/results/combined.json (every answer included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import pct, print_table, resolve_keys, stack_args, write_result, zip_dir  # noqa: E402

from training.synthetic import (  # noqa: E402
    GROUNDED_RECIPE,
    GROUNDED_ROWS,
    grounded_ask,
    grounded_json_task,
    json_task,
    people,
    record,
)

REPO = Path(__file__).resolve().parents[1]
PER_FILE = 12  # people per document; one section (one chunk) each


def documents(folks: list[dict[str, Any]], seed: int) -> dict[str, str]:
    """Markdown files of account records, a section per person."""
    rng = random.Random(seed)
    files: dict[str, str] = {}
    for start in range(0, len(folks), PER_FILE):
        sections = [
            f"## Account {p['name']}\n\n{record(p, rng)}\n" for p in folks[start : start + PER_FILE]
        ]
        files[f"accounts-{start // PER_FILE + 1}.md"] = "# Account holders\n\n" + "\n".join(
            sections
        )
    return files


def train(args: argparse.Namespace, rows: list[dict[str, Any]], out: Path) -> tuple[Path, float]:
    """An adapter trained on `rows` as the integration test trains its own; (dir, seconds)."""
    from training.config import TrainConfig
    from training.curation import PrepareConfig, prepare
    from training.formats import write_jsonl
    from training.sft import train_sft

    write_jsonl(out / "raw.jsonl", rows)
    prepare([out / "raw.jsonl"], out / "data", PrepareConfig(dedup_threshold=1.0))
    cfg = TrainConfig(
        base_model_dir=args.model_dir,
        **{
            **GROUNDED_RECIPE,
            "max_steps": args.steps,
            "eval_steps": args.steps,
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
        },
        threads=args.threads,
    )
    started = time.perf_counter()
    done = train_sft(cfg, out / "data", out / "run", progress=False)
    return done.adapter_dir, time.perf_counter() - started


def parse(answer: str) -> dict[str, Any] | None:
    """The answer's JSON object: the whole answer, else its outermost braces."""
    for text in (answer.strip(), answer[answer.find("{") : answer.rfind("}") + 1]):
        try:
            got = json.loads(text)
        except json.JSONDecodeError:
            continue
        if isinstance(got, dict):
            return got
    return None


def score(answer: str, person: dict[str, Any]) -> dict[str, bool]:
    """What one answer got right (see the module docstring)."""
    got = parse(answer)
    exact = got is not None and answer.strip().startswith("{") and answer.strip().endswith("}")
    city = got is not None and got.get("city") == person["city"]
    age = got is not None and got.get("age") == person["age"]
    words = re.escape(person["city"]), re.escape(str(person["age"]))
    in_text = all(re.search(rf"(?<![\w.]){w}(?![\w])", answer, re.I) for w in words)
    return {
        "valid": exact and got is not None and set(got) == {"name", "city", "age"},
        "name": got is not None and got.get("name") == person["name"],
        "city": city,
        "age": age,
        "in_json": city and age,
        "in_text": in_text,
    }


class Gateway:
    """A tenant with the records and the adapters, on a running gateway."""

    def __init__(self, args: argparse.Namespace) -> None:
        import httpx

        self.args = args
        self.suffix = uuid.uuid4().hex[:6]
        self.tenant = f"combined-{self.suffix}"
        self.admin = httpx.Client(
            base_url=args.gateway,
            timeout=600,
            headers={"Authorization": f"Bearer {args.admin_key}"},
        )
        resp = self.admin.post("/v1/tenants", json={"name": self.tenant, "policy": {}})
        resp.raise_for_status()
        self.key = resp.json()["api_key"]
        self.adapters: list[str] = []

    def ingest(self, files: dict[str, str]) -> float:
        import httpx

        started = time.perf_counter()
        httpx.post(
            f"{self.args.gateway}/v1/documents",
            files=[("file", (n, t.encode(), "text/markdown")) for n, t in files.items()],
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=600,
        ).raise_for_status()
        return time.perf_counter() - started

    def register(self, name: str, adapter_dir: Path) -> str:
        served = f"{name}-{self.suffix}"
        resp = self.admin.post(
            "/v1/adapters",
            files={"file": ("adapter.zip", zip_dir(adapter_dir))},
            data={"name": served, "tenant": self.tenant},
        )
        resp.raise_for_status()
        self.adapters.append(served)
        return served

    async def ask_all(
        self, paths: dict[str, tuple[str, str | None]], asks: list[str]
    ) -> dict[str, list[dict[str, Any]]]:
        """Every ask on every path (one path after another), --concurrency at a time."""
        import httpx

        gate = asyncio.Semaphore(self.args.concurrency)
        auth = {"Authorization": f"Bearer {self.key}"}
        async with httpx.AsyncClient(base_url=self.args.gateway, timeout=900) as http:

            async def one(route: str, adapter: str | None, ask: str) -> dict[str, Any]:
                options: dict[str, Any] = {"route": route}
                if adapter:
                    options["adapter"] = adapter
                body = {
                    "model": "auto",
                    "messages": [{"role": "user", "content": ask}],
                    "max_tokens": self.args.max_tokens,
                    "temperature": 0,
                    "loraplex": options,
                }
                async with gate:
                    started = time.perf_counter()
                    resp = await http.post("/v1/chat/completions", json=body, headers=auth)
                    seconds = time.perf_counter() - started
                resp.raise_for_status()
                data = resp.json()
                block = data.get("loraplex", {})
                return {
                    "answer": data["choices"][0]["message"]["content"] or "",
                    "seconds": seconds,
                    "route": block.get("route"),
                    "sources": len(block.get("sources") or []),
                    "grounded": block.get("grounded"),
                    "not_covered": route in ("rag", "combined") and not block.get("sources"),
                }

            out = {}
            for name, (route, adapter) in paths.items():
                out[name] = await asyncio.gather(*(one(route, adapter, a) for a in asks))
                print(f"{name}: done", flush=True)
        return out

    def close(self) -> None:
        for name in self.adapters:
            self.admin.delete(f"/v1/adapters/{name}")
        self.admin.delete(f"/v1/tenants/{self.tenant}")


def summarise(folks: list[dict[str, Any]], got: list[dict[str, Any]]) -> dict[str, Any]:
    marks = [score(o["answer"], p) for p, o in zip(folks, got, strict=True)]
    n = len(marks)
    grounded = [o["grounded"] for o in got if o["grounded"] is not None]
    seconds = [o["seconds"] * 1000 for o in got]
    return {
        "questions": n,
        **{
            k: sum(m[k] for m in marks)
            for k in ("valid", "name", "city", "age", "in_json", "in_text")
        },
        "not_covered": sum(o["not_covered"] for o in got),
        "mean_grounded": round(sum(grounded) / len(grounded), 3) if grounded else None,
        "mean_sources": round(sum(o["sources"] for o in got) / n, 2),
        "p50_ms": round(pct(seconds, 50), 1),
        "p95_ms": round(pct(seconds, 95), 1),
    }


def main() -> None:
    ap = stack_args(__doc__)
    ap.add_argument(
        "--model-dir",
        type=Path,
        default=REPO / "data/models/SmolLM2-135M-Instruct",
        help="the served base model's directory (the adapters are trained on it)",
    )
    ap.add_argument(
        "--adapter-dir", type=Path, default=None, help="a grounded adapter: no training"
    )
    ap.add_argument("--no-format-only", action="store_true", help="skip the format-only adapter")
    ap.add_argument("--people", type=int, default=48, help="people, one question each")
    ap.add_argument(
        "--train-rows", type=int, default=GROUNDED_ROWS, help="training rows per adapter"
    )
    # The integration test's recipe: the format and the reading in about a minute on 2 cores.
    ap.add_argument("--steps", type=int, default=GROUNDED_RECIPE["max_steps"])
    ap.add_argument("--batch-size", type=int, default=GROUNDED_RECIPE["batch_size"])
    ap.add_argument("--learning-rate", type=float, default=GROUNDED_RECIPE["learning_rate"])
    ap.add_argument("--threads", type=int, default=0, help="training threads (0: torch's choice)")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    args.admin_key = resolve_keys(args)[1]

    folks = people(args.people, seed=args.seed, held_out=True)
    ask_rng = random.Random(args.seed)
    asks = [grounded_ask(p["name"], ask_rng) for p in folks]
    gw = Gateway(args)
    trained: dict[str, float] = {}
    try:
        ingest_s = gw.ingest(documents(folks, args.seed))
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            grounded_dir = args.adapter_dir
            if grounded_dir is None:
                (root / "grounded").mkdir()
                rows = grounded_json_task(args.train_rows, seed=3)
                grounded_dir, trained["grounded"] = train(args, rows, root / "grounded")
            grounded = gw.register("grounded-json", grounded_dir)
            paths: dict[str, tuple[str, str | None]] = {"combined": ("combined", grounded)}
            if not args.no_format_only:
                (root / "format").mkdir()
                rows = json_task(args.train_rows, seed=3)
                format_dir, trained["format-only"] = train(args, rows, root / "format")
                paths["combined/format-only"] = ("combined", gw.register("json", format_dir))
            paths["adapter"] = ("adapter", grounded)
            paths["rag"] = ("rag", None)
            outcomes = asyncio.run(gw.ask_all(paths, asks))
    finally:
        gw.close()

    results = {name: summarise(folks, got) for name, got in outcomes.items()}
    n = len(folks)

    def share(k: int) -> str:
        return f"{100 * k / n:.1f}% ({k}/{n})"

    rows = [
        [
            name,
            share(r["valid"]),
            share(r["age"]),
            share(r["city"]),
            share(r["in_json"]),
            share(r["in_text"]),
            r["not_covered"],
            r["mean_grounded"],
            r["p50_ms"],
            r["p95_ms"],
        ]
        for name, r in results.items()
    ]
    print_table(
        f"Combined path, {n} held-out people, greedy, {args.max_tokens} tokens, gateway "
        f"{args.gateway}, concurrency {args.concurrency}; adapters: {args.steps} steps of "
        f"{args.batch_size} on {args.train_rows} rows",
        ["path", "JSON valid", "age in JSON", "city in JSON", "both in JSON", "both in text"]
        + ["not covered", "grounded"]
        + ["p50 ms", "p95 ms"],
        rows,
    )
    path = write_result(
        "combined",
        {
            "people": n,
            "ingest_s": round(ingest_s, 2),
            "train_s": {k: round(v, 1) for k, v in trained.items()},
            "settings": {k: str(v) for k, v in vars(args).items() if k != "admin_key"},
            "results": results,
            "answers": {
                name: [
                    {"ask": a, "expect": p, **o} for a, p, o in zip(asks, folks, got, strict=True)
                ]
                for name, got in outcomes.items()
            },
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
