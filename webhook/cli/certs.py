"""`ollama-guard certs`: a CA and the webhook's serving certificate, written to files (design §13)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from webhook.cli.app import app, err, fail


@app.command()
def certs(
    service: Annotated[str, typer.Option(help="Service name")] = "ollama-guard",
    namespace: Annotated[str, typer.Option(help="Service namespace")] = "ollama-guard-system",
    out: Annotated[Path, typer.Option(help="Output directory")] = Path("certs"),
    days: Annotated[int, typer.Option(help="Validity in days", min=1, max=3650)] = 365,
) -> None:
    """Write a CA and an ECDSA P-256 serving certificate; print the base64 caBundle."""
    from webhook.install.certs import build_bundle, write_bundle

    try:
        bundle = build_bundle(service=service, namespace=namespace, days=days)
    except ValueError as exc:
        raise fail(str(exc)) from None
    written = write_bundle(bundle, out)
    for _name, path in sorted(written.items()):
        err.print(f"wrote {path}", highlight=False)
    typer.echo(bundle.ca_bundle_b64)
