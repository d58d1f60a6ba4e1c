"""`ollama-guard serve --snapshot FILE` with the snapshot parsed by `json.loads` instead of the CLI's loader.

Used by the harness only for a snapshot the CLI's loader (`webhook.state.files.load_objects`, PyYAML)
cannot read in reasonable time or memory; everything after loading is what `webhook.cli.serve.serve`
does: the same settings, catalog, logging, `SnapshotSource`, `create_app`, TLS and `run_https`, so
the request path measured is the guard's. Results produced with it are marked in RESULTS.md.

Usage: `python -m benchmarks.serve_direct --snapshot FILE.json --port P --tls-cert F --tls-key F`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from webhook.cli.settings import load_settings
from webhook.core.catalog import load_catalog
from webhook.http.logs import configure_logging
from webhook.http.server import create_app, run_https
from webhook.http.tls import ReloadingTLS
from webhook.state.snapshot import SnapshotSource


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the guard on a JSON snapshot parsed with json.loads.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls-cert", type=Path, required=True)
    parser.add_argument("--tls-key", type=Path, required=True)
    parser.add_argument("--snapshot", type=Path, required=True)
    args = parser.parse_args(argv)
    settings = load_settings()
    catalog = load_catalog(settings.catalog_overlay)
    configure_logging(settings.log_level)
    tls = ReloadingTLS(cert_file=args.tls_cert, key_file=args.tls_key)
    objects = json.loads(args.snapshot.read_text(encoding="utf-8"))["items"]
    source = SnapshotSource(objects, cluster=settings.cluster_policy(), catalog=catalog, origin=str(args.snapshot))
    del objects
    app = create_app(cluster=settings.cluster_policy(), catalog=catalog, source=source,
                     max_body_bytes=settings.max_body_bytes, huge_pages=settings.huge_pages)
    run_https(app, host=args.host, port=args.port, tls=tls)


if __name__ == "__main__":
    main()
