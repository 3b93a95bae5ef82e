"""Check that a directory holds a PEFT LoRA adapter vLLM can serve on our base model.

Everything is read from `adapter_config.json` and the safetensors header alone: no tensor is
loaded, so validating a large adapter costs milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.errors import AdapterError

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
MAX_HEADER = 100 << 20
LAYER_RE = re.compile(
    r"\.layers\.(\d+)\.(?:[a-z_]+\.)?([a-z_]+)\.lora_([AB])(?:\.[a-z_]+)?\.weight$"
)
DTYPES = {"F32", "F16", "BF16"}


@dataclass(frozen=True)
class AdapterInfo:
    """What validation learned about an adapter."""

    base_model: str
    rank: int
    alpha: float
    target_modules: list[str]
    digest: str  # sha256 of adapter_model.safetensors
    size_bytes: int
    config: dict[str, Any] = field(default_factory=dict)


def module_shapes(base_config: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of each LoRA-able projection of a Llama-style base."""
    h = int(base_config["hidden_size"])
    heads = int(base_config["num_attention_heads"])
    kv = int(base_config.get("num_key_value_heads") or heads)
    hd = int(base_config.get("head_dim") or h // heads)
    inter = int(base_config["intermediate_size"])
    return {
        "q_proj": (h, heads * hd),
        "k_proj": (h, kv * hd),
        "v_proj": (h, kv * hd),
        "o_proj": (heads * hd, h),
        "gate_proj": (h, inter),
        "up_proj": (h, inter),
        "down_proj": (inter, h),
    }


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The header of a safetensors file, after checking the file is complete."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise AdapterError(f"{WEIGHTS} is empty or truncated ({size} bytes)", "corrupt_weights")
        (n,) = struct.unpack("<Q", raw)
        if n <= 0 or n > MAX_HEADER or 8 + n > size:
            raise AdapterError(
                f"{WEIGHTS} has a corrupt header: not a safetensors file", "corrupt_weights"
            )
        try:
            header = json.loads(fh.read(n))
        except (ValueError, RecursionError):  # bad UTF-8 or JSON, over-long ints, deep nesting
            raise AdapterError(
                f"{WEIGHTS} has a corrupt header: not a safetensors file", "corrupt_weights"
            ) from None
    if not isinstance(header, dict):
        raise AdapterError(f"{WEIGHTS} has a corrupt header", "corrupt_weights")
    end = 0
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if not (
            isinstance(meta, dict)
            and _counts(meta.get("shape"))
            and _counts(meta.get("data_offsets"), length=2)
            and meta["data_offsets"][0] <= meta["data_offsets"][1]
        ):
            raise AdapterError(
                f"{WEIGHTS}: tensor {name!r} has no valid shape/offsets", "corrupt_weights"
            )
        end = max(end, meta["data_offsets"][1])
        if meta.get("dtype") not in DTYPES:
            raise AdapterError(
                f"{WEIGHTS}: tensor {name!r} has dtype {meta.get('dtype')}; "
                "use float32, float16 or bfloat16",
                "unsupported_dtype",
            )
    if 8 + n + end != size:
        raise AdapterError(
            f"{WEIGHTS} is truncated or padded: header says {8 + n + end} bytes, file has {size}",
            "corrupt_weights",
        )
    return header


def _counts(value: Any, length: int | None = None) -> bool:
    """A list of non-negative integers (what safetensors stores as shapes and offsets)."""
    if not isinstance(value, list) or (length is not None and len(value) != length):
        return False
    return all(type(v) is int and v >= 0 for v in value)  # type(): bool is an int subclass


def _check_opens(weights: Path) -> None:
    # The header check above explains most faults precisely; safetensors' own reader is the
    # final word on whether vLLM will be able to read the file.
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="numpy") as fh:
            fh.keys()
    except Exception as exc:  # safetensors raises its own error types and OSError
        raise AdapterError(
            f"{WEIGHTS} cannot be read by safetensors ({exc}); re-save the adapter",
            "corrupt_weights",
        ) from None


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _same_base(declared: str, base_model: str, base_model_dir: Path | None) -> bool:
    names = {base_model.lower()}
    if base_model_dir is not None:
        names.add(base_model_dir.name.lower())
    return declared.rstrip("/").split("/")[-1].lower() in names


def validate_adapter(
    src: Path,
    *,
    base_model: str,
    max_rank: int,
    base_config: dict[str, Any] | None = None,
    base_model_dir: Path | None = None,
) -> AdapterInfo:
    """Validate `src`; raise AdapterError naming the first problem found."""
    check_files(src)
    cfg_path = src / CONFIG
    try:
        config = json.loads(cfg_path.read_text())
    except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON, over-long ints, nesting
        raise AdapterError(f"{CONFIG} is not valid JSON: {exc}", "not_an_adapter") from None
    return _validate(src, config, base_model, max_rank, base_config, base_model_dir)


