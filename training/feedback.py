"""Datasets from traffic: feedback corrections become the next dataset version.

Each feedback with a correction becomes an instruction example (its prompt messages, then the
correction as the assistant's answer); a down-voted answer that was captured, with its
correction, also becomes a preference pair (prompt, chosen = correction, rejected = answer).
Both then go through the same curation as `loraplex data prepare` (`training.curation.prepare`:
PII, quality filters, exact and near duplicates, decontamination against eval sets, splits), and
the manifest records the lineage: which feedback, from which adapter versions, over which dates.

A correction needs its prompt: the feedback's own `messages`, or the request's captured ones.
Feedback on a tenant that does not capture prompts, sent without `messages`, cannot become an
example; it is counted under its reason, never guessed.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from training.curation import PrepareConfig, prepare
from training.errors import TrainingError
from training.formats import write_jsonl
from training.manifest import Report, render_report

NO_CORRECTION = "no correction"
NO_PROMPT = "no prompt (capture off and no messages sent with the feedback)"
NO_ANSWER = "down-vote without a captured answer: no preference pair"
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


@dataclass
class FeedbackExamples:
    """What feedback records turned into, and what they could not."""

    sft: list[dict[str, Any]] = field(default_factory=list)
    preference: list[dict[str, Any]] = field(default_factory=list)
    used: list[str] = field(default_factory=list)  # feedback ids behind an example
    skipped: dict[str, list[str]] = field(default_factory=dict)  # reason -> feedback ids
    adapters: Counter[str] = field(default_factory=Counter)  # NAME@N -> examples
    dates: list[str] = field(default_factory=list)  # when the used feedback was given

    def skip(self, reason: str, feedback_id: str) -> None:
        """Count a record under the reason it gave no example (or no pair)."""
        self.skipped.setdefault(reason, []).append(feedback_id)


def _content(value: Any) -> str:
    if isinstance(value, list):  # OpenAI content parts
        return "".join(str(p.get("text", "")) for p in value if isinstance(p, dict))
    return value if isinstance(value, str) else ""


def prompt_messages(messages: Any) -> list[dict[str, str]]:
    """The conversation up to the last user turn, as chat messages with text content
    ('developer' counts as 'system'; an answer after the last user turn is dropped)."""
    out = []
    for m in messages or []:
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            continue
        text = _content(m.get("content"))
        if text.strip():
            out.append({"role": ROLES[m["role"]], "content": text})
    while out and out[-1]["role"] != "user":
        out.pop()
    # System messages after the first turn break the chat formats curation checks.
    head = [m for m in out[:1] if m["role"] == "system"]
    return head + [m for m in out[len(head) :] if m["role"] != "system"]


def examples_from_feedback(records: list[dict[str, Any]]) -> FeedbackExamples:
    """Instruction examples and preference pairs from feedback records (each a dict with
    `id`, `correction`, `negative`, `messages`, `answer`, `adapter`, `created_at`)."""
    out = FeedbackExamples()
    for r in records:
        fid = str(r["id"])
        correction = (r.get("correction") or "").strip()
        if not correction:
            out.skip(NO_CORRECTION, fid)
            continue
        prompt = prompt_messages(r.get("messages"))
        if not prompt:
            out.skip(NO_PROMPT, fid)
            continue
        out.sft.append({"messages": [*prompt, {"role": "assistant", "content": correction}]})
        answer = (r.get("answer") or "").strip()
        if r.get("negative"):
            if answer and answer != correction:
                out.preference.append(
                    {"prompt": prompt[-1]["content"], "chosen": correction, "rejected": answer}
                )
            elif not answer:
                out.skip(NO_ANSWER, fid)
        out.used.append(fid)
        out.adapters[r.get("adapter") or "(base model)"] += 1
        if r.get("created_at"):
            out.dates.append(str(r["created_at"]))
    return out


def eval_files(paths: list[Path]) -> list[Path]:
    """Eval sets to decontaminate against: files as given; a prepared dataset directory
    stands for its held-out splits (test.jsonl, validation.jsonl)."""
    out: list[Path] = []
    for path in paths:
        if Path(path).is_dir():
            held = [Path(path) / f"{s}.jsonl" for s in ("test", "validation")]
            found = [p for p in held if p.is_file() and p.stat().st_size]
            if not found:
                raise TrainingError(
                    f"{path} has no test.jsonl or validation.jsonl to decontaminate against",
                    "invalid_eval_set",
                )
            out += found
        else:
            out.append(Path(path))
    return out


def build_from_feedback(
    records: list[dict[str, Any]],
    out_dir: Path,
    cfg: PrepareConfig | None = None,
    *,
    eval_sets: list[Path] | None = None,
    lineage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Curate the examples feedback `records` give into `out_dir` (as `data prepare` does);
    return the manifest, whose `lineage` names the feedback, adapter versions and dates.
    `lineage`: more to record (the tenant, the filters used). TrainingError when no record
    gives an example, saying why."""
    built = examples_from_feedback(records)
    if not built.sft:
        reasons = ", ".join(f"{len(ids)} {why}" for why, ids in built.skipped.items())
        hint = ""
        if NO_PROMPT in built.skipped:
            hint = (
                ": corrections need their prompt; this tenant's capture is off, so send the "
                "prompt `messages` with each feedback, or set the tenant's policy capture to "
                "redacted"
            )
        raise TrainingError(
            f"no feedback with a usable correction among {len(records)} record(s)"
            f"{' (' + reasons + ')' if reasons else ''}{hint}",
            "empty_dataset",
        )
    evals = eval_files(eval_sets or [])
    with tempfile.TemporaryDirectory(prefix="loraplex-feedback-") as tmp:
        inputs = [Path(tmp) / "feedback-corrections.jsonl"]
        write_jsonl(inputs[0], built.sft)
        if built.preference:
            inputs.append(Path(tmp) / "feedback-preferences.jsonl")
            write_jsonl(inputs[1], built.preference)
        manifest = prepare(inputs, out_dir, cfg, eval_sets=evals)
    for source in manifest["sources"]:
        source["path"] = "feedback:" + Path(source["path"]).stem.removeprefix("feedback-")
    dates = sorted(built.dates)
    manifest["lineage"] = {
        "kind": "feedback",
        **(lineage or {}),
        "feedback_ids": built.used,
        "skipped": {why: ids for why, ids in built.skipped.items()},
        "adapter_versions": dict(sorted(built.adapters.items())),
        "first_feedback_at": dates[0] if dates else None,
        "last_feedback_at": dates[-1] if dates else None,
        "examples": len(built.sft),
        "preference_pairs": len(built.preference),
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    _rewrite(Path(out_dir), manifest)
    return manifest


def _rewrite(out_dir: Path, manifest: dict[str, Any]) -> None:
    """The manifest and report with the feedback lineage (the split files, and with them the
    dataset digest, are as curation wrote them)."""
    _replace_text(out_dir / "manifest.json", json.dumps(manifest, indent=2))
    data = json.loads((out_dir / "report.json").read_text())
    report = Report(**data)
    lineage = manifest["lineage"]
    text = render_report(report, manifest)
    text += "\n## From feedback\n\n"
    text += f"- feedback used: {len(lineage['feedback_ids'])}\n"
    for version, n in lineage["adapter_versions"].items():
        text += f"- from {version}: {n}\n"
    for why, ids in lineage["skipped"].items():
        text += f"- skipped, {why}: {len(ids)}\n"
    text += f"- dates: {lineage['first_feedback_at']} to {lineage['last_feedback_at']}\n"
    _replace_text(out_dir / "report.md", text)


def _replace_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
