"""The `ollama-guard` console script: every command module registered on the one typer `app`."""

from __future__ import annotations

import sys

from webhook.cli import audit, catalog, certs, estimate, manifests, serve, timeslicing
from webhook.cli.app import app

# imported for their `@app.command()` registrations
COMMANDS = (audit, catalog, certs, estimate, manifests, serve, timeslicing)


def main() -> None:
    try:
        app()
    except BrokenPipeError:
        sys.exit(1)
