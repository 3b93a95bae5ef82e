"""Batched greedy generation with vLLM's offline engine, run as its own process.

    python -m training.evaluate.vllm_worker SPEC.json OUT.json

vLLM's `LLM` starts its engine core in a spawned process, and a spawned child re-imports the
parent's `__main__`: a caller without an `if __name__ == "__main__":` guard would run again in
it. Running the engine in this module's own process (which has the guard) makes that safe for
every caller (CLI, pytest, a notebook, a user's script), and the engine's memory is returned to
the system when it exits. SPEC holds the base model, the adapter and every request; base and
adapter answers come from one engine: requests without / with the LoRARequest, in one batch.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Start the engine, answer every request, return answers and timings."""
    started = time.perf_counter()
    import torch
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    cuda = torch.cuda.is_available()
    engine_args: dict[str, Any] = dict(
        model=spec["model"],
        # No native bf16 on the AVX2 CPUs this runs on (float32 is ~6x faster there).
        dtype="bfloat16" if cuda else "float32",
        max_model_len=spec["max_model_len"],
        enable_lora=spec["adapter"] is not None,
        seed=0,
    )
    if spec["adapter"] is not None:
        engine_args |= {"max_lora_rank": spec["max_lora_rank"], "max_loras": 1}
    if cuda:
        engine_args["gpu_memory_utilization"] = spec["gpu_memory_utilization"]
    llm = LLM(**engine_args)
    ready = time.perf_counter()
    lora = LoRARequest("adapter", 1, spec["adapter"]) if spec["adapter"] is not None else None
    requests = spec["requests"]
    # Base requests first, as their own batch, then the adapter's: measured on vLLM 0.32's CPU
    # build, base requests mixed into one call with LoRA requests were answered by the adapter.
    answers: list[str] = [""] * len(requests)
    tokens = 0
    for side in (False, True):
        index = [i for i, r in enumerate(requests) if bool(r["adapter"]) == side]
        if not index:
            continue
        outputs = llm.chat(
            [requests[i]["messages"] for i in index],
            [SamplingParams(temperature=0.0, max_tokens=requests[i]["max_tokens"]) for i in index],
            use_tqdm=False,
            lora_request=lora if side else None,
        )
        for i, out in zip(index, outputs, strict=True):
            answers[i] = out.outputs[0].text
            tokens += len(out.outputs[0].token_ids)
    done = time.perf_counter()
    return {
        "answers": answers,
        "output_tokens": tokens,
        "startup_s": round(ready - started, 3),
        "generate_s": round(done - ready, 3),
        "device": "cuda" if cuda else "cpu",
    }


def main(argv: list[str]) -> int:
    """Read SPEC, write OUT; exit status 0 on success."""
    spec_path, out_path = Path(argv[0]), Path(argv[1])
    result = run(json.loads(spec_path.read_text()))
    tmp = out_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.rename(out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
