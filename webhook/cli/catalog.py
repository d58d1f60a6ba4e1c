"""`ollama-guard catalog import FILE.gguf [--tag NAME]`: a catalog overlay entry from a model file's own
metadata and tensor table, so a custom model is estimated from its real file (design §5) instead of
a typed `ollama-guard.io/vram`. Reading is `webhook.state.gguf`'s, the entry `webhook.core.catalog_import`'s."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml

from webhook.cli.app import app, fail
from webhook.core.catalog_import import GgufImportError, GgufSummary, ImportedEntry, entry_from_gguf

catalog_app = typer.Typer(no_args_is_help=True, help="The model catalog: entries for custom models.")
app.add_typer(catalog_app, name="catalog")


@catalog_app.command("import")
def import_gguf(
    file: Annotated[Path, typer.Argument(help="a GGUF model file, e.g. a blob in ~/.ollama/models/blobs")],
    tag: Annotated[str | None, typer.Option(help="the model tag pods name, e.g. myorg/custom:v1")] = None,
) -> None:
    """Print a catalog overlay entry (YAML) for the model in FILE."""
    try:
        from webhook.state.gguf import read_gguf
    except ImportError:
        raise fail("reading GGUF files needs the gguf package: pip install 'ollama-guard[gguf]'") from None
    try:
        summary = read_gguf(file)
        imported = entry_from_gguf(summary, tag=tag)
    except GgufImportError as exc:
        raise fail(str(exc)) from None
    typer.echo(render_entry(summary, imported), nl=False)


def render_entry(summary: GgufSummary, imported: ImportedEntry) -> str:
    """The overlay document, its header saying what the file holds and where it goes."""
    host = int(imported.entry.get("token_embd", 0))
    header = [
        f"# ollama-guard catalog entry from {summary.source}",
        f"# tensors: {summary.tensor_bytes:,} B in {len(summary.tensors)} tensors; file {summary.file_bytes:,} B;",
        f"#   on the GPU {summary.file_bytes - host:,} B, token_embd kept in host memory {host:,} B",
        *(f"# note: {note}" for note in imported.notes),
        "# Put it under `models:` of the catalog overlay (the policy's catalog_overlay) and name the tag in",
        "# the pod's ollama-guard.io/models.",
    ]
    body = yaml.safe_dump({"models": {imported.tag: imported.entry}}, sort_keys=False, allow_unicode=True)
    return "\n".join(header) + "\n" + body
