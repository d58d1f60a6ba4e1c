"""`ollama-guard serve`, `certs` and `manifests`: running the webhook and preparing its install."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from webhook.cli.app import EMBEDDED_SNAPSHOT, SAMPLE_REVIEW, app, err, fail, settings_and_catalog
from webhook.cli.settings import Settings
from webhook.core.catalog import Catalog
from webhook.state.files import SnapshotError, iter_objects
from webhook.state.snapshot import SnapshotSource, StateSource


def choose_source(
    *, snapshot: Path | None, kubeconfig: Path | None, context: str | None, settings: Settings, catalog: Catalog
) -> tuple[StateSource, str]:
    """--snapshot FILE, else in-cluster config, else kubeconfig, else the embedded default."""
    cluster = settings.cluster_policy()
    if snapshot is None:
        from webhook.state.live import live_source  # the kubernetes client is imported only when needed
        from webhook.state.mirror import ClusterConfigError

        try:
            live = live_source(
                kubeconfig=kubeconfig,
                context=context,
                cluster=cluster,
                catalog=catalog,
                advertise_in=settings.guard_namespace if settings.advertise_vram else None,
            )
        except ClusterConfigError as exc:
            raise fail(f"cannot use the cluster configuration: {exc}") from None
        if live is not None:
            if settings.advertise_vram:
                err.print(
                    f"advertising node VRAM as ollama-guard.io/vram-mib while holding the Lease "
                    f"{settings.guard_namespace}/ollama-guard-advertiser",
                    highlight=False,
                )
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
    from webhook.http.server import configure_logging, create_app, run_https
    from webhook.http.tls import ReloadingTLS, TLSLoadError
    from webhook.install.certs import ensure_dev_certs

    settings, catalog = settings_and_catalog(policy)
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
