"""`python -m serve.cli ...`: the `loraplex` command without its console script."""

from serve.cli import app

app()
