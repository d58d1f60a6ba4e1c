"""`ollama-guard manifests`: the install YAML for clusters without cert-manager (design §13)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from webhook.cli.app import app, fail


@app.command()
def manifests(
    namespace: Annotated[str, typer.Option(help="Namespace to install into")] = "ollama-guard-system",
    ca_bundle: Annotated[
        Path | None, typer.Option(help="CA certificate (PEM or base64) for the webhooks' caBundle")
    ] = None,
    tls_dir: Annotated[
        Path | None, typer.Option(help="Directory with tls.crt, tls.key (and ca.crt) to include as the Secret")
    ] = None,
    image: Annotated[str, typer.Option(help="Container image")] = "ghcr.io/ollama-guard/ollama-guard:0.1.0",
) -> None:
    """Print the full install YAML (the self-signed overlay's content) with the caBundle filled."""
    from webhook.install.manifests import ca_bundle_from_text, read_tls_dir, render_install_yaml

    try:
        bundle = ca_bundle_from_text(ca_bundle.read_text(encoding="utf-8")) if ca_bundle else None
        tls = read_tls_dir(tls_dir) if tls_dir else None
        typer.echo(render_install_yaml(namespace=namespace, ca_bundle_b64=bundle, image=image, tls=tls), nl=False)
    except (OSError, ValueError) as exc:
        raise fail(str(exc)) from None
