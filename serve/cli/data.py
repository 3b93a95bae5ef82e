"""`loraplex data prepare` and `data from-feedback`: curate instruction data into a dataset
training can use, from files or from the corrections users sent."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from serve.cli.common import (
    ConfigOpt,
    Typer,
    config_help,
    config_values,
    err,
    fail,
    load_settings,
    services,
)
from training.curation import PrepareConfig

app = Typer(help="Curate instruction datasets.")


@app.command("prepare")
def prepare(
    inputs: Annotated[
        list[Path],
        typer.Argument(help="JSONL files: chat, prompt/completion, Alpaca or preference pairs."),
    ],
    out: Annotated[
        Path,
        typer.Option(
            help="Output directory: new, empty, or an earlier prepared dataset (replaced "
            "atomically). Any other existing directory is refused."
        ),
    ],
    eval_set: Annotated[
        list[Path] | None, typer.Option(help="Eval JSONL to decontaminate against (repeatable).")
    ] = None,
    dedup_threshold: Annotated[
        float | None,
        typer.Option(
            help=config_help(
                PrepareConfig,
                "dedup_threshold",
                "MinHash Jaccard for near-duplicates; 1.0 = exact only.",
            )
        ),
    ] = None,
    near_duplicates: Annotated[
        str | None,
        typer.Option(
            help=config_help(
                PrepareConfig,
                "near_duplicates",
                "drop (keep one per cluster) or keep_together (same split).",
            )
        ),
    ] = None,
    pii: Annotated[
        str | None,
        typer.Option(help=config_help(PrepareConfig, "pii", "redact, drop or keep personal data.")),
    ] = None,
    decontam_n: Annotated[
        int | None,
        typer.Option(
            help=config_help(
                PrepareConfig,
                "decontam_n",
                "Word n-gram length that marks overlap with an eval set.",
            )
        ),
    ] = None,
    mix: Annotated[
        Path | None,
        typer.Option(
            help="General instruction JSONL mixed into train (curated like the task data)."
        ),
    ] = None,
    mix_ratio: Annotated[
        float | None,
        typer.Option(
            help=config_help(
                PrepareConfig, "mix_ratio", "With --mix: general examples per train example."
            )
        ),
    ] = None,
    val_fraction: Annotated[
        float | None,
        typer.Option(
            help=config_help(PrepareConfig, "validation_fraction", "Share held out for validation.")
        ),
    ] = None,
    test_fraction: Annotated[
        float | None,
        typer.Option(help=config_help(PrepareConfig, "test_fraction", "Share held out for test.")),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help=config_help(PrepareConfig, "seed", "Split seed."))
    ] = None,
    gates: Annotated[
        Path | None,
        typer.Option(
            help="Gates YAML/JSON the adapters trained on this dataset must pass (recorded in "
            "the manifest before training; default gates otherwise)."
        ),
    ] = None,
) -> None:
    """Validate, dedupe, redact PII, filter, split and decontaminate instruction data.

    Accepts OpenAI chat JSONL, prompt/completion, Alpaca and preference pairs (one format per
    file). Writes train/validation/test.jsonl, manifest.json (digests, lineage) and report.md
    (what was removed and why), all or nothing.

    Examples:

        loraplex data prepare raw.jsonl --out datasets/support

        loraplex data prepare a.jsonl b.jsonl --out ds --eval-set bench.jsonl --pii drop

        loraplex data prepare raw.jsonl --out ds --mix general.jsonl --mix-ratio 0.2
    """
    from training.curation import prepare as run

    if mix_ratio is not None and mix is None:
        fail("--mix-ratio needs --mix FILE (the general examples to mix in)")
    from training.evaluate import load_gates

    options = config_values(PrepareConfig, locals(), val_fraction="validation_fraction")
    recorded = load_gates(gates) if gates else None
    manifest = run(
        inputs, out, PrepareConfig(**options), eval_sets=eval_set, mix=mix, gates=recorded
    )
    table = Table("split", "examples")
    for name, info in manifest["splits"].items():
        table.add_row(name, str(info["count"]))
    for reason, count in sorted(manifest["removed"].items()):
        table.add_row(f"[dim]removed: {reason}[/dim]", str(count))
    if manifest["rejected_lines"]:
        table.add_row("[dim]malformed lines[/dim]", str(manifest["rejected_lines"]))
    Console().print(table)
    err.print(f"report: {out / 'report.md'}  dataset digest: {manifest['dataset_digest'][:12]}")


@app.command("from-feedback")
def from_feedback(
    tenant: Annotated[str, typer.Option(help="Tenant whose feedback to learn from.")],
    out: Annotated[
        Path,
        typer.Option(help="Output directory: new, empty, or an earlier prepared dataset."),
    ],
    adapter: Annotated[
        str | None, typer.Option(help="Only feedback on this adapter (NAME, or NAME@N).")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Only feedback given from this date (2026-12-01).")
    ] = None,
    eval_set: Annotated[
        list[Path] | None,
        typer.Option(
            help="Eval JSONL to decontaminate against, or a prepared dataset directory (its "
            "test and validation splits); repeatable."
        ),
    ] = None,
    pii: Annotated[
        str | None,
        typer.Option(help=config_help(PrepareConfig, "pii", "redact, drop or keep personal data.")),
    ] = None,
    dedup_threshold: Annotated[
        float | None,
        typer.Option(help=config_help(PrepareConfig, "dedup_threshold", "MinHash Jaccard.")),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help=config_help(PrepareConfig, "seed", "Split seed."))
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Turn a tenant's feedback into the next dataset version.

    Each correction becomes an instruction example (the prompt, then the correction as the
    answer); a down-voted answer that was captured becomes a preference pair with its
    correction. They go through the same curation as `data prepare` (PII, filters, dedupe,
    decontamination, splits); manifest.json's `lineage` names the feedback ids, the adapter
    versions they came from and the dates. A correction needs its prompt: captured (the
    tenant's policy `capture` is redacted or full) or sent as `messages` with the feedback.

    Examples:

        loraplex data from-feedback --tenant acme --adapter support --out datasets/support-v2

        loraplex data from-feedback --tenant acme --since 2026-12-01 --out ds \\
            --eval-set datasets/support

        loraplex train --data datasets/support-v2 --out runs/support-v2
    """
    from training.feedback import build_from_feedback

    when = None
    if since is not None:
        try:
            when = datetime.fromisoformat(since)
        except ValueError:
            fail(f"--since must be a date like 2026-12-01 (or an ISO time), got {since!r}")
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
    svc = services(load_settings(config))
    who = svc.tenants.require(tenant)
    records = svc.feedback.dataset_records(who.id, adapter, when)
    if not records:
        scope = (f" on {adapter}" if adapter else "") + (f" since {since}" if since else "")
        fail(f"no feedback from tenant {tenant!r}{scope}")
    options = config_values(PrepareConfig, locals())
    manifest = build_from_feedback(
        records,
        out,
        PrepareConfig(**options),
        eval_sets=eval_set,
        lineage={
            "tenant": who.name,
            "tenant_id": who.id,
            "adapter": adapter,
            "since": since,
            "capture": who.policy.capture,
        },
    )
    lineage = manifest["lineage"]
    table = Table("split", "examples")
    for name, info in manifest["splits"].items():
        table.add_row(name, str(info["count"]))
    for reason, count in sorted(manifest["removed"].items()):
        table.add_row(f"[dim]removed: {reason}[/dim]", str(count))
    for reason, ids in lineage["skipped"].items():
        table.add_row(f"[dim]feedback skipped: {reason}[/dim]", str(len(ids)))
    Console().print(table)
    versions = ", ".join(f"{v} ({n})" for v, n in lineage["adapter_versions"].items())
    err.print(
        f"{len(lineage['feedback_ids'])} feedback used, from {versions}; report: "
        f"{out / 'report.md'}  dataset digest: {manifest['dataset_digest'][:12]}"
    )
    err.print(f"next: loraplex train --data {out} --out runs/NAME")
