"""`loraplex adapters ...`: register, list, promote, roll back and remove adapters.

The CLI writes the registry (database + artifact store from the settings) through the same
adapter admin service as the gateway's HTTP routes. When a gateway is running, it is then asked to
bring every vLLM replica in line (`POST /v1/adapters/reload`); when none answers, nothing is lost:
a gateway loads an adapter version vLLM does not hold on its first request.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from serve.admin.adapters import Change, read_exemplars
from serve.cli.common import (
    AdminKeyOpt,
    ConfigOpt,
    GatewayOpt,
    Typer,
    config_help,
    err,
    fail,
    load_settings,
    print_sync,
    services,
)
from serve.monitor.canary import CanaryCriteria

app = Typer(
    help="""Register, version, promote, roll back and remove LoRA adapters.

    NAME means the adapter's prod version; NAME@N a given version. Examples:

      loraplex adapters register runs/support/adapter --name support --tenant acme

      loraplex adapters promote support@2

      loraplex adapters rollback support
    """,
)


def _report(change: Change, prod_moved: bool = False) -> None:
    if prod_moved:
        typer.echo(f"{change.version.name} prod -> v{change.version.version}")
    for note in change.notes:
        err.print(f"[yellow]{note}[/yellow]")
    print_sync(change.sync)


@app.command("register")
def register(
    directory: Annotated[Path, typer.Argument(help="PEFT adapter directory.", exists=True)],
    name: Annotated[str, typer.Option(help="Adapter name; registering again adds a version.")],
    tenant: Annotated[str | None, typer.Option(help="Owner tenant (default: admin-owned).")] = None,
    share: Annotated[
        str | None, typer.Option(help="Other tenants, comma-separated; * = all.")
    ] = None,
    promote: Annotated[bool, typer.Option(help="Make this version prod.")] = True,
    force: Annotated[
        bool, typer.Option(help="Register and promote even when eval.json says NO-GO.")
    ] = False,
    exemplars: Annotated[
        Path | None,
        typer.Option(help="Typical prompts (JSON list or one per line) for the router."),
    ] = None,
    config: ConfigOpt = None,
    gateway: GatewayOpt = None,
    admin_key: AdminKeyOpt = None,
) -> None:
    """Validate, store and version an adapter directory.

    DIR holds adapter_config.json + adapter_model.safetensors (peft's save_pretrained).
    Registering identical bytes again under the same name returns the existing version.
    Lineage (report.json, eval.json) and exemplars.json next to the adapter are recorded; a
    NO-GO eval.json keeps the version from becoming prod unless --force.

    Examples:

      loraplex adapters register runs/support/adapter --name support --tenant acme

      loraplex adapters register ./adapter --name faq --share '*' --no-promote
    """
    admin = services(load_settings(config), gateway, admin_key).adapters
    prompts = read_exemplars(exemplars.read_text()) if exemplars else None
    change = asyncio.run(
        admin.register(
            directory,
            name,
            owner=tenant,
            shared_with=(share or "").split(","),
            promote=promote,
            force=force,
            exemplars=prompts,
        )
    )
    av = change.version
    verb = "already registered as" if av.existing else "registered"
    typer.echo(f"{verb} {av.ref}{' (prod)' if av.is_prod else ''} digest {av.digest[:12]}")
    _report(change)


@app.command("list")
def list_(
    tenant: Annotated[str | None, typer.Option(help="Only what this tenant may use.")] = None,
    config: ConfigOpt = None,
) -> None:
    """List adapter versions: prod (or canary share) marked, owner, rank, digest.

    Example: loraplex adapters list --tenant acme
    """
    admin = services(load_settings(config)).adapters
    table = Table("adapter", "version", "prod", "owner", "shared with", "rank", "digest", "created")
    for av in admin.listing(tenant):
        table.add_row(
            av["name"],
            str(av["version"]),
            "*" if av["prod"] else (f"canary {av['canary']}%" if av["canary"] else ""),
            av["owner"] or "(admin)",
            ",".join(av["shared_with"]),
            str(av["rank"]),
            av["digest"][:12],
            av["created_at"][:16].replace("T", " "),
        )
    Console().print(table)


@app.command("promote")
def promote(
    ref: Annotated[str, typer.Argument(help="NAME@VERSION")],
    force: Annotated[
        bool, typer.Option(help="Promote even when its recorded evaluation is NO-GO.")
    ] = False,
    reason: Annotated[
        str, typer.Option(help="Why: recorded on the version when --force overrides a NO-GO.")
    ] = "",
    canary: Annotated[
        int | None,
        typer.Option(
            help="Send this percent (1-99) of NAME's traffic to the version first; prod keeps "
            "the rest."
        ),
    ] = None,
    min_requests: Annotated[
        int | None,
        typer.Option(help=config_help(CanaryCriteria, "min_requests", "With --canary.")),
    ] = None,
    criteria: Annotated[
        str | None,
        typer.Option(
            help="With --canary: JSON of CanaryCriteria fields, e.g. "
            '\'{"max_error_increase": 0.02, "max_latency_ratio": 2}\'.'
        ),
    ] = None,
    config: ConfigOpt = None,
    gateway: GatewayOpt = None,
    admin_key: AdminKeyOpt = None,
) -> None:
    """Make NAME@VERSION the prod version, or with --canary start it as a canary.

    Without --canary, requests for NAME use it from now on (a running canary of it is
    completed). With --canary PCT, that share of NAME's traffic goes to it, sticky per end
    user (OpenAI's `user` field); `adapters canary NAME` compares it with prod, a running
    gateway rolls it back automatically when it is worse (errors, latency, down-votes,
    grounding) after --min-requests, and `adapters promote NAME@V` completes it.
    A version whose `loraplex eval` came out NO-GO is refused unless --force.

    Examples:

      loraplex adapters promote support@2

      loraplex adapters promote support@3 --canary 10 --min-requests 50

      loraplex adapters canary support
    """
    wanted: dict[str, Any] = {}
    if criteria:
        try:
            wanted = json.loads(criteria)
        except json.JSONDecodeError as exc:
            fail(f"--criteria is not valid JSON: {exc}")
        if not isinstance(wanted, dict):
            fail("--criteria must be a JSON object of CanaryCriteria fields")
    if min_requests is not None:
        wanted["min_requests"] = min_requests
    if wanted and canary is None:
        fail("--min-requests and --criteria judge a canary: add --canary PCT")
    admin = services(load_settings(config), gateway, admin_key).adapters
    change = asyncio.run(admin.promote(ref, force, canary, wanted or None, reason))
    _report(change, prod_moved=canary is None)


@app.command("canary")
def canary(
    name: Annotated[str, typer.Argument(help="NAME")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Compare NAME's running canary (or its latest one) with prod.

    Per arm since the canary started: requests, error rate, median latency, down-vote rate,
    mean grounding; then the verdict (worse, and why, once it has served min_requests) and
    the history of NAME's canaries. Stop a canary with `adapters rollback NAME`.

    Example: loraplex adapters canary support
    """
    report = services(load_settings(config)).canaries.report(name)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    current = report["canary"]
    if current is None:
        typer.echo(f"{name} has had no canary (`adapters promote {name}@V --canary PCT`)")
        return
    typer.echo(
        f"canary {current['canary']} vs prod {current['prod']}: {current['percent']}% of the "
        f"traffic, {current['state']}" + (f" ({current['reason']})" if current["reason"] else "")
    )
    table = Table("arm", "version", "requests", "errors", "p50 latency", "down-votes", "grounded")
    for arm in ("prod", "canary"):
        a = current["arms"][arm]
        table.add_row(
            arm,
            a["ref"],
            str(a["requests"]),
            _pct(a["error_rate"]),
            "-" if a["latency_p50_ms"] is None else f"{a['latency_p50_ms']:.0f} ms",
            f"{_pct(a['downvote_rate'])} of {a['feedback']}",
            "-" if a["grounded_mean"] is None else f"{a['grounded_mean']:.2f}",
        )
    Console().print(table)
    verdict = current["verdict"]
    if not verdict["ready"]:
        need = current["criteria"]["min_requests"]
        typer.echo(f"verdict: waiting ({current['arms']['canary']['requests']}/{need} requests)")
    elif verdict["worse"]:
        typer.echo("verdict: worse than prod: " + "; ".join(verdict["reasons"]))
    else:
        typer.echo("verdict: not worse than prod")
    for c in report["history"][:-1]:
        err.print(f"[dim]earlier: {c['canary']} {c['percent']}% {c['state']}: {c['reason']}[/dim]")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


@app.command("rollback")
def rollback(
    name: Annotated[str, typer.Argument(help="NAME")],
    config: ConfigOpt = None,
    gateway: GatewayOpt = None,
    admin_key: AdminKeyOpt = None,
) -> None:
    """Point prod back at the version that was prod before the current one.

    While a canary runs, this stops the canary instead: all traffic goes to prod again, and
    prod stays as it was.

    Example: loraplex adapters rollback support
    """
    admin = services(load_settings(config), gateway, admin_key).adapters
    _report(asyncio.run(admin.rollback(name)), prod_moved=True)


@app.command("remove")
def remove(
    ref: Annotated[str, typer.Argument(help="NAME (all versions) or NAME@VERSION")],
    config: ConfigOpt = None,
    gateway: GatewayOpt = None,
    admin_key: AdminKeyOpt = None,
) -> None:
    """Remove an adapter or one version, stored files included.

    The prod version cannot be removed while other versions remain: promote or roll back first.

    Examples: loraplex adapters remove support@1    loraplex adapters remove support
    """
    admin = services(load_settings(config), gateway, admin_key).adapters
    change = asyncio.run(admin.remove(ref))
    typer.echo("removed " + ", ".join(av.ref for av in change.versions))
    _report(change)


@app.command("gc")
def gc(
    min_age: Annotated[
        float | None,
        typer.Option(
            help="Spare leftovers younger than this many seconds (default: 60 for stored "
            "files, 3600 for staged copies and uploads); 0 when no registration is running."
        ),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Remove what registrations and uploads killed part-way left behind.

    A registration killed at any step never leaves a listed version without its files; it may
    leave stored files no version refers to, a staged copy, or an uploaded archive. Each
    registration collects the old ones; this collects them now and lists what went.

    Example: loraplex adapters gc --min-age 0
    """
    admin = services(load_settings(config)).adapters
    removed = admin.collect_garbage(min_age)
    for kind, names in removed.items():
        for name in names:
            typer.echo(f"removed {kind} {name}")
    if not any(removed.values()):
        err.print("nothing to remove")
