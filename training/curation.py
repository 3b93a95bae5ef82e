"""`loraplex data prepare`: validate, dedupe, redact, filter, split, decontaminate, record lineage.

Output (written to a temp dir, then renamed into place, so a failure leaves nothing half-done):
train.jsonl, validation.jsonl, test.jsonl (chat format), preference.jsonl (if any pairs),
manifest.json (counts, sha256 digests, sources, config) and report.md / report.json.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from training.dedup import clusters, ngrams, normalised
from training.errors import TrainingError
from training.evaluate.gates import Gates
from training.formats import load_jsonl
from training.manifest import Report, check_out_dir, write_dataset
from training.pii import redact

SAMPLES_PER_REASON = 3
EXEMPLARS = 8  # prompts the router compares requests with; a handful describe a task well

Drop = Callable[[str, Any], None]


@dataclass
class PrepareConfig:
    """Curation knobs; defaults suit instruction data of a few hundred to a few thousand rows."""

    dedup_threshold: float = field(
        default=0.8,
        metadata={
            "help": "MinHash Jaccard similarity (word 3-grams) above which examples are near-duplicates; "
            "1.0 turns near-duplicate search off"
        },
    )
    near_duplicates: Literal["drop", "keep_together"] = field(
        default="drop",
        metadata={
            "help": "drop: keep one example per near-duplicate cluster; keep_together: keep them all "
            "(e.g. deliberate paraphrases) but never split a cluster across train and "
            "validation/test"
        },
    )
    pii: Literal["redact", "drop", "keep"] = field(
        default="redact",
        metadata={
            "help": "examples holding personal data (e-mails, phones, card numbers, national ids, "
            "IPs, IBANs): redact it, drop the example, or keep it"
        },
    )
    min_answer_chars: int = field(
        default=1, metadata={"help": "drop examples whose answer is shorter than this"}
    )
    # Longer examples rarely fit a small model's context anyway.
    max_chars: int = field(
        default=16_000, metadata={"help": "drop examples longer than this (all turns together)"}
    )
    validation_fraction: float = field(
        default=0.1,
        metadata={"help": "share held out for validation (loss during training, early stopping)"},
    )
    test_fraction: float = field(
        default=0.1, metadata={"help": "share held out for test (loraplex eval)"}
    )
    decontam_n: int = field(
        default=8,
        metadata={
            "help": "an n-gram of this many words shared with an eval set marks an example as "
            "contaminated"
        },
    )
    # Enough to keep the base model's general behaviour without drowning the task.
    mix_ratio: float = field(
        default=0.2,
        metadata={
            "help": "general examples added (only with a mix file), as a fraction of the train split"
        },
    )
    seed: int = field(default=0, metadata={"help": "seed for the split"})

    def __post_init__(self) -> None:
        if not 0.0 < self.dedup_threshold <= 1.0:
            raise TrainingError(f"dedup_threshold must be in (0, 1], got {self.dedup_threshold}")
        if self.near_duplicates not in ("drop", "keep_together"):
            raise TrainingError(
                f"near_duplicates must be drop or keep_together, got {self.near_duplicates!r}"
            )
        if self.pii not in ("redact", "drop", "keep"):
            raise TrainingError(f"pii must be redact, drop or keep, got {self.pii!r}")
        if not (0 <= self.validation_fraction < 1 and 0 <= self.test_fraction < 1
                and self.validation_fraction + self.test_fraction < 1):  # fmt: skip
            raise TrainingError("validation_fraction + test_fraction must be below 1")
        if self.decontam_n < 3:
            raise TrainingError(f"decontam_n must be at least 3, got {self.decontam_n}")
        if not 0 <= self.mix_ratio <= 1:
            raise TrainingError(f"mix_ratio must be between 0 and 1, got {self.mix_ratio}")
        if self.min_answer_chars < 1 or self.max_chars < 10:
            raise TrainingError("min_answer_chars must be >= 1 and max_chars >= 10")


def _text(example: dict[str, Any]) -> str:
    return "\n".join(m["content"] for m in example["messages"])


def _prompt(example: dict[str, Any]) -> str:
    return "\n".join(m["content"] for m in example["messages"] if m["role"] != "assistant")


def _question(example: dict[str, Any]) -> str:
    return "\n".join(m["content"] for m in example["messages"] if m["role"] == "user")


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
    # An ellipsis or an unclosed code fence at the very end: the answer was cut off.
    if answer.endswith(("...", "…")) or answer.count("```") % 2 == 1:
        return "truncated answer"
    if len(_text(example)) > cfg.max_chars:
        return "too long"
    prompt = _prompt(example).strip().lower()
    if prompt and (answer.lower() == prompt or (len(prompt) > 20 and prompt in answer.lower()
                                                 and len(answer) < 1.2 * len(prompt))):  # fmt: skip
        return "answer repeats the prompt"
    return None


def redact_example(example: dict[str, Any], mode: str) -> Counter[str]:
    """Redact personal data in place (unless mode is keep); return counts per kind."""
    found: Counter[str] = Counter()
    if mode == "keep":
        return found
    if "messages" in example:
        for m in example["messages"]:
            m["content"], c = redact(m["content"])
            found += c
    else:
        for key in ("prompt", "chosen", "rejected"):
            example[key], c = redact(example[key])
            found += c
    return found


def split_by_cluster(
    examples: list[dict[str, Any]], cluster_ids: list[int], cfg: PrepareConfig
) -> dict[str, list[dict[str, Any]]]:
    """Seeded test/validation/train split that keeps every near-duplicate cluster on one side.

    Raises TrainingError when examples exist but none is left for train (one cluster took them).
    """
    groups: dict[int, list[dict[str, Any]]] = {}
    for ex, cid in zip(examples, cluster_ids, strict=True):
        groups.setdefault(cid, []).append(ex)
    order = list(groups.values())
    random.Random(cfg.seed).shuffle(order)
    n = len(examples)
    # Tiny sets: a test split of 0-1 examples measures nothing; validation needs at least one.
    want = {"test": int(round(n * cfg.test_fraction)) if n >= 10 else 0,
            "validation": max(1, int(round(n * cfg.validation_fraction))) if n >= 5 else 0}  # fmt: skip
    splits: dict[str, list[dict[str, Any]]] = {"train": [], "validation": [], "test": []}
    for group in order:
        target = next((s for s in ("test", "validation") if len(splits[s]) < want[s]), "train")
        splits[target] += group
    if examples and not splits["train"]:
        biggest = max(len(g) for g in groups.values())
        raise TrainingError(
            f"no examples left for train: the split put all {n} into validation/test (the "
            f"largest near-duplicate cluster has {biggest}); use --near-duplicates drop, a "
            "higher --dedup-threshold, smaller --val-fraction/--test-fraction, or more distinct "
            "examples",
            "empty_dataset",
        )
    return splits


def prepare(
    inputs: list[Path],
    out_dir: Path,
    cfg: PrepareConfig | None = None,
    eval_sets: list[Path] | None = None,
    mix: Path | None = None,
    gates: Gates | None = None,
) -> dict[str, Any]:
    """Curate `inputs` into `out_dir` (replaced atomically); return the manifest.

    `gates` (default: `Gates()`) are recorded in the manifest: the go / no-go bar is fixed
    before any adapter is trained on this data, and evaluation applies what was recorded.

    Steps, in order: parse and validate (per file format, line-numbered rejections), PII,
    quality filters, exact duplicates, near duplicates (MinHash LSH), decontamination against
    `eval_sets`, split by near-duplicate cluster, then mixing general examples from `mix` into
    train (they pass the same PII, quality, duplicate and eval-overlap checks). Raises
    TrainingError before writing anything when no example survives, and when `out_dir` holds
    anything but an earlier prepared dataset.
    """
    cfg = cfg or PrepareConfig()
    if not inputs:
        raise TrainingError("no input files given", "empty_dataset")
    # Before any work: a refused --out should not cost a full curation run.
    check_out_dir(out_dir, [*inputs, *(eval_sets or []), *([mix] if mix else [])])
    report = Report()
    examples: list[dict[str, Any]] = []
    preference: list[dict[str, Any]] = []
    for path in inputs:
        loaded = load_jsonl(Path(path))
        report.inputs[str(path)] = len(loaded.sft) + len(loaded.preference) + len(loaded.rejected)
        report.rejected_lines += loaded.rejected
        examples += loaded.sft
        preference += loaded.preference
    removed: Counter[str] = Counter()

    def drop(reason: str, example: Any) -> None:
        removed[reason] += 1
        if len(report.samples.setdefault(reason, [])) < SAMPLES_PER_REASON:
            report.samples[reason].append(example)

    pii_counts: Counter[str] = Counter()
    kept = _clean(examples, cfg, pii_counts, drop)
    pairs = _clean(preference, cfg, pii_counts, drop, quality=False)
    unique = _exact_dedup(kept, lambda ex: ex["messages"], drop)
    pairs = _exact_dedup(pairs, lambda p: p, drop)
    cluster_ids = clusters([_text(e) for e in unique], cfg.dedup_threshold)
    if cfg.near_duplicates == "drop":
        firsts: set[int] = set()
        deduped, ids = [], []
        for ex, cid in zip(unique, cluster_ids, strict=True):
            if cid in firsts:
                drop("near duplicate", ex)
                continue
            firsts.add(cid)
            deduped.append(ex)
            ids.append(cid)
        unique, cluster_ids = deduped, ids
    evals = _eval_index(eval_sets or [], cfg.decontam_n)
    unique, cluster_ids = _decontaminate(unique, cluster_ids, evals, cfg.decontam_n, drop)
    if not unique and not pairs:
        raise TrainingError(
            f"no examples left after filtering ({dict(removed)}; {len(report.rejected_lines)} "
            "malformed lines): check the input files and the report's reasons",
            "empty_dataset",
        )
    splits = split_by_cluster(unique, cluster_ids, cfg)
    # The router's exemplars come from task examples only, picked before general ones join train.
    exemplars = [next(m["content"] for m in ex["messages"] if m["role"] == "user")
                 for ex in splits["train"][:EXEMPLARS]] or [p["prompt"] for p in pairs[:EXEMPLARS]]  # fmt: skip
    rng = random.Random(cfg.seed)
    if mix is not None and cfg.mix_ratio > 0:
        general = _general(Path(mix), cfg, evals, report, pii_counts, drop)
        rng.shuffle(general)
        extra = general[: int(len(splits["train"]) * cfg.mix_ratio)]
        report.mixed_in = len(extra)
        splits["train"] += extra
    rng.shuffle(splits["train"])
    # Preference pairs get a validation share too: DPO tracks its loss and stops early on it.
    random.Random(cfg.seed).shuffle(pairs)
    n_val = max(1, int(round(len(pairs) * cfg.validation_fraction))) if len(pairs) >= 5 else 0
    splits["preference"], splits["preference_validation"] = pairs[n_val:], pairs[:n_val]
    report.removed = dict(removed)
    report.pii_found = dict(pii_counts)
    report.splits = {k: len(v) for k, v in splits.items()}
    return write_dataset(out_dir, splits, report, asdict(cfg), list(inputs), list(eval_sets or []),
                         mix, exemplars, (gates or Gates()).to_dict())  # fmt: skip


def _clean(
    rows: list[dict[str, Any]], cfg: PrepareConfig, pii_counts: Counter[str], drop: Drop,
    quality: bool = True,
) -> list[dict[str, Any]]:  # fmt: skip
    """Rows after PII handling (counted into `pii_counts`) and, with `quality`, the quality
    filters (written for instruction examples; preference pairs skip them)."""
    kept = []
    for ex in rows:
        found = redact_example(ex, cfg.pii)
        pii_counts += found
        if found and cfg.pii == "drop":
            drop("contains personal data", ex)
        elif quality and (problem := quality_problem(ex, cfg)):
            drop(problem, ex)
        else:
            kept.append(ex)
    return kept


def _general(
    path: Path, cfg: PrepareConfig, evals: tuple[set[tuple[str, ...]], set[str]], report: Report,
    pii_counts: Counter[str], drop: Drop,
) -> list[dict[str, Any]]:  # fmt: skip
    """General examples fit to mix into train: the task's PII, quality, duplicate and eval-overlap
    checks apply, or a general row could leak personal data, break training (no assistant
    answer) or contaminate the evaluation. Removals are reported as "mix: <reason>"."""
    loaded = load_jsonl(path)
    if not loaded.sft:
        raise TrainingError(
            f"--mix {path} has no instruction examples (chat, prompt/completion or Alpaca)",
            "empty_dataset",
        )
    report.rejected_lines += loaded.rejected

    def mix_drop(reason: str, example: Any) -> None:
        drop(f"mix: {reason}", example)

    rows = _exact_dedup(_clean(loaded.sft, cfg, pii_counts, mix_drop), lambda ex: ex["messages"],
                        mix_drop)  # fmt: skip
    return _decontaminate(rows, [0] * len(rows), evals, cfg.decontam_n, mix_drop)[0]


def _exact_dedup(
    rows: list[dict[str, Any]], key: Callable[[dict[str, Any]], Any], drop: Drop
) -> list[dict[str, Any]]:
    seen: set[str] = set()
    out = []
    for row in rows:
        digest = hashlib.sha256(json.dumps(key(row), sort_keys=True).encode()).hexdigest()
        if digest in seen:
            drop("exact duplicate", row)
        else:
            seen.add(digest)
            out.append(row)
    return out


def _eval_index(eval_sets: list[Path], n: int) -> tuple[set[tuple[str, ...]], set[str]]:
    """The word n-grams of every eval example, and its normalised prompt.

    The prompts catch what n-grams cannot: an eval question shorter than n words has none, so
    a verbatim copy of it in the training data would otherwise pass.
    """
    grams: set[tuple[str, ...]] = set()
    prompts: set[str] = set()
    for path in eval_sets:
        loaded = load_jsonl(Path(path))
        for ex in loaded.sft:
            grams |= ngrams(_text(ex), n)
            prompts.add(normalised(_question(ex)))
        for pair in loaded.preference:
            grams |= ngrams(f"{pair['prompt']}\n{pair['chosen']}", n)
            prompts.add(normalised(pair["prompt"]))
    prompts.discard("")  # a prompt of punctuation only would match every other such prompt
    return grams, prompts


def _decontaminate(
    rows: list[dict[str, Any]], ids: list[int], evals: tuple[set[tuple[str, ...]], set[str]],
    n: int, drop: Drop,
) -> tuple[list[dict[str, Any]], list[int]]:  # fmt: skip
    """Drop examples sharing a word n-gram with an eval example or asking an eval prompt."""
    grams, prompts = evals
    clean, clean_ids = [], []
    for ex, cid in zip(rows, ids, strict=True):
        if ngrams(_text(ex), n) & grams:
            drop("overlaps an eval set", ex)
        elif normalised(_question(ex)) in prompts:
            drop("copies an eval prompt", ex)
        else:
            clean.append(ex)
            clean_ids.append(cid)
    return clean, clean_ids
