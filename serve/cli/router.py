"""`loraplex router ...`: calibrate a tenant's router on labelled traffic, list, roll back.

A running gateway picks up a new or rolled-back version within a couple of seconds (it re-reads
each tenant's current version at most every 2 s); no restart, no reload call.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from serve.cli.common import ConfigOpt, Typer, err, fail, load_settings, services
from serve.routing.bootstrap import PER_PATH, bootstrap_examples, document_texts
from serve.routing.calibration import (
    CalibrationResult,
    Example,
    read_best_paths,
    read_examples,
    write_examples,
)
from serve.routing.fitting import Evaluation

app = Typer(
    help="""Fit, inspect and roll back each tenant's router (what `model: "auto"` decides with).

    Examples:

      loraplex router calibrate --tenant acme golden.jsonl

      loraplex router calibrate --tenant acme --bootstrap --save-golden starter.jsonl

      loraplex router calibrate --tenant acme --from-eval runs/eval-paths

      loraplex router versions --tenant acme

      loraplex router rollback --tenant acme
    """,
)
TenantOpt = Annotated[str, typer.Option("--tenant", "-t", help="The tenant whose router to fit.")]


def _confusion(title: str, ev: Evaluation) -> Table:
    table = Table("label \\ picked", *ev.order, title=title)
    for path, row in zip(ev.order, ev.confusion, strict=True):
        if sum(row):
            table.add_row(path, *[str(n) for n in row])
    return table


def _print(result: CalibrationResult) -> None:
    out = Console()
    sources = ", ".join(f"{n} {s}" for s, n in sorted(result.sources.items()))
    labels = ", ".join(f"{n} {p}" for p, n in sorted(result.labels.items()))
    out.print(f"tenant {result.tenant}: {result.examples} examples ({sources}); labels: {labels}")
    if result.not_allowed:
        err.print(
            f"[yellow]{result.not_allowed} example(s) are labelled with a path this tenant's "
            "policy does not allow (or that has no adapter): they count as misses[/yellow]"
        )
    b, a = result.before, result.after
    out.print(
        f"before ({result.before_version}, on these examples): accuracy {b.accuracy:.1%}, "
        f"macro-F1 {b.macro_f1:.3f}"
    )
    out.print(_confusion("before", b))
    folds = f"{result.folds}-fold cross-validated" if result.folds else "not cross-validated"
    out.print(
        f"after ({result.kind}, {folds}): accuracy {a.accuracy:.1%}, macro-F1 {a.macro_f1:.3f}"
    )
    out.print(_confusion("after", a))
    cands = ", ".join(f"{k} {v:.1%}" for k, v in result.candidates.items())
    out.print(f"candidates (cross-validated accuracy): {cands}")
    if result.version is not None:
        out.print(f"stored as {result.version.label}: auto requests of {result.tenant} use it now")
    else:
        out.print("dry run: nothing stored")


@app.command("calibrate")
def calibrate(
    tenant: TenantOpt,
    golden: Annotated[
        list[Path] | None,
        typer.Argument(help='Golden sets: JSONL of {"prompt" or "messages", "route", "adapter"?}.'),
    ] = None,
    from_eval: Annotated[
        list[Path] | None,
        typer.Option("--from-eval", help="An eval output DIR holding best_paths.jsonl."),
    ] = None,
    bootstrap: Annotated[
        bool,
        typer.Option(
            "--bootstrap",
            help="Add a starter set made from the tenant's adapters' exemplars, its documents "
            "and shipped general prompts.",
        ),
    ] = False,
    dataset: Annotated[
        list[str] | None,
        typer.Option(
            "--dataset",
            help="ADAPTER=DIR: a prepared dataset of that adapter; --bootstrap adds its "
            "held-out prompts (the digest must match the adapter's lineage).",
        ),
    ] = None,
    per_path: Annotated[
        int, typer.Option(help="--bootstrap: examples per path at most.")
    ] = PER_PATH,
    save_golden: Annotated[
        Path | None, typer.Option(help="Write every example used, as a golden set to review.")
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Fit and report; store nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Fit TENANT's router on labelled examples; print accuracy and confusion before and after.

    The fit is logistic regression over the routing signals, or the two thresholds tuned when
    examples are few, whichever cross-validates better. It is stored as the tenant's next
    version (v1, v2, ...) and used from then on; `router rollback` goes back.

    Examples:

      loraplex router calibrate --tenant acme golden.jsonl

      loraplex router calibrate --tenant acme --bootstrap --dataset orders=datasets/orders
    """
    svc = services(load_settings(config))
    found = svc.tenants.require(tenant)
    examples: list[Example] = []
    for path in golden or []:
        examples += read_examples(path)
    for directory in from_eval or []:
        examples += read_best_paths(directory)
    if bootstrap:
        datasets: dict[str, Path] = {}
        for item in dataset or []:
            name, sep, where = item.partition("=")
            if not sep or not name or not where:
                fail(f"--dataset takes ADAPTER=DIR, got {item!r}")
            datasets[name] = Path(where)
        adapters = [a for a in svc.adapter_catalog.list_for_tenant(found.id) if a.exemplars]
        starter = bootstrap_examples(
            adapters,
            document_texts(svc.retrieval, found.id),
            datasets=datasets,
            per_path=per_path,
        )
        if not as_json:
            counts = {
                p: sum(e.route == p for e in starter)
                for p in ("prompt", "rag", "adapter", "combined")
            }
            typer.echo("bootstrap: " + ", ".join(f"{n} {p}" for p, n in counts.items()))
        examples += starter
    if not examples:
        fail("give a golden set, --from-eval DIR or --bootstrap")
    if save_golden is not None:
        write_examples(save_golden, examples)
        if not as_json:
            typer.echo(f"wrote {len(examples)} examples to {save_golden}")
    result = svc.calibration.calibrate(found, examples, store=not dry_run)
    if as_json:
        version = result.version.label if result.version else None
        typer.echo(
            json.dumps({"version": version, "kind": result.kind, **result.report()}, indent=2)
        )
        return
    _print(result)


@app.command("rollback")
def rollback(tenant: TenantOpt, config: ConfigOpt = None) -> None:
    """Return TENANT's router to the version used before the current one (down to the policy's
    thresholds).

    Example: loraplex router rollback --tenant acme
    """
    svc = services(load_settings(config))
    back = svc.calibration.rollback(svc.tenants.require(tenant))
    typer.echo(f"{tenant}: router is now {back.label if back else 'thresholds (the policy)'}")


@app.command("versions")
def versions(tenant: TenantOpt, config: ConfigOpt = None) -> None:
    """List TENANT's router versions: kind, examples, accuracy before and after, which is used.

    Example: loraplex router versions --tenant acme
    """
    svc = services(load_settings(config))
    svc.tenants.require(tenant)
    table = Table("version", "in use", "kind", "examples", "before", "after (cv)", "created")
    listed = svc.router_versions.list(tenant)
    for v in listed:
        r = v.report
        table.add_row(
            v.label,
            "*" if v.current else "",
            v.kind,
            str(r.get("examples", "")),
            f"{r.get('before', {}).get('accuracy', 0):.1%}",
            f"{r.get('after', {}).get('accuracy', 0):.1%}",
            v.created_at.strftime("%Y-%m-%d %H:%M"),
        )
    Console().print(table)
    if not any(v.current for v in listed):
        typer.echo(f"{tenant} uses its policy's thresholds")
