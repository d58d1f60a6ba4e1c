"""ollama-guard: admission webhook and scheduling guard for time-sliced GPU nodes running Ollama.

The packages are layers; each imports only the ones below it (checked by import-linter, see
`[tool.importlinter]` in pyproject.toml):

    cli         one module per command; nothing imports it
    http audit install
                the HTTP edge (FastAPI/uvicorn, TLS, metrics) | the dry-run audit and its
                renderers | certificates (cryptography) and install manifests
    state admission
                where the cluster view comes from (files, list/watch over `kubernetes`) |
                the admission webhooks as pure functions of a request and the view
    core        the pure decision core: quantities, catalog, estimate, demand, policy, nodes,
                view, ledger, evaluation; plain dicts in, frozen values out
"""

__version__ = "0.1.0"
