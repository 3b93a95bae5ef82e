"""The `loraplex` command line: one typer app, one module per group of commands.

loraplex up                       # model + vLLM + gateway on 127.0.0.1:8000
loraplex models pull              # prepare the base model under ./data/models
KEY=$(loraplex tenants create acme)
loraplex adapters register ./my-adapter --name support --tenant acme
"""

from __future__ import annotations

from serve.cli import (
    adapters,
    admin,
    data,
    docs,
    models,
    monitor,
    route,
    router,
    tenants,
    train,
    up,
)
from serve.cli.common import Typer

app = Typer(
    name="loraplex",
    help="Serve a base model, its LoRA adapters and retrieval behind one OpenAI-compatible API.",
)
app.command("up")(up.up)
app.add_typer(models.app, name="models")
app.add_typer(tenants.app, name="tenants")
app.add_typer(adapters.app, name="adapters", help="Register, version and promote adapters.")
app.add_typer(data.app, name="data", help="Curate instruction datasets (from files or feedback).")
app.command("train")(train.train)
app.command("eval")(train.evaluate)
app.command("ingest")(docs.ingest)
app.add_typer(docs.app, name="docs", help="Search and delete ingested documents.")
app.command("route")(route.route)
app.command("monitor")(monitor.monitor)
app.add_typer(admin.app, name="admin")
app.add_typer(router.app, name="router", help="Calibrate, list and roll back tenants' routers.")
