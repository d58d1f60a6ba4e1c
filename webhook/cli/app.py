"""The `ollama-guard` typer `app` every command registers on, and what the commands share.

Usage and input errors exit 2 with a message (`fail`); the audit's `--fail-on` exits 1 on findings.
Imports no command module: `webhook.cli.main` imports them all and runs the app.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from webhook.cli.settings import ConfigError, Settings, load_settings
from webhook.core.catalog import Catalog, load_catalog

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Admission webhook and scheduling guard "
    "that keeps time-sliced GPU nodes within their physical VRAM for Ollama.",
)
err = Console(stderr=True)
EMBEDDED_SNAPSHOT = Path(__file__).resolve().parents[1] / "data" / "cluster.yaml"
SAMPLE_REVIEW = Path(__file__).resolve().parents[1] / "data" / "sample-review.json"

PolicyOpt = Annotated[Path | None, typer.Option("--policy", help="YAML policy file (cluster defaults).")]


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def settings_and_catalog(policy: Path | None) -> tuple[Settings, Catalog]:
    try:
        settings = load_settings(policy)
        return settings, load_catalog(settings.catalog_overlay)
    except (ConfigError, ValueError) as exc:
        raise fail(str(exc)) from None


def write_output(text: str, out: Path | None, *, what: str) -> None:
    """`text` to stdout, or to `out` with a line on stderr saying so; a write error exits 2."""
    if out is None:
        typer.echo(text, nl=False)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise fail(f"{out}: cannot write: {exc.strerror or exc}") from None
    err.print(f"wrote the {what} to {out}", highlight=False, soft_wrap=True)
