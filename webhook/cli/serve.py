"""`ollama-guard serve`, `certs` and `manifests`: running the webhook and preparing its install."""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from webhook.cli.app import EMBEDDED_SNAPSHOT, SAMPLE_REVIEW, app, err, fail, settings_and_catalog
from webhook.cli.settings import Settings
from webhook.core.catalog import Catalog
from webhook.state.files import SnapshotError, iter_objects
from webhook.state.snapshot import SnapshotSource, StateSource

if TYPE_CHECKING:
    from webhook.state.drift import Endpoint


class DriftMode(StrEnum):
    """`auto`: ask the Ollama pods in live mode only (a snapshot's pod IPs are rarely reachable from here)."""

    auto = "auto"
    on = "on"
    off = "off"


def choose_source(
    *,
    snapshot: Path | None,
    kubeconfig: Path | None,
    context: str | None,
    settings: Settings,
    catalog: Catalog,
    endpoints: dict[str, Endpoint | str] | None = None,
) -> tuple[StateSource, str]:
    """--snapshot FILE, else in-cluster config, else kubeconfig, else the embedded default.

    With `endpoints`, a snapshot's pods are noted there as it is read (runtime drift asks them)."""
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
                stale_after=settings.stale_after_seconds,
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
        objects = iter_objects([path])
        if endpoints is not None:
            from webhook.state.drift import remember_endpoints

            objects = remember_endpoints(objects, endpoints)
        source = SnapshotSource(objects, cluster=cluster, catalog=catalog, origin=origin)
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
    ui_port: Annotated[
        int, typer.Option(help="Port of the read-only live VRAM page (plain HTTP); 0 turns it off", min=0, max=65535)
    ] = 8080,
    ui_host: Annotated[
        str, typer.Option(help="Address of the live page (default: this machine only; use kubectl port-forward)")
    ] = "127.0.0.1",
    drift: Annotated[
        DriftMode,
        typer.Option(help="Ask each running Ollama pod's GET /api/ps: auto = in live mode only"),
    ] = DriftMode.auto,
    drift_interval: Annotated[
        float, typer.Option(help="Seconds between two rounds of /api/ps requests; 0 turns drift off", min=0)
    ] = 30.0,
) -> None:
    """Run the admission webhook over HTTPS (embedded default: bundled snapshot + dev certificates),
    with a read-only live VRAM page on --ui-port."""
    from webhook.cli.live import drift_status, drift_targets, page_state, start_page
    from webhook.http.logs import configure_logging
    from webhook.http.recent import RecentDecisions
    from webhook.http.server import create_app, run_https, server_stack
    from webhook.http.tls import ReloadingTLS, TLSLoadError
    from webhook.install.certs import ensure_dev_certs
    from webhook.state.drift import DriftMonitor

    settings, catalog = settings_and_catalog(policy)
    configure_logging(settings.log_level)
    if (tls_cert is None) != (tls_key is None):
        raise fail("--tls-cert and --tls-key go together")
    if ui_port and ui_port == port:
        raise fail(f"--ui-port {ui_port} is the webhook's port: the live page never shares it; choose another")
    ca_file: Path | None = None
    if tls_cert is None or tls_key is None:
        paths, created = ensure_dev_certs(cert_dir)
        tls_cert, tls_key, ca_file = paths["tls.crt"], paths["tls.key"], paths["ca.crt"]
        err.print(f"{'created' if created else 'reusing'} development certificates in {cert_dir}/", highlight=False)
    try:
        tls = ReloadingTLS(cert_file=tls_cert, key_file=tls_key)
    except TLSLoadError as exc:
        raise fail(str(exc)) from None
    asking = drift is not DriftMode.off and drift_interval > 0
    endpoints: dict[str, Endpoint | str] = {}
    source, described = choose_source(
        snapshot=snapshot,
        kubeconfig=kubeconfig,
        context=context,
        settings=settings,
        catalog=catalog,
        endpoints=endpoints if asking and drift is DriftMode.on else None,
    )
    in_snapshot = getattr(source, "mirror", None) is None
    monitor = None
    if asking and (drift is DriftMode.on or not in_snapshot):
        monitor = DriftMonitor(drift_targets(source, endpoints), interval=drift_interval)
    recent = RecentDecisions()
    fastapi_app = create_app(
        cluster=settings.cluster_policy(),
        catalog=catalog,
        source=source,
        max_body_bytes=settings.max_body_bytes,
        recorder=recent.record,
        drift=monitor.observations if monitor else None,
        huge_pages=settings.huge_pages,
    )
    stack = server_stack()
    err.print(f"ollama-guard serving https://{host}:{port} ({described}; {stack.loop} + {stack.http})", highlight=False)
    if ca_file is not None:
        shown = "localhost" if host in ("0.0.0.0", "::", "127.0.0.1") else host
        err.print(
            "try it:\n  curl --cacert "
            f"{ca_file} -H 'Content-Type: application/json' "
            f"--data @{os.path.relpath(SAMPLE_REVIEW)} https://{shown}:{port}/mutate",
            highlight=False,
            soft_wrap=True,
        )
    page = None
    if ui_port:
        state = page_state(
            source,
            cluster=settings.cluster_policy(),
            catalog=catalog,
            origin=described,
            monitor=monitor,
            recent=recent,
            drift=drift_status(monitor, why_off=_why_no_drift(drift, drift_interval, snapshot=in_snapshot)),
        )
        page = start_page(state, host=ui_host, port=ui_port)
    if monitor is not None:
        err.print(f"runtime drift: asking each Ollama pod's /api/ps every {drift_interval:g} s", highlight=False)
        monitor.start()
    try:
        run_https(fastapi_app, host=host, port=port, tls=tls, companions=[page] if page else [])
    finally:
        if monitor is not None:
            monitor.stop()


def _why_no_drift(mode: DriftMode, interval: float, *, snapshot: bool) -> str:
    if mode is DriftMode.auto and snapshot:
        return "snapshot mode: the pods of a file are rarely reachable from here (--drift on asks the pod IPs it gives)"
    return "--drift off" if mode is DriftMode.off else "--drift-interval 0"
