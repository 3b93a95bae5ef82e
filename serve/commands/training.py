"""`loraplex data prepare`, `loraplex train` and `loraplex eval`: from raw JSONL to a served adapter.

loraplex data prepare raw.jsonl --out datasets/support
loraplex train --data datasets/support --out runs/support --register support --tenant acme
loraplex eval runs/support/adapter --data datasets/support
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

data_app = typer.Typer(no_args_is_help=True)
err = Console(stderr=True)
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="loraplex settings YAML.")]


def _fail(exc: Any) -> None:
    err.print(f"[red]error:[/red] {getattr(exc, 'message', exc)}")
    raise typer.Exit(2)


@data_app.command("prepare")
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
        float, typer.Option(help="MinHash Jaccard for near-duplicates; 1.0 = exact only.")
    ] = 0.8,
    near_duplicates: Annotated[
        str, typer.Option(help="drop (keep one per cluster) or keep_together (same split).")
    ] = "drop",
    pii: Annotated[str, typer.Option(help="redact, drop or keep personal data.")] = "redact",
    decontam_n: Annotated[
        int, typer.Option(help="Word n-gram length that marks overlap with an eval set.")
    ] = 8,
    mix: Annotated[
        Path | None,
        typer.Option(
            help="General instruction JSONL mixed into train (curated like the task data)."
        ),
    ] = None,
    mix_ratio: Annotated[
        float | None,
        typer.Option(help="With --mix: general examples per train example (default 0.2)."),
    ] = None,
    val_fraction: Annotated[float, typer.Option(help="Share held out for validation.")] = 0.1,
    test_fraction: Annotated[float, typer.Option(help="Share held out for test.")] = 0.1,
    seed: Annotated[int, typer.Option(help="Split seed.")] = 0,
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
    from training.curation import PrepareConfig
    from training.curation import prepare as run
    from training.errors import TrainingError

    try:
        if mix_ratio is not None and mix is None:
            raise TrainingError("--mix-ratio needs --mix FILE (the general examples to mix in)")
        ratio = {} if mix_ratio is None else {"mix_ratio": mix_ratio}
        cfg = PrepareConfig(dedup_threshold=dedup_threshold, pii=pii, **ratio,  # type: ignore[arg-type]
                            near_duplicates=near_duplicates, decontam_n=decontam_n,  # type: ignore[arg-type]
                            validation_fraction=val_fraction, test_fraction=test_fraction, seed=seed)  # fmt: skip
        manifest = run(inputs, out, cfg, eval_sets=eval_set, mix=mix)
    except TrainingError as exc:
        _fail(exc)
    table = Table("split", "examples")
    for name, info in manifest["splits"].items():
        table.add_row(name, str(info["count"]))
    for reason, count in sorted(manifest["removed"].items()):
        table.add_row(f"[dim]removed: {reason}[/dim]", str(count))
    if manifest["rejected_lines"]:
        table.add_row("[dim]malformed lines[/dim]", str(manifest["rejected_lines"]))
    Console().print(table)
    err.print(f"report: {out / 'report.md'}  dataset digest: {manifest['dataset_digest'][:12]}")


def train(
    data: Annotated[Path, typer.Option(help="Prepared dataset directory (loraplex data prepare).")],
    out: Annotated[
        Path, typer.Option(help="Run directory: adapter/, checkpoints/, report, loss.png.")
    ],
    qlora: Annotated[bool, typer.Option(help="4-bit nf4 base model (bitsandbytes).")] = False,
    dpo: Annotated[bool, typer.Option(help="Preference tuning on preference.jsonl.")] = False,
    epochs: Annotated[float | None, typer.Option(help="Passes over the data.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many steps.")] = None,
    rank: Annotated[int | None, typer.Option(help="LoRA rank.")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Examples per step.")] = None,
    config: Annotated[
        Path | None, typer.Option(help="Training config YAML (TrainConfig fields).")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint in OUT.")] = False,
    base_model: Annotated[
        Path | None,
        typer.Option(
            help="A local Hugging Face model directory to train on instead of the "
            "served base model; the adapter records its directory name as the base."
        ),
    ] = None,  # fmt: skip
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
    settings_file: Annotated[
        Path | None, typer.Option("--settings", help="loraplex settings YAML.")
    ] = None,
) -> None:
    """Fine-tune a LoRA (or QLoRA) adapter on the served base model.

    Loss is on assistant answers only, with the model's own chat template. Validation loss is
    tracked, the best checkpoint kept, early stopping on; a loss curve and a report are written.
    Flags override the --config YAML, which overrides the defaults.

    Examples:

        loraplex train --data datasets/support --out runs/support

        loraplex train --data ds --out runs/q --qlora --max-steps 50 --rank 16

        loraplex train --data ds --out runs/s --resume          # after an interruption

        loraplex train --data ds --out runs/sw --sweep --sweep-ranks 4,8 --sweep-lrs 2e-4,5e-4

        loraplex train --data ds --out runs/s --register support --tenant acme

        loraplex train --data ds --out runs/m --base-model ~/models/Qwen2.5-0.5B-Instruct
    """
    from serve.cli import load_settings
    from training.config import TrainConfig
    from training.errors import TrainingError

    if tenant is not None and register is None:
        _fail("--tenant names the owner for --register NAME; it does nothing without it")
    settings = load_settings(settings_file)
    # A name that cannot be registered should fail now, not after the training it would cost.
    registry = _registry_for(settings, register, tenant) if register else None
    overrides: dict[str, Any] = {"epochs": epochs, "max_steps": max_steps, "rank": rank, "learning_rate": lr,
                 "batch_size": batch_size, "qlora": qlora or None,
                 "base_model_dir": base_model, "base_model_name": base_model.name if base_model else None}  # fmt: skip
    defaults: dict[str, Any] = {
        "base_model_dir": settings.resolved_model_dir,
        "base_model_name": settings.base_model,
    }
    try:
        if config is not None:
            cfg = TrainConfig.from_yaml(config, defaults=defaults, **overrides)
        else:
            cfg = TrainConfig(
                **{**defaults, **{k: v for k, v in overrides.items() if v is not None}}
            )
        if cfg.rank > settings.vllm_max_lora_rank:
            raise TrainingError(f"rank {cfg.rank} is above the server's max LoRA rank "
                                f"{settings.vllm_max_lora_rank}", "invalid_config")  # fmt: skip
        if sweep:
            from training.sweep import results_table
            from training.sweep import sweep as run_sweep

            try:
                ranks = [int(r) for r in sweep_ranks.split(",") if r.strip()]
                lrs = [float(x) for x in sweep_lrs.split(",") if x.strip()]
            except ValueError:
                raise TrainingError("--sweep-ranks takes integers and --sweep-lrs numbers, "
                                    "comma-separated (e.g. 4,8 and 1e-4,5e-4)", "invalid_config") from None  # fmt: skip
            if max(ranks, default=0) > settings.vllm_max_lora_rank:
                raise TrainingError(f"sweep rank {max(ranks)} is above the server's max LoRA rank "
                                    f"{settings.vllm_max_lora_rank}", "invalid_config")  # fmt: skip
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
            err.print(f"steps {rep['steps']}, train loss {rep['first_train_loss']} -> "
                      f"{rep['last_train_loss']}, best val loss {rep['best_val_loss']}, "
                      f"{rep['tokens_per_s']} tokens/s")  # fmt: skip
    except TrainingError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        err.print(f"\ninterrupted: checkpoints are in {out / 'checkpoints'}; continue with the "
                  "same command plus --resume")  # fmt: skip
        raise typer.Exit(130) from None
    typer.echo(str(result_dir))
    err.print(f"report: {out / 'report.md'}  loss curve: {out / 'loss.png'}")
    if register:
        _register(registry, result_dir, register, tenant)


def _registry_for(settings: Any, name: str, tenant: str | None) -> Any:
    """The registry, once `name` is known to be registrable by `tenant` (None: the admin)."""
    from serve.cli import _tenant_service
    from serve.commands.adapters import open_registry

    if tenant is not None and _tenant_service(settings).get(tenant) is None:
        _fail(f"no tenant named {tenant!r}: create it with `loraplex tenants create {tenant}`")
    registry = open_registry(settings)
    _fail_unless_registrable(registry, name, tenant)
    return registry


def _fail_unless_registrable(registry: Any, name: str, tenant: str | None) -> None:
    """Exit, as registering would fail later, when `name` is malformed or owned by someone else."""
    from adapters.registry import NAME_RE, SERVED_RE

    if not NAME_RE.match(name) or SERVED_RE.match(name):
        _fail(f"--register {name!r} is not a valid adapter name: use 1-63 lowercase letters, "
              "digits, '.', '-' or '_', starting with a letter or digit, not ending in -v<number>")  # fmt: skip
    owners = {av.owner for av in registry.versions(name=name)}
    if owners and owners != {tenant}:
        _fail(f"adapter name {name!r} is taken; choose another --register name")


def _register(registry: Any, adapter_dir: Path, name: str, tenant: str | None) -> None:
    from adapters.errors import AdapterError
    from serve.commands.adapters import _exemplars_beside, _lineage

    try:
        av = registry.register(adapter_dir, name, owner=tenant, lineage=_lineage(adapter_dir),
                               exemplars=_exemplars_beside(adapter_dir))  # fmt: skip
    except AdapterError as exc:
        _fail(exc)
    err.print(f"registered {av.ref} (served as {av.served_name})")


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
    ] = None,  # fmt: skip
    settings_file: Annotated[
        Path | None, typer.Option("--settings", help="loraplex settings YAML.")
    ] = None,
) -> None:
    """Compare the adapter with the base model on held-out data; GO / NO-GO by the gates.

    Exits 1 on NO-GO, so scripts can gate promotion on it.
    """
    from serve.cli import load_settings
    from training.errors import TrainingError
    from training.evaluate import evaluate as run

    settings = load_settings(settings_file)
    try:
        base = base_model or _trained_on(adapter_dir) or settings.resolved_model_dir
        report = run(adapter_dir, data, base, general=general, limit=limit)
    except TrainingError as exc:
        _fail(exc)
    table = Table("metric", "base", "adapter")
    for key in report["adapter"]:
        table.add_row(key, f"{report['base'][key]:.4f}", f"{report['adapter'][key]:.4f}")
    Console().print(table)
    for check, ok in report["checks"].items():
        err.print(f"{'[green]pass[/green]' if ok else '[red]fail[/red]'}  {check}")
    recorded = _record_eval(settings, adapter_dir, report)
    if recorded:
        err.print(f"recorded on {', '.join(recorded)}" + ("" if report["go"] else
                  ": promote refuses a NO-GO version unless --force"))  # fmt: skip
    typer.echo(json.dumps({"go": report["go"]}))
    if not report["go"]:
        raise typer.Exit(1)


def _record_eval(settings: Any, adapter_dir: Path, report: dict[str, Any]) -> list[str]:
    """Attach the report to registered versions with the same weights (lineage); their refs."""
    from serve.commands.adapters import open_registry
    from training.manifest import sha256_file

    weights = Path(adapter_dir) / "adapter_model.safetensors"
    if not weights.is_file():
        return []
    registry = open_registry(settings)
    return [av.ref for av in registry.record_eval(sha256_file(weights), report)]


def _trained_on(adapter_dir: Path) -> Path | None:
    """The base model directory the run's report.json (beside the adapter) records."""
    report = Path(adapter_dir).parent / "report.json"
    if not report.is_file():
        return None
    recorded = json.loads(report.read_text()).get("config", {}).get("base_model_dir")
    return Path(recorded) if recorded else None
