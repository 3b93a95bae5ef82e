"""`loraplex data prepare`: validate, dedupe, redact, filter, split, decontaminate, record lineage.

Output (written to a temp dir, then renamed into place, so a failure leaves nothing half-done):
train.jsonl, validation.jsonl, test.jsonl (chat format), preference.jsonl (if any pairs),
manifest.json (counts, sha256 digests, sources, config) and report.md / report.json.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from training.dedup import clusters, ngrams
from training.errors import TrainingError
from training.formats import load_jsonl, write_jsonl
from training.pii import redact


@dataclass
class PrepareConfig:
    """Curation knobs; defaults suit instruction data of a few hundred to a few thousand rows."""

    dedup_threshold: float = 0.8  # MinHash Jaccard on word 3-grams; 1.0 keeps near-duplicates
    pii: Literal["redact", "drop", "keep"] = "redact"
    min_answer_chars: int = 1
    max_chars: int = 16_000  # whole example; longer ones rarely fit the context anyway
    validation_fraction: float = 0.1
    test_fraction: float = 0.1
    decontam_n: int = 8  # an n-gram shared with an eval set marks an example as contaminated
    mix_ratio: float = 0.0  # general examples added, as a fraction of the task examples
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.dedup_threshold <= 1.0:
            raise TrainingError(f"dedup_threshold must be in (0, 1], got {self.dedup_threshold}")
        if self.pii not in ("redact", "drop", "keep"):
            raise TrainingError(f"pii must be redact, drop or keep, got {self.pii!r}")
        if not (0 <= self.validation_fraction < 1 and 0 <= self.test_fraction < 1
                and self.validation_fraction + self.test_fraction < 1):  # fmt: skip
            raise TrainingError("validation_fraction + test_fraction must be below 1")
        if self.decontam_n < 3:
            raise TrainingError("decontam_n must be at least 3")
        if not 0 <= self.mix_ratio <= 1:
            raise TrainingError("mix_ratio must be between 0 and 1")


@dataclass
class Removal:
    reason: str
    example: dict[str, Any]


@dataclass
class Report:
    inputs: dict[str, int] = field(default_factory=dict)
    rejected_lines: list[tuple[str, int, str]] = field(default_factory=list)
    removed: dict[str, int] = field(default_factory=dict)
    samples: dict[str, list[Any]] = field(default_factory=dict)
    pii_found: dict[str, int] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)


def _text(example: dict[str, Any]) -> str:
    return "\n".join(m["content"] for m in example["messages"])


def _prompt(example: dict[str, Any]) -> str:
    return "\n".join(m["content"] for m in example["messages"] if m["role"] != "assistant")


def _answer(example: dict[str, Any]) -> str:
    return "\n".join(m["content"] for m in example["messages"] if m["role"] == "assistant")


def quality_problem(example: dict[str, Any], cfg: PrepareConfig) -> str | None:
    """Why an example should not be trained on, or None."""
    msgs = example["messages"]
    roles = [m["role"] for m in msgs if m["role"] != "system"]
    if any(m["role"] == "system" for m in msgs[1:]):
        return "wrong role order"
    if (
        not roles
        or roles[0] != "user"
        or roles[-1] != "assistant"
        or any(a == b for a, b in zip(roles, roles[1:], strict=False))
    ):
        return "wrong role order"
    answer = _answer(example).strip()
    if len(answer) < cfg.min_answer_chars:
        return "empty answer"
    if answer.endswith(("...", "…")) or answer.count("```") % 2 == 1:
        return "truncated answer"
    if len(_text(example)) > cfg.max_chars:
        return "too long"
    prompt = _prompt(example).strip().lower()
    if prompt and (answer.lower() == prompt or (len(prompt) > 20 and prompt in answer.lower()
                                                 and len(answer) < 1.2 * len(prompt))):  # fmt: skip
        return "answer repeats the prompt"
    return None


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def prepare(
    inputs: list[Path],
    out_dir: Path,
    cfg: PrepareConfig | None = None,
    eval_sets: list[Path] | None = None,
    mix: Path | None = None,
) -> dict[str, Any]:
    """Curate `inputs` into `out_dir`; returns the manifest."""
    cfg = cfg or PrepareConfig()
    report = Report()
    examples: list[dict[str, Any]] = []
    preference: list[dict[str, Any]] = []
    for path in inputs:
        loaded = load_jsonl(path)
        report.inputs[str(path)] = len(loaded.sft) + len(loaded.preference) + len(loaded.rejected)
        report.rejected_lines += loaded.rejected
        examples += loaded.sft
        preference += loaded.preference
    removed: Counter[str] = Counter()

    def drop(reason: str, example: Any) -> None:
        removed[reason] += 1
        if len(report.samples.setdefault(reason, [])) < 3:
            report.samples[reason].append(example)

    pii_counts: Counter[str] = Counter()
    kept = []
    for ex in examples:
        if cfg.pii != "keep":
            found: Counter[str] = Counter()
            for m in ex["messages"]:
                m["content"], c = redact(m["content"])
                found += c
            pii_counts += found
            if found and cfg.pii == "drop":
                drop("contains personal data", ex)
                continue
        problem = quality_problem(ex, cfg)
        if problem:
            drop(problem, ex)
        else:
            kept.append(ex)
    seen: set[str] = set()
    unique = []
    for ex in kept:
        key = hashlib.sha256(json.dumps(ex["messages"], sort_keys=True).encode()).hexdigest()
        if key in seen:
            drop("exact duplicate", ex)
        else:
            seen.add(key)
            unique.append(ex)
    cluster_ids = clusters([_text(e) for e in unique], cfg.dedup_threshold)
    firsts: dict[int, int] = {}
    deduped = []
    for i, ex in enumerate(unique):
        if cluster_ids[i] in firsts and cfg.dedup_threshold < 1.0:
            drop("near duplicate", ex)
            continue
        firsts[cluster_ids[i]] = i
        deduped.append(ex)
    if eval_sets:
        grams: set[tuple[str, ...]] = set()
        for path in eval_sets:
            loaded = load_jsonl(path)
            for ex in loaded.sft:
                grams |= ngrams(_text(ex), cfg.decontam_n)
        clean = []
        for ex in deduped:
            if ngrams(_text(ex), cfg.decontam_n) & grams:
                drop("overlaps an eval set", ex)
            else:
                clean.append(ex)
        deduped = clean
    if not deduped and not preference:
        raise TrainingError(
            f"no examples left after filtering ({dict(removed)}; {len(report.rejected_lines)} "
            "malformed lines): check the input files and the report's reasons",
            "empty_dataset",
        )
    rng = random.Random(cfg.seed)
    rng.shuffle(deduped)
    n = len(deduped)
    n_test = int(round(n * cfg.test_fraction)) if n >= 10 else 0
    n_val = max(1, int(round(n * cfg.validation_fraction))) if n >= 5 else 0
    splits = {"test": deduped[:n_test], "validation": deduped[n_test : n_test + n_val],
              "train": deduped[n_test + n_val :]}  # fmt: skip
    if mix is not None and cfg.mix_ratio > 0:
        general = load_jsonl(mix).sft
        rng.shuffle(general)
        splits["train"] += general[: int(len(splits["train"]) * cfg.mix_ratio)]
        rng.shuffle(splits["train"])
    report.removed = dict(removed)
    report.pii_found = dict(pii_counts)
    report.splits = {k: len(v) for k, v in splits.items()}
    return _write(out_dir, splits, preference, report, cfg, inputs, eval_sets or [], mix)


def _write(out_dir: Path, splits: dict[str, list[Any]], preference: list[Any], report: Report,
           cfg: PrepareConfig, inputs: list[Path], eval_sets: list[Path], mix: Path | None,
           ) -> dict[str, Any]:  # fmt: skip
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        files = {}
        for name, rows in splits.items():
            write_jsonl(tmp / f"{name}.jsonl", rows)
            files[name] = {
                "file": f"{name}.jsonl",
                "count": len(rows),
                "sha256": sha256_file(tmp / f"{name}.jsonl"),
            }
        if preference:
            write_jsonl(tmp / "preference.jsonl", preference)
            files["preference"] = {"file": "preference.jsonl", "count": len(preference),
                                   "sha256": sha256_file(tmp / "preference.jsonl")}  # fmt: skip
        digest = hashlib.sha256(
            "".join(str(f["sha256"]) for f in files.values()).encode()
        ).hexdigest()
        manifest = {
            "dataset_digest": digest,
            "splits": files,
            "sources": [{"path": str(p), "sha256": sha256_file(p)} for p in inputs],
            "eval_sets": [{"path": str(p), "sha256": sha256_file(p)} for p in eval_sets],
            "mix": {"path": str(mix), "sha256": sha256_file(mix)} if mix else None,
            "config": asdict(cfg),
            "removed": report.removed,
            "rejected_lines": len(report.rejected_lines),
            "pii_found": report.pii_found,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        (tmp / "report.json").write_text(json.dumps(asdict(report), indent=2, default=str))
        (tmp / "report.md").write_text(render_report(report, manifest))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def render_report(report: Report, manifest: dict[str, Any]) -> str:
    lines = ["# Data preparation report", "", "## Splits", "", "| split | examples |", "|---|---|"]
    lines += [f"| {k} | {v['count']} |" for k, v in manifest["splits"].items()]
    lines += ["", "## Removed", "", "| reason | examples |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(report.removed.items())] or ["| (none) | 0 |"]
    lines += ["", f"Malformed lines rejected: {len(report.rejected_lines)}"]
    for file, line, reason in report.rejected_lines[:20]:
        lines.append(f"- {file}:{line}: {reason}")
    lines += ["", "## Personal data found", ""]
    lines += [f"- {k}: {v}" for k, v in sorted(report.pii_found.items())] or ["- none"]
    lines += ["", "## Examples of what was removed", ""]
    for reason, samples in report.samples.items():
        lines.append(f"### {reason}")
        for s in samples:
            lines.append(f"- `{json.dumps(s, ensure_ascii=False)[:300]}`")
    lines += ["", f"Dataset digest: `{manifest['dataset_digest']}`", ""]
    return "\n".join(lines)
