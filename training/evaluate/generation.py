"""Greedy answers from the base model and the adapter, all requests in one batch.

Back-ends:
- `vllm` (default): vLLM's offline engine in a child process (`vllm_worker.py`); base and
  adapter answers come from one engine (requests without / with the LoRARequest).
- `server`: a running vLLM server by URL; the adapter is loaded under a unique temporary name
  with the runtime API, every request is sent at once so vLLM batches them, and the adapter is
  unloaded at the end. The server must run with LoRA and runtime updating on, and must be able
  to read the adapter directory (same machine or shared storage).
- `transformers`: one request at a time through transformers + peft. The old path, kept as the
  benchmark's baseline and as the fallback where vLLM is not installed.

All use the model's chat template and greedy decoding, so their answers agree (up to float
rounding in batched kernels).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from training.errors import TrainingError

BACKENDS = ("auto", "vllm", "server", "transformers")
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts
LOG_TAIL = 25


@dataclass
class GenRequest:
    """One chat to answer, by the base (adapter=False) or the adapter."""

    messages: list[dict[str, str]]
    adapter: bool
    max_tokens: int


@dataclass
class GenResult:
    """Answers in request order, and what it cost."""

    answers: list[str]
    backend: str
    startup_s: float  # engine start / model load / adapter load: not per request
    generate_s: float
    output_tokens: int | None = None
    device: str = "cpu"

    def describe(self) -> dict[str, Any]:
        """The report's view: answers (base and adapter each count) per second of generation."""
        n = len(self.answers)
        rate = n / self.generate_s if self.generate_s > 0 else None
        return {
            "name": self.backend,
            "device": self.device,
            "answers": n,
            "startup_s": round(self.startup_s, 2),
            "generate_s": round(self.generate_s, 2),
            "answers_per_s": round(rate, 2) if rate else None,
            "output_tokens": self.output_tokens,
        }


class Backend(Protocol):
    """Something that answers a batch of chat requests greedily."""

    name: str

    def generate(self, requests: list[GenRequest]) -> GenResult:
        """Answers to every request, in order."""
        ...


def choose_backend(kind: str, vllm_url: str | None) -> str:
    """The back-end `kind` stands for: auto is the server with a URL, else the offline vLLM
    engine where vLLM is installed, else transformers."""
    if kind not in BACKENDS:
        raise TrainingError(
            f"backend must be one of {list(BACKENDS)}, got {kind!r}", "invalid_backend"
        )
    if kind == "server" and not vllm_url:
        raise TrainingError("backend 'server' needs the vLLM server's URL", "invalid_backend")
    if kind != "auto":
        return kind
    if vllm_url:
        return "server"
    return "vllm" if importlib.util.find_spec("vllm") is not None else "transformers"


def lora_rank_limit(rank: int) -> int:
    """The smallest max_lora_rank vLLM accepts that holds an adapter of this rank."""
    for allowed in LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise TrainingError(
        f"LoRA rank {rank} is above vLLM's largest ({LORA_RANKS[-1]})",
        "adapter_rank_too_large",
        "unsupported",
    )


