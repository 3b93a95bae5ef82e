"""`loraplex train` and `loraplex eval`: from a prepared dataset to an adapter the registry takes.

loraplex data prepare raw.jsonl --out datasets/support
loraplex train --data datasets/support --out runs/support --register support --tenant acme
loraplex eval runs/support/adapter --data datasets/support
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from serve.cli.common import (
    ConfigOpt,
    config_help,
    config_values,
    err,
    fail,
    load_settings,
    print_sync,
    services,
)
from serve.settings import Settings
from training.config import TrainConfig


def _settings_and_recipe(
    config: Path | None, settings_file: Path | None, train_config: Path | None
) -> tuple[Settings, Path | None]:
    """`--config` is the loraplex settings file in every command. Before, `train --config` named
    the training YAML and `--settings` the loraplex settings: both spellings keep working, with
    a word about the new ones."""
    if settings_file is not None:
        err.print("[yellow]--settings is deprecated: use --config for the settings file[/yellow]")
        config = config or settings_file
    if config is not None and train_config is None and _is_training_yaml(config):
        err.print(
            f"[yellow]{config} holds training fields: --config now names the settings "
            "file; pass a training config as --train-config (read as one this time)"
            "[/yellow]"
        )
        return load_settings(None), config
    return load_settings(config), train_config


def _is_training_yaml(path: Path) -> bool:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return False
    fields = set(TrainConfig.__dataclass_fields__)
    return isinstance(data, dict) and bool(data) and set(data) <= fields


def train(
    data: Annotated[Path, typer.Option(help="Prepared dataset directory (loraplex data prepare).")],
    out: Annotated[
        Path, typer.Option(help="Run directory: adapter/, checkpoints/, report, loss.png.")
    ],
    qlora: Annotated[
        bool, typer.Option(help=config_help(TrainConfig, "qlora", "4-bit nf4 base model."))
    ] = False,
    dpo: Annotated[bool, typer.Option(help="Preference tuning on preference.jsonl.")] = False,
    epochs: Annotated[float | None, typer.Option(help=config_help(TrainConfig, "epochs"))] = None,
    max_steps: Annotated[
        int | None, typer.Option(help=config_help(TrainConfig, "max_steps"))
    ] = None,
    rank: Annotated[int | None, typer.Option(help=config_help(TrainConfig, "rank"))] = None,
    lr: Annotated[
        float | None, typer.Option(help=config_help(TrainConfig, "learning_rate"))
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help=config_help(TrainConfig, "batch_size"))
    ] = None,
    train_config: Annotated[
        Path | None,
        typer.Option("--train-config", help="Training config YAML (TrainConfig fields)."),
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint in OUT.")] = False,
    base_model: Annotated[
        Path | None,
        typer.Option(
            help="A local Hugging Face model directory to train on instead of the "
            "served base model; the adapter records its directory name as the base."
        ),
    ] = None,
    sweep: Annotated[
        bool, typer.Option(help="Grid over rank x lr; best by validation loss.")
    ] = False,
    sweep_ranks: Annotated[str, typer.Option(help="Sweep ranks, comma-separated.")] = "4,8,16",
    sweep_lrs: Annotated[
        str, typer.Option(help="Sweep learning rates, comma-separated.")
    ] = "1e-4,2e-4,5e-4",
    register: Annotated[
        str | None, typer.Option(help="Register the adapter under this name.")
    ] = None,
    tenant: Annotated[str | None, typer.Option(help="Owner tenant when registering.")] = None,
    config: ConfigOpt = None,
    settings_file: Annotated[Path | None, typer.Option("--settings", hidden=True)] = None,
) -> None:
    """Fine-tune a LoRA (or QLoRA) adapter on the served base model.

    Loss is on assistant answers only, with the model's own chat template. Validation loss is
    tracked, the best checkpoint kept, early stopping on; a loss curve and a report are written.
    Flags override the --train-config YAML, which overrides the TrainConfig defaults.

    Examples:

        loraplex train --data datasets/support --out runs/support

        loraplex train --data ds --out runs/q --qlora --max-steps 50 --rank 16

        loraplex train --data ds --out runs/s --resume          # after an interruption

        loraplex train --data ds --out runs/sw --sweep --sweep-ranks 4,8 --sweep-lrs 2e-4,5e-4

        loraplex train --data ds --out runs/s --register support --tenant acme

        loraplex train --data ds --out runs/m --base-model ~/models/Qwen2.5-0.5B-Instruct
    """
    if tenant is not None and register is None:
        fail("--tenant names the owner for --register NAME; it does nothing without it")
    settings, recipe = _settings_and_recipe(config, settings_file, train_config)
    admin = services(settings).adapters if register else None
    if admin is not None and register is not None:
        # A name that cannot be registered should fail now, not after the training it costs.
        admin.check_registrable(register, tenant)
    options = {**locals(), "qlora": qlora or None}  # an unset flag leaves the YAML's choice
    overrides = config_values(TrainConfig, options, lr="learning_rate", base_model="base_model_dir")
    if base_model is not None:
        overrides["base_model_name"] = base_model.name
    defaults: dict[str, Any] = {
        "base_model_dir": settings.resolved_model_dir,
        "base_model_name": settings.base_model,
    }
    if recipe is not None:
        cfg = TrainConfig.from_yaml(recipe, defaults=defaults, **overrides)
    else:
        cfg = TrainConfig(**{**defaults, **overrides})
    ranks = [cfg.rank]
    if sweep:
        try:
            ranks = [int(r) for r in sweep_ranks.split(",") if r.strip()]
            lrs = [float(x) for x in sweep_lrs.split(",") if x.strip()]
        except ValueError:
            fail(
                "--sweep-ranks takes integers and --sweep-lrs numbers, comma-separated (e.g. "
                "4,8 and 1e-4,5e-4)"
            )
    if max(ranks, default=0) > settings.vllm_max_lora_rank:
        fail(
            f"rank {max(ranks)} is above the server's max LoRA rank "
            f"{settings.vllm_max_lora_rank} (LORAPLEX_VLLM_MAX_LORA_RANK)"
        )
    try:
        if sweep:
            from training.sweep import results_table
            from training.sweep import sweep as run_sweep

            summary = run_sweep(cfg, data, out, ranks=ranks, lrs=lrs, progress=True)
            Console().print(results_table(summary))
            err.print(f"sweep results: {out / 'sweep.json'}")
            out = Path(summary["best"]["dir"])
            result_dir = out / "adapter"
        else:
            if dpo:
                from training.dpo import train_dpo as run
            else:
                from training.sft import train_sft as run
            result = run(cfg, data, out, resume=resume, progress=True)
            result_dir = result.adapter_dir
            rep = result.report
            err.print(
                f"steps {rep['steps']}, train loss {rep['first_train_loss']} -> "
                f"{rep['last_train_loss']}, best val loss {rep['best_val_loss']}, "
                f"{rep['tokens_per_s']} tokens/s"
            )
    except KeyboardInterrupt:
        err.print(
            f"\ninterrupted: checkpoints are in {out / 'checkpoints'}; continue with the "
            "same command plus --resume"
        )
        raise typer.Exit(130) from None
    typer.echo(str(result_dir))
    err.print(f"report: {out / 'report.md'}  loss curve: {out / 'loss.png'}")
    if admin is not None and register is not None:
        change = asyncio.run(admin.register(result_dir, register, owner=tenant))
        err.print(f"registered {change.version.ref} (served as {change.version.served_name})")
        print_sync(change.sync)


def evaluate(
    adapter_dir: Annotated[Path, typer.Argument(help="Adapter directory (runs/NAME/adapter).")],
    data: Annotated[
        Path, typer.Option(help="Prepared dataset directory (its test split is used).")
    ],
    general: Annotated[
        Path | None, typer.Option(help="General chat JSONL to check forgetting.")
    ] = None,
    limit: Annotated[int, typer.Option(help="Examples to evaluate.")] = 50,
    base_model: Annotated[
        Path | None,
        typer.Option(
            help="Base model directory; default: the one the run's report.json "
            "names, else the served base model."
        ),
    ] = None,
    config: ConfigOpt = None,
    settings_file: Annotated[Path | None, typer.Option("--settings", hidden=True)] = None,
) -> None:
    """Compare the adapter with the base model on held-out data; GO / NO-GO by the gates.

    Exits 1 on NO-GO, so scripts can gate promotion on it. The report is recorded on every
    registered version with the same weights (lineage, and the promotion gate).

    Example: loraplex eval runs/support/adapter --data datasets/support
    """
    from training.evaluate import evaluate as run

    settings, _ = _settings_and_recipe(config, settings_file, None)
    base = base_model or _trained_on(adapter_dir) or settings.resolved_model_dir
    report = run(adapter_dir, data, base, general=general, limit=limit)
    table = Table("metric", "base", "adapter")
    for key in report["adapter"]:
        table.add_row(key, f"{report['base'][key]:.4f}", f"{report['adapter'][key]:.4f}")
    Console().print(table)
    for check, ok in report["checks"].items():
        err.print(f"{'[green]pass[/green]' if ok else '[red]fail[/red]'}  {check}")
    recorded = _record_eval(settings, adapter_dir, report)
    if recorded:
        err.print(
            f"recorded on {', '.join(recorded)}"
            + ("" if report["go"] else ": promote refuses a NO-GO version unless --force")
        )
    typer.echo(json.dumps({"go": report["go"]}))
    if not report["go"]:
        raise typer.Exit(1)


def _record_eval(settings: Settings, adapter_dir: Path, report: dict[str, Any]) -> list[str]:
    """Attach the report to registered versions with the same weights (lineage); their refs."""
    from adapters.validation import sha256_file

    weights = Path(adapter_dir) / "adapter_model.safetensors"
    if not weights.is_file():
        return []
    registry = services(settings).registry
    return [av.ref for av in registry.record_eval(sha256_file(weights), report)]


def _trained_on(adapter_dir: Path) -> Path | None:
    """The base model directory the run's report.json (beside the adapter) records."""
    report = Path(adapter_dir).parent / "report.json"
    if not report.is_file():
        return None
    recorded = json.loads(report.read_text()).get("config", {}).get("base_model_dir")
    return Path(recorded) if recorded else None
