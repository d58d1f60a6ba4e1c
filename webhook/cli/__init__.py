"""The `ollama-guard` command line (typer): one module per command, registered on `app.app`.

Thin: parse options, read settings (`settings`) and files, build the configured objects, call the
library, print. Commands: `serve` (with `live`: the live page's wiring of state, audit and HTTP),
`audit`, `estimate`, `timeslicing`, `certs`, `manifests`. `main` is the console script. Nothing in
`webhook` imports this package; it may import every other one.
"""
