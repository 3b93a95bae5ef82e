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
from training.evaluate import DEFAULT_GENERAL_LIMIT

EvalBackend = Annotated[
    str,
    typer.Option(
        help="Who generates: auto (a running vLLM when there is one, else vLLM's offline "
        "engine), server, vllm (offline engine) or transformers (one at a time)."
    ),
]
VllmUrlOpt = Annotated[
    str | None, typer.Option("--vllm-url", help="A running vLLM server to generate with.")
]
GeneralLimitOpt = Annotated[
    int, typer.Option(help="General-ability items scored for forgetting (0: none).")
]


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
    eval_limit: Annotated[
        int, typer.Option(help="With --register: held-out examples the gate evaluates.")
    ] = 50,
    general_limit: GeneralLimitOpt = DEFAULT_GENERAL_LIMIT,
    backend: EvalBackend = "auto",
    vllm_url: VllmUrlOpt = None,
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
        # The gate every way in passes: evaluated first, promoted only on GO.
        from training.evaluate import evaluate as run_eval

        err.print("evaluating before registering (the gates decide whether it is promoted)")
        report = run_eval(
            result_dir,
            data,
            cfg.base_model_dir,
            base_model_name=cfg.base_model_name,
            limit=eval_limit,
            general_limit=general_limit,
            **engine_for(settings, backend, vllm_url),
        )
        _show_eval(report, err)  # stdout keeps the adapter's path, for scripts
        change = asyncio.run(admin.register(result_dir, register, owner=tenant))
        av = change.version
        state = "prod" if av.is_prod else "not promoted: NO-GO"
        err.print(f"registered {av.ref} ({state}; served as {av.served_name})")
        for note in change.notes:
            err.print(f"[yellow]{note}[/yellow]")
        print_sync(change.sync)


def engine_for(settings: Settings, backend: str, vllm_url: str | None) -> dict[str, Any]:
    """The generation back-end to use: a running vLLM where one is known (no engine to start,
    its API key sent), else what `backend` says."""
    key = settings.vllm_api_key.get_secret_value() if settings.vllm_api_key else None
    if vllm_url is None and backend in ("auto", "server"):
        if settings.vllm_urls:
            vllm_url = settings.vllm_urls[0]
        else:
            # The vLLM that `loraplex up` started answers with the key it wrote down.
            local = f"http://{settings.vllm_host}:{settings.vllm_port}"
            stored = settings.data_dir / "vllm_key"
            if stored.is_file() and _answers(local):
                vllm_url, key = local, key or stored.read_text().strip()
    return {"backend": backend, "vllm_url": vllm_url, "vllm_api_key": key}


