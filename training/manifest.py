"""Writing a prepared dataset: split files, manifest (digests, lineage), report; all or nothing.

Everything is written into a temporary sibling directory first and renamed into place, so a
failure (or a kill) never leaves a half-written dataset where training would pick it up.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from adapters.validation import sha256_file
from training.errors import TrainingError
from training.formats import rejection_summary, write_jsonl


@dataclass
class Report:
    """What curation did: inputs, rejected lines, removals per reason with samples, PII found."""

    inputs: dict[str, int] = field(default_factory=dict)
    rejected_lines: list[tuple[str, int, str]] = field(default_factory=list)
    removed: dict[str, int] = field(default_factory=dict)
    samples: dict[str, list[Any]] = field(default_factory=dict)
    pii_found: dict[str, int] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)
    mixed_in: int = 0


def write_dataset(
    out_dir: Path,
    splits: dict[str, list[dict[str, Any]]],
    report: Report,
    config: dict[str, Any],
    inputs: list[Path],
    eval_sets: list[Path],
    mix: Path | None,
    exemplars: list[str] | None = None,
    gates: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write split files, manifest.json, report.json and report.md atomically; return the manifest.

    `exemplars` are typical task prompts, recorded for the router when the adapter is registered;
    `gates` the evaluation gates fixed for adapters trained on this data.
    """
    out_dir = check_out_dir(out_dir, [*inputs, *eval_sets, *([mix] if mix else [])])
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        files: dict[str, dict[str, Any]] = {}
        for name, rows in splits.items():
            if name.startswith("preference") and not rows:
                continue
            write_jsonl(tmp / f"{name}.jsonl", rows)
            files[name] = {"file": f"{name}.jsonl", "count": len(rows),
                           "sha256": sha256_file(tmp / f"{name}.jsonl")}  # fmt: skip
        # One digest for the dataset as a whole: lineage records it on every adapter version.
        digest = hashlib.sha256("".join(f["sha256"] for f in files.values()).encode()).hexdigest()
        manifest = {
            "dataset_digest": digest,
            "splits": files,
            "sources": [{"path": str(p), "sha256": sha256_file(p)} for p in inputs],
            "eval_sets": [{"path": str(p), "sha256": sha256_file(p)} for p in eval_sets],
            "mix": {"path": str(mix), "sha256": sha256_file(mix), "examples": report.mixed_in}
            if mix
            else None,
            "config": config,
            "removed": report.removed,
            "rejected_lines": len(report.rejected_lines),
            "rejected_by_reason": rejection_summary(report.rejected_lines),
            "pii_found": report.pii_found,
            "exemplars": list(exemplars or []),
            "gates": gates,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        (tmp / "report.json").write_text(json.dumps(asdict(report), indent=2, default=str))
        (tmp / "report.md").write_text(render_report(report, manifest))
        _replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def check_out_dir(out_dir: Path, reads: list[Path]) -> Path:
    """`out_dir`, absolute, once it is safe to replace; TrainingError saying why not.

    Replacing is safe only for a new path, an empty directory or an earlier prepared dataset
    (it has manifest.json): anything else may hold the user's own files, raw data included.
    """
    out_dir = Path(os.path.abspath(out_dir))  # ".." folded, symlinks kept (the link is replaced)
    cwd = Path.cwd()
    if out_dir.resolve() in (cwd, *cwd.parents):
        raise TrainingError(
            f"--out {out_dir} is the current directory or one above it and would be replaced: "
            "choose another --out, e.g. a new directory such as datasets/NAME",
            "invalid_output_dir",
        )
    if out_dir.exists():
        if not out_dir.is_dir():
            raise TrainingError(
                f"--out {out_dir} is a file, not a directory: choose another --out",
                "invalid_output_dir",
            )
        if not (out_dir / "manifest.json").is_file() and any(out_dir.iterdir()):
            raise TrainingError(
                f"--out {out_dir} already holds files and is not a prepared dataset (no "
                "manifest.json); it would be replaced: choose another --out (a new or empty "
                "directory, or one written by `loraplex data prepare`)",
                "invalid_output_dir",
            )
    for path in reads:
        if out_dir.resolve() in Path(path).resolve().parents:
            raise TrainingError(
                f"{path} lies inside --out {out_dir}, which is replaced: choose another --out "
                "or move the file out first",
                "invalid_output_dir",
            )
    return out_dir


def _replace(src: Path, dst: Path) -> None:
    """Move `src` to `dst`; an existing `dst` is moved aside first and removed only afterwards."""
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}-old")
        shutil.rmtree(old, ignore_errors=True)
        dst.rename(old)
    src.rename(dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def render_report(report: Report, manifest: dict[str, Any]) -> str:
    """The Markdown report: splits, removals per reason, malformed lines, PII, samples."""
    lines = ["# Data preparation report", "", "## Splits", "", "| split | examples |", "|---|---|"]
    lines += [f"| {k} | {v['count']} |" for k, v in manifest["splits"].items()]
    if report.mixed_in:
        lines += ["", f"General-instruction examples mixed into train: {report.mixed_in}"]
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
    lines += ["", "## Lineage", ""]
    lines += [f"- source `{s['path']}` sha256 `{s['sha256']}`" for s in manifest["sources"]]
    lines += [f"- split `{k}` sha256 `{v['sha256']}`" for k, v in manifest["splits"].items()]
    lines += ["", f"Dataset digest: `{manifest['dataset_digest']}`", ""]
    return "\n".join(lines)