def check_files(src: Path) -> None:
    """Both adapter files are present (cheap: run before anything is copied)."""
    if not src.is_dir():
        raise AdapterError(f"{src} is not a directory", "not_an_adapter")
    cfg_path, weights = src / CONFIG, src / WEIGHTS
    if not cfg_path.is_file():
        raise AdapterError(
            f"not a PEFT adapter: {CONFIG} is missing (save it with peft's save_pretrained)",
            "not_an_adapter",
        )
    if not weights.is_file():
        hint = (
            " (adapter_model.bin found: re-save with safe_serialization=True)"
            if (src / "adapter_model.bin").exists()
            else ""
        )
        raise AdapterError(f"not a PEFT adapter: {WEIGHTS} is missing{hint}", "not_an_adapter")


def _validate(
    src: Path,
    config: Any,
    base_model: str,
    max_rank: int,
    base_config: dict[str, Any] | None,
    base_model_dir: Path | None,
) -> AdapterInfo:
    cfg_path, weights = src / CONFIG, src / WEIGHTS
    if not isinstance(config, dict):
        raise AdapterError(f"{CONFIG} must hold a JSON object (a PEFT config)", "not_an_adapter")
    if str(config.get("peft_type", "")).upper() != "LORA":
        raise AdapterError(
            f"{CONFIG} describes peft_type {config.get('peft_type')!r}; "
            "only LORA adapters are served",
            "not_lora",
        )
    declared = str(config.get("base_model_name_or_path") or "")
    if not _same_base(declared, base_model, base_model_dir):
        raise AdapterError(
            f"adapter was trained on {declared or 'an unnamed base'!r}, but this server serves "
            f"{base_model!r}; train it on the served base model",
            "wrong_base_model",
        )
    rank = config.get("r")
    if type(rank) is not int or rank < 1:
        raise AdapterError(
            f"{CONFIG}: 'r' must be a positive integer, got {rank!r:.60}", "invalid_rank"
        )
    if rank > max_rank:
        raise AdapterError(
            f"adapter rank {rank} is above the engine's max LoRA rank {max_rank}; "
            f"retrain with r <= {max_rank} or raise LORAPLEX_VLLM_MAX_LORA_RANK",
            "rank_too_high",
        )
    if config.get("modules_to_save"):
        raise AdapterError(
            f"adapter saves modules_to_save={config['modules_to_save']}, which vLLM cannot serve; "
            "train without modules_to_save (LoRA weights only)",
            "modules_to_save",
        )
    alpha = _alpha(config.get("lora_alpha"), rank)
    targets = _targets(config.get("target_modules"))
    header = read_safetensors_header(weights)
    _check_opens(weights)
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    if not tensors:
        raise AdapterError(f"{WEIGHTS} holds no tensors", "corrupt_weights")
    if base_config is not None:
        _check_shapes(tensors, rank, base_config)
    return AdapterInfo(
        base_model=base_model,
        rank=rank,
        alpha=alpha,
        target_modules=targets,
        digest=sha256_file(weights),
        size_bytes=weights.stat().st_size + cfg_path.stat().st_size,
        config=config,
    )


def _alpha(value: Any, rank: int) -> float:
    """`lora_alpha` as a positive finite number (peft's scale is alpha / r); missing means r."""
    if value is None:
        return float(rank)
    if type(value) in (int, float):
        try:
            alpha = float(value)
        except OverflowError:  # an int too large for a float
            alpha = math.inf
        if math.isfinite(alpha) and alpha > 0:
            return alpha
    raise AdapterError(
        f"{CONFIG}: 'lora_alpha' must be a positive number, got {value!r:.60}", "invalid_alpha"
    )


def _targets(value: Any) -> list[str]:
    """`target_modules`: peft accepts a list of module names or one name (a regex)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list) and all(isinstance(t, str) for t in value):
        return sorted(value)
    raise AdapterError(
        f"{CONFIG}: 'target_modules' must be a list of module names, got {value!r:.60}",
        "invalid_target_modules",
    )


def _check_shapes(tensors: dict[str, Any], rank: int, base_config: dict[str, Any]) -> None:
    shapes = module_shapes(base_config)
    layers = int(base_config["num_hidden_layers"])
    for name, meta in tensors.items():
        match = LAYER_RE.search(name)
        if match is None:
            raise AdapterError(
                f"tensor {name!r} is not a LoRA weight of a decoder layer projection; vLLM serves "
                "LoRA on q/k/v/o and gate/up/down projections",
                "unsupported_module",
            )
        layer, module, which = int(match[1]), match[2], match[3]
        if layer >= layers:
            raise AdapterError(
                f"tensor {name!r} targets layer {layer}, but the base model has {layers} layers",
                "shape_mismatch",
            )
        if module not in shapes:
            raise AdapterError(
                f"tensor {name!r} targets unknown module {module!r}", "unsupported_module"
            )
        fan_in, fan_out = shapes[module]
        want = [rank, fan_in] if which == "A" else [fan_out, rank]
        if list(meta["shape"]) != want:
            raise AdapterError(
                f"tensor {name!r} has shape {meta['shape']}, expected {want} for the base model: "
                "the adapter was trained on a different architecture",
                "shape_mismatch",
            )