def _answers(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def evaluate(
    adapter_dir: Annotated[
        Path | None, typer.Argument(help="Adapter directory (runs/NAME/adapter).")
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="Prepared dataset directory (its test split is used).")
    ] = None,
    tenant: Annotated[
        str | None, typer.Option(help="Per-path evaluation of this tenant (with --questions).")
    ] = None,
    questions: Annotated[
        Path | None,
        typer.Option(help="Questions JSONL ({question, answer | any_of | json}) for --tenant."),
    ] = None,
    adapter: Annotated[
        str | None, typer.Option(help="With --tenant: the adapter for the adapter paths.")
    ] = None,
    gateway: Annotated[
        str | None, typer.Option(help="With --tenant: the running gateway (default: configured).")
    ] = None,
    general: Annotated[
        Path | None, typer.Option(help="A general set of your own, scored with the shipped one.")
    ] = None,
    general_limit: GeneralLimitOpt = DEFAULT_GENERAL_LIMIT,
    limit: Annotated[int, typer.Option(help="Held-out examples to evaluate.")] = 50,
    schema: Annotated[
        Path | None, typer.Option(help="JSON Schema the answers must match (schema_match).")
    ] = None,
    gates: Annotated[
        Path | None,
        typer.Option(help="Gates YAML/JSON overriding the recorded ones (shown in the report)."),
    ] = None,
    backend: EvalBackend = "auto",
    vllm_url: VllmUrlOpt = None,
    base_model: Annotated[
        Path | None,
        typer.Option(
            help="Base model directory; default: the one the run's report.json "
            "names, else the served base model."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Report directory (default: the run directory).")
    ] = None,
    config: ConfigOpt = None,
    settings_file: Annotated[Path | None, typer.Option("--settings", hidden=True)] = None,
) -> None:
    """Is the adapter better than the base model, and what does it cost in general ability?

    Generates base and adapter answers in one batch through vLLM (a running server when there
    is one), scores exact match, token F1, ROUGE-L, label accuracy, JSON validity / keys /
    schema and answer loss, checks forgetting on the shipped general set, and applies the gates
    recorded before training: GO / NO-GO (exit 1 on NO-GO), eval.json, eval.md, eval.png and
    per-example JSONL. The verdict is recorded on every registered version with these weights.

    With --tenant and --questions: the questions go through every path the tenant may take on
    the running gateway; per_path.json and best_paths.jsonl (for `router calibrate
    --from-eval`) are written to --out.

    Examples:

        loraplex eval runs/support/adapter --data datasets/support

        loraplex eval runs/json/adapter --data datasets/json --schema person.schema.json

        loraplex eval --tenant acme --questions qa.jsonl --adapter support --out evals/acme
    """
    settings, _ = _settings_and_recipe(config, settings_file, None)
    if tenant is not None or questions is not None:
        if tenant is None or questions is None:
            fail("per-path evaluation needs both --tenant and --questions")
        _evaluate_paths(settings, tenant, questions, adapter, gateway, out)
        return
    if adapter_dir is None or data is None:
        fail("give ADAPTER_DIR and --data (or --tenant and --questions for per-path evaluation)")
    from training.evaluate import evaluate as run
    from training.evaluate import load_gates

    base = base_model or _trained_on(adapter_dir) or settings.resolved_model_dir
    report = run(
        adapter_dir,
        data,
        base,
        base_model_name=None if base_model else settings.base_model,
        general=general,
        general_limit=general_limit,
        gates=load_gates(gates) if gates else None,
        limit=limit,
        out_dir=out,
        **({"schema": schema} if schema else {}),
        **engine_for(settings, backend, vllm_url),
    )
    _show_eval(report)
    recorded = _record_eval(settings, adapter_dir, report)
    if recorded:
        tail = "" if report["go"] else ": promote refuses a NO-GO version unless --force"
        err.print(f"recorded on {', '.join(recorded)}{tail}")
    typer.echo(json.dumps({"go": report["go"]}))
    if not report["go"]:
        raise typer.Exit(1)


def _show_eval(report: dict[str, Any], out: Console | None = None) -> None:
    """The metrics and general-set tables (on stdout unless `out` says otherwise)."""
    out = out or Console()
    table = Table("metric", "base", "adapter", "gate", title=f"evaluation ({report['kind']})")
    for name, m in report.get("metrics", {}).items():
        gate = "; ".join(m.get("gate") or [])
        passed = {True: " [green]pass[/green]", False: " [red]fail[/red]"}.get(m.get("pass"), "")
        table.add_row(name, _num(m.get("base")), _num(m.get("adapter")), f"{gate}{passed}")
    out.print(table)
    general = (report.get("general") or {}).get("categories") or {}
    if general:
        cats = Table("general category", "items", "base", "adapter", "drop")
        for name, c in general.items():
            cats.add_row(
                name,
                str(c.get("items")),
                _num(c.get("base")),
                _num(c.get("adapter")),
                _num(c.get("drop")),
            )
        out.print(cats)
    err.print(f"gates from: {report.get('gates_source')}")
    err.print("[green]GO[/green]" if report["go"] else "[red]NO-GO[/red]")


def _num(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "-"


def _evaluate_paths(
    settings: Settings,
    tenant: str,
    questions: Path,
    adapter: str | None,
    gateway: str | None,
    out: Path | None,
) -> None:
    """Every question through every path the tenant may take, on the running gateway."""
    from serve.routing.paths import ask_paths, paths_for
    from training.evaluate import build_path_table, load_questions, write_path_table

    items = load_questions(questions)  # every bad line reported before anything is asked
    svc = services(settings)
    found = svc.tenants.require(tenant)
    usable = [a.name for a in svc.registry.list_for_tenant(found.id)]
    if adapter is not None and adapter not in usable:
        fail(f"tenant {tenant!r} has no adapter {adapter!r} (its adapters: {usable or 'none'})")
    if adapter is None and len(usable) == 1:
        adapter = usable[0]
    has_docs = svc.retrieval.stats(found.id)["chunks"] > 0
    paths = paths_for(list(found.policy.routes), adapter is not None, has_docs)
    if not paths:
        fail(f"tenant {tenant!r} may take none of the paths (policy: {found.policy.routes})")
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    url = gateway or f"http://{host}:{settings.port}"
    # A key of its own for the run, revoked afterwards: the tenant's keys are never needed.
    key = svc.tenants.add_key(tenant)
    try:
        err.print(f"asking {len(items)} questions through {', '.join(paths)} on {url}")
        run = asyncio.run(ask_paths(url, key, items, paths, adapter))
    finally:
        from serve.tenants.service import hash_key, key_id

        svc.tenants.revoke_key(tenant, key_id(hash_key(key)))
    table = build_path_table(items, run.answers, run.grounded)
    written = write_path_table(table, out or Path("evals") / tenant)
    summary = Table("path", "answered", "accuracy", "mean score", "best for", "grounded")
    for path, s in table["paths"].items():
        summary.add_row(
            path,
            str(s["answered"]),
            f"{s['accuracy']:.3f}",
            f"{s['mean_score']:.3f}",
            str(s["best"]),
            _num(s.get("grounded_mean")),
        )
    Console().print(summary)
    for path, count in run.errors.items():
        err.print(f"[yellow]{count} request(s) on the {path} path failed (scored 0)[/yellow]")
    err.print(f"wrote {written['per_path']} and {written['best_paths']}")


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
