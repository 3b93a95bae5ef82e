"""Helpers shared by the benchmark scripts: percentiles, tables, JSON results."""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).resolve().parent / "results"


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary_ms(samples_s: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples_s]
    return {
        "n": len(ms),
        "p50_ms": round(pct(ms, 50), 2),
        "p95_ms": round(pct(ms, 95), 2),
        "mean_ms": round(statistics.fmean(ms), 2) if ms else float("nan"),
    }


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(*columns, title=title)
    for row in rows:
        table.add_row(*[str(c) for c in row])
    Console().print(table)


def write_result(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "benchmark": name,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {"cpu_count": __import__("os").cpu_count(), "python": platform.python_version()},
        **payload,
    }
    path.write_text(json.dumps(payload, indent=2))
    return path


def make_random_adapter(model_dir: Path, out: Path, seed: int, rank: int = 8) -> Path:
    """A non-zero random LoRA adapter for the base model (for serving benchmarks)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    cfg = LoraConfig(
        r=rank, lora_alpha=rank, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    get_peft_model(model, cfg).save_pretrained(out)
    return out


def make_random_adapters(model_dir: Path, out: Path, seeds: list[int], rank: int = 8) -> list[Path]:
    """Many random adapters like `make_random_adapter`'s, the base model loaded once: one
    directory per seed under `out` (32 adapters in seconds rather than minutes)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    cfg = LoraConfig(
        r=rank, lora_alpha=rank, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    peft_model = get_peft_model(model, cfg)
    lora = [
        m
        for name, m in peft_model.named_modules()
        if name.endswith(("lora_A.default", "lora_B.default"))
    ]
    paths = []
    for seed in seeds:
        torch.manual_seed(seed)
        for module in lora:
            module.reset_parameters()  # nn.Linear's init, as init_lora_weights=False leaves it
        peft_model.save_pretrained(out / f"adapter-{seed}")
        paths.append(out / f"adapter-{seed}")
    return paths


def zip_dir(path: Path) -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for file in path.iterdir():
            zf.write(file, file.name)
    return buf.getvalue()


def stack_args(description: str) -> Any:
    """Arguments every benchmark against a running stack takes."""
    import argparse

    ap = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("--gateway", default="http://127.0.0.1:8000")
    ap.add_argument("--vllm", default="http://127.0.0.1:8100")
    ap.add_argument("--data-dir", default="data", type=Path, help="where make up keeps its state")
    ap.add_argument("--key", default=None, help="tenant key (default: DATA_DIR/demo_key)")
    ap.add_argument("--admin-key", default=None, help="admin key (default: DATA_DIR/admin_key)")
    ap.add_argument("--model", default="SmolLM2-135M-Instruct", help="served base model name")
    return ap


def resolve_keys(args: Any) -> tuple[str, str]:
    key = args.key or (args.data_dir / "demo_key").read_text().strip()
    admin = args.admin_key or (args.data_dir / "admin_key").read_text().strip()
    return key, admin
