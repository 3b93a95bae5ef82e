"""`loraplex data prepare`: curate raw instruction data into a dataset training can use."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from serve.cli.common import Typer, config_help, config_values, err, fail
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
