"""`ollama-guard serve`, `certs` and `manifests`: running the webhook and preparing its install."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from webhook.catalog import Catalog
from webhook.cli import EMBEDDED_SNAPSHOT, SAMPLE_REVIEW, _settings_and_catalog, app, err, fail
from webhook.config import Settings
from webhook.snapshot import SnapshotError, iter_objects
from webhook.state import SnapshotSource, StateSource


def choose_source(
    *, snapshot: Path | None, kubeconfig: Path | None, context: str | None, settings: Settings, catalog: Catalog
) -> tuple[StateSource, str]:
    """--snapshot FILE, else in-cluster config, else kubeconfig, else the embedded default."""
    cluster = settings.cluster_policy()
    if snapshot is None:
        from webhook.cluster import ClusterConfigError
        from webhook.live import live_source  # the kubernetes client is imported only when needed

        try:
            live = live_source(kubeconfig=kubeconfig, context=context, cluster=cluster, catalog=catalog)
        except ClusterConfigError as exc:
            raise fail(f"cannot use the cluster configuration: {exc}") from None
        if live is not None:
            return live, "live cluster (list + watch)"
    path = snapshot or EMBEDDED_SNAPSHOT
    origin = str(path) if snapshot else "embedded default (examples/cluster.yaml)"
    try:
        source = SnapshotSource(iter_objects([path]), cluster=cluster, catalog=catalog, origin=origin)
    except SnapshotError as exc:
        raise fail(str(exc)) from None
    return source, f"snapshot: {origin}"


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "0.0.0.0",
    port: Annotated[int, typer.Option(help="HTTPS port", min=1, max=65535)] = 8443,
    cert_dir: Annotated[
        Path, typer.Option(help="Where dev certificates are created/reused when --tls-cert is not given")
    ] = Path("certs"),
    tls_cert: Annotated[Path | None, typer.Option(help="Serving certificate (PEM); reloaded when it changes")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="Serving key (PEM)")] = None,
    snapshot: Annotated[
        Path | None, typer.Option(help="Cluster state file (kubectl get nodes,pods,namespaces -A -o yaml)")
    ] = None,
    kubeconfig: Annotated[
        Path | None, typer.Option(help="kubeconfig for the live mode (default: in-cluster, then KUBECONFIG)")
    ] = None,
    context: Annotated[str | None, typer.Option(help="kubeconfig context")] = None,
    policy: Annotated[Path | None, typer.Option("--policy", help="YAML policy file (cluster defaults)")] = None,
) -> None:
    """Run the admission webhook over HTTPS (embedded default: bundled snapshot + dev certificates)."""
    from webhook.certs import ensure_dev_certs
    from webhook.server import configure_logging, create_app, run_https
    from webhook.tls import ReloadingTLS, TLSLoadError

    settings, catalog = _settings_and_catalog(policy)
    configure_logging(settings.log_level)
    if (tls_cert is None) != (tls_key is None):
        raise fail("--tls-cert and --tls-key go together")
    ca_file: Path | None = None
    if tls_cert is None or tls_key is None:
        paths, created = ensure_dev_certs(cert_dir)
        tls_cert, tls_key, ca_file = paths["tls.crt"], paths["tls.key"], paths["ca.crt"]
        err.print(f"{'created' if created else 'reusing'} development certificates in {cert_dir}/", highlight=False)
    try:
        tls = ReloadingTLS(cert_file=tls_cert, key_file=tls_key)
    except TLSLoadError as exc:
        raise fail(str(exc)) from None
    source, described = choose_source(
        snapshot=snapshot, kubeconfig=kubeconfig, context=context, settings=settings, catalog=catalog
    )
    fastapi_app = create_app(
        cluster=settings.cluster_policy(), catalog=catalog, source=source, max_body_bytes=settings.max_body_bytes
    )
    err.print(f"ollama-guard serving https://{host}:{port} ({described})", highlight=False)
    if ca_file is not None:
        shown = "localhost" if host in ("0.0.0.0", "::", "127.0.0.1") else host
        err.print(
            "try it:\n  curl --cacert "
            f"{ca_file} -H 'Content-Type: application/json' "
            f"--data @{os.path.relpath(SAMPLE_REVIEW)} https://{shown}:{port}/mutate",
            highlight=False,
            soft_wrap=True,
        )
    run_https(fastapi_app, host=host, port=port, tls=tls)


@app.command()
def certs(
    service: Annotated[str, typer.Option(help="Service name")] = "ollama-guard",
    namespace: Annotated[str, typer.Option(help="Service namespace")] = "ollama-guard-system",
    out: Annotated[Path, typer.Option(help="Output directory")] = Path("certs"),
    days: Annotated[int, typer.Option(help="Validity in days", min=1, max=3650)] = 365,
) -> None:
    """Write a CA and an ECDSA P-256 serving certificate; print the base64 caBundle."""
    from webhook.certs import build_bundle, write_bundle

    try:
        bundle = build_bundle(service=service, namespace=namespace, days=days)
    except ValueError as exc:
        raise fail(str(exc)) from None
    written = write_bundle(bundle, out)
    for _name, path in sorted(written.items()):
        err.print(f"wrote {path}", highlight=False)
    typer.echo(bundle.ca_bundle_b64)


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
    from webhook.manifests import ca_bundle_from_text, read_tls_dir, render_install_yaml

    try:
        bundle = ca_bundle_from_text(ca_bundle.read_text(encoding="utf-8")) if ca_bundle else None
        tls = read_tls_dir(tls_dir) if tls_dir else None
        typer.echo(render_install_yaml(namespace=namespace, ca_bundle_b64=bundle, image=image, tls=tls), nl=False)
    except (OSError, ValueError) as exc:
        raise fail(str(exc)) from None