class VllmOffline:
    """vLLM's offline engine in a child process, one batch for everything."""

    name = "vllm"

    def __init__(
        self,
        base_model_dir: Path,
        adapter_dir: Path | None,
        *,
        lora_rank: int = 8,
        max_model_len: int = 2048,
        kv_cache_gib: int = 2,
        gpu_memory_utilization: float = 0.5,
        log_path: Path | None = None,
        timeout_s: float = 3600,
    ) -> None:
        self.base_model_dir = Path(base_model_dir).resolve()
        self.adapter_dir = Path(adapter_dir).resolve() if adapter_dir else None
        self.max_lora_rank = lora_rank_limit(lora_rank)
        self.max_model_len = max_model_len
        self.kv_cache_gib = kv_cache_gib
        self.gpu_memory_utilization = gpu_memory_utilization
        self.log_path = log_path
        self.timeout_s = timeout_s

    def environment(self) -> dict[str, str]:
        """The child's environment: this package importable, vLLM offline and CPU-sized."""
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(self.kv_cache_gib))
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("VLLM_NO_USAGE_STATS", "1")
        env.setdefault("DO_NOT_TRACK", "1")
        return env

    def generate(self, requests: list[GenRequest]) -> GenResult:
        """Start the engine in a child, answer every request, stop it."""
        spec = {
            "model": str(self.base_model_dir),
            "adapter": str(self.adapter_dir) if self.adapter_dir else None,
            "max_lora_rank": self.max_lora_rank,
            "max_model_len": self.max_model_len,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "requests": [asdict(r) for r in requests],
        }
        with tempfile.TemporaryDirectory(prefix="loraplex-eval-") as tmp:
            spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "out.json"
            spec_path.write_text(json.dumps(spec))
            log_path = self.log_path or Path(tmp) / "vllm.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            with open(log_path, "w") as log:
                try:
                    proc = subprocess.run(
                        [
                            sys.executable,
                            "-m",
                            "training.evaluate.vllm_worker",
                            str(spec_path),
                            str(out_path),
                        ],
                        env=self.environment(),
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        timeout=self.timeout_s,
                        check=False,
                    )
                except subprocess.TimeoutExpired:
                    raise TrainingError(
                        f"the vLLM engine did not finish in {self.timeout_s:.0f} s (log: "
                        f"{log_path})",
                        "engine_timeout",
                        "unavailable",
                    ) from None
            if proc.returncode != 0 or not out_path.is_file():
                tail = "".join(
                    Path(log_path).read_text(errors="replace").splitlines(True)[-LOG_TAIL:]
                )
                raise TrainingError(
                    f"the vLLM engine failed (exit {proc.returncode}); last lines of its log:\n"
                    f"{tail}",
                    "engine_failed",
                    "unavailable",
                )
            result = json.loads(out_path.read_text())
        wall = time.perf_counter() - started
        # Process start and imports count as start-up: only generation is per request.
        return GenResult(
            result["answers"],
            self.name,
            wall - result["generate_s"],
            result["generate_s"],
            result["output_tokens"],
            result["device"],
        )


