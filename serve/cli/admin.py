"""`loraplex admin ...`: the operator's own credentials."""

from __future__ import annotations

import typer

from serve import bootstrap
from serve.cli.common import ConfigOpt, Typer, err, load_settings

app = Typer(help="Operator credentials: rotate the admin key.")


@app.command("rotate-key")
def rotate_key(config: ConfigOpt = None) -> None:
    """Make a new admin key (printed alone on stdout, once) and retire the old one.

    Running gateways take it up on their next admin request. A key set by LORAPLEX_ADMIN_KEY
    is changed where it is set.

    Example: ADMIN=$(loraplex admin rotate-key)
    """
    settings = load_settings(config)
    typer.echo(bootstrap.rotate_admin_key(settings))
    err.print(f"new admin key written to {settings.data_dir / 'admin_key'}; the old one is void")
