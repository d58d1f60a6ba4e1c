"""Where the guard's view of the cluster comes from, and what the guard writes back to it.

Owns reading Kubernetes objects from files (`files`), the snapshot source of the embedded default
(`snapshot`), the list/watch mirror over the official `kubernetes` client (`mirror`, the only
importer of `kubernetes` outside the CLI), the live source that turns its events into published
`ClusterView`s (`live`), and runtime drift: asking each Ollama pod of the view for its `/api/ps`
(`drift`, the only importer of `httpx`).

It builds on `webhook.core` (the view, the ledger) and must not import `webhook.admission`,
`webhook.http`, `webhook.audit` or `webhook.cli`: the request path reads what it publishes, never
the other way round.
"""