class VllmServerBackend:
    """A running vLLM server: temporary adapter, all requests concurrently, adapter unloaded."""

    name = "server"

    def __init__(
        self,
        url: str,
        adapter_dir: Path | None,
        *,
        served_model: str | None = None,
        api_key: str | None = None,
        concurrency: int = 256,
        timeout_s: float = 600,
        transport: Any = None,
    ) -> None:
        self.transport = transport  # an httpx transport (tests use a mock)
        # What the server requires on /v1 (vLLM's --api-key), if anything.
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.url = url.rstrip("/")
        if self.url.endswith("/v1"):
            self.url = self.url[:-3]
        self.adapter_dir = Path(adapter_dir).resolve() if adapter_dir else None
        self.served_model = served_model
        self.concurrency = concurrency
        self.timeout_s = timeout_s

    async def base_model(self, client: Any) -> str:
        """The served base model's name (the model without a parent in /v1/models)."""
        import httpx

        if self.served_model:
            return self.served_model
        try:
            resp = await client.get("/v1/models")
            resp.raise_for_status()
        except httpx.HTTPError as exc:
            raise TrainingError(
                f"cannot reach the vLLM server at {self.url}: {exc!r}",
                "engine_unreachable",
                "unavailable",
            ) from None
        roots = [m["id"] for m in resp.json().get("data", []) if not m.get("parent")]
        if not roots:
            raise TrainingError(
                f"{self.url} serves no base model", "engine_unreachable", "unavailable"
            )
        self.served_model = roots[0]
        return roots[0]

    def generate(self, requests: list[GenRequest]) -> GenResult:
        """Answer every request through the server (from any thread, loop or none)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.agenerate(requests))
        # Called from async code: a fresh loop in a worker thread, not a nested one.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, self.agenerate(requests)).result()

    async def agenerate(self, requests: list[GenRequest]) -> GenResult:
        """Load the adapter, send everything at once, unload it."""
        import httpx

        name = f"loraplex-eval-{uuid.uuid4().hex[:10]}"
        limits = httpx.Limits(max_connections=self.concurrency)
        started = time.perf_counter()
        async with httpx.AsyncClient(
            base_url=self.url,
            timeout=self.timeout_s,
            limits=limits,
            transport=self.transport,
            headers=self.headers,
        ) as client:
            base = await self.base_model(client)
            if self.adapter_dir is not None:
                await self._call(
                    client,
                    "/v1/load_lora_adapter",
                    {"lora_name": name, "lora_path": str(self.adapter_dir)},
                )
            ready = time.perf_counter()
            try:
                bodies = await asyncio.gather(
                    *[
                        self._call(
                            client,
                            "/v1/chat/completions",
                            {
                                "model": name if r.adapter else base,
                                "messages": r.messages,
                                "temperature": 0.0,
                                "max_tokens": r.max_tokens,
                            },
                        )
                        for r in requests
                    ]
                )
                done = time.perf_counter()
            finally:
                if self.adapter_dir is not None:
                    # Best effort: the server forgets it on restart; the answers are what count.
                    with contextlib.suppress(httpx.HTTPError):
                        await client.post("/v1/unload_lora_adapter", json={"lora_name": name})
        answers = [b["choices"][0]["message"].get("content") or "" for b in bodies]
        tokens = sum(int((b.get("usage") or {}).get("completion_tokens") or 0) for b in bodies)
        return GenResult(answers, self.name, ready - started, done - ready, tokens, self.url)

    async def _call(self, client: Any, path: str, body: dict[str, Any]) -> Any:
        import httpx

        try:
            resp = await client.post(path, json=body)
        except httpx.HTTPError as exc:
            raise TrainingError(
                f"vLLM server {self.url}{path}: {exc!r}", "engine_unreachable", "unavailable"
            ) from None
        if resp.status_code >= 400:
            raise TrainingError(
                f"vLLM server {self.url}{path} answered {resp.status_code}: {resp.text[:500]}",
                "engine_error",
                "unavailable" if resp.status_code >= 500 else "invalid",
            )
        try:
            return resp.json()
        except ValueError:
            return {}


class TransformersSequential:
    """One request at a time through transformers + peft (the baseline)."""

    name = "transformers"

    def __init__(self, base_model_dir: Path, adapter_dir: Path | None) -> None:
        self.base_model_dir = Path(base_model_dir)
        self.adapter_dir = Path(adapter_dir) if adapter_dir else None

    def generate(self, requests: list[GenRequest]) -> GenResult:
        """Load the model, then answer requests one after another."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        started = time.perf_counter()
        cuda = torch.cuda.is_available()
        device = "cuda" if cuda else "cpu"
        tokenizer = AutoTokenizer.from_pretrained(self.base_model_dir)
        model: Any = AutoModelForCausalLM.from_pretrained(
            self.base_model_dir, dtype=torch.bfloat16 if cuda else torch.float32
        )
        if self.adapter_dir is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(self.adapter_dir))
        model.to(device).eval()
        pad = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        )
        ready = time.perf_counter()
        answers: list[str] = []
        tokens = 0
        for r in requests:
            prompt = tokenizer.apply_chat_template(
                r.messages, tokenize=False, add_generation_prompt=True
            )
            ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(device)
            side = model.disable_adapter() if (self.adapter_dir and not r.adapter) else _null()
            with torch.inference_mode(), side:
                out = model.generate(
                    **ids, max_new_tokens=r.max_tokens, do_sample=False, pad_token_id=pad
                )
            new = out[0][ids["input_ids"].shape[1] :]
            tokens += len(new)
            answers.append(str(tokenizer.decode(new, skip_special_tokens=True)))
        done = time.perf_counter()
        return GenResult(answers, self.name, ready - started, done - ready, tokens, device)


def _null() -> Any:
    from contextlib import nullcontext

    return nullcontext()


def make_backend(
    kind: str,
    base_model_dir: Path,
    adapter_dir: Path | None,
    *,
    vllm_url: str | None = None,
    api_key: str | None = None,
    served_model: str | None = None,
    lora_rank: int = 8,
    log_path: Path | None = None,
    max_model_len: int = 2048,
) -> Backend:
    """The back-end `kind` (see `choose_backend`) for this base model and adapter."""
    kind = choose_backend(kind, vllm_url)
    if kind == "server":
        assert vllm_url is not None
        return VllmServerBackend(vllm_url, adapter_dir, served_model=served_model, api_key=api_key)
    if kind == "vllm":
        return VllmOffline(
            base_model_dir,
            adapter_dir,
            lora_rank=lora_rank,
            log_path=log_path,
            max_model_len=max_model_len,
        )
    return TransformersSequential(base_model_dir, adapter_dir)
