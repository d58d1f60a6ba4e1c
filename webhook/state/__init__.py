"""Where the guard's view of the cluster comes from, and what the guard writes back to it.

Owns reading Kubernetes objects from files (`files`), the snapshot source of the embedded default
(`snapshot`), the list/watch mirror over the official `kubernetes` client (`mirror`), the live
source that turns its events into published `ClusterView`s (`live`), one-shot listings for the
commands that judge a cluster once (`listing`), raw JSON writes (`api`) and what is written with
them: the node advertiser of `ollama-guard.io/vram-mib` (`advertiser`) under a Lease (`lease`), and
the time-slicing setup (`timeslicing`); and runtime drift: asking each Ollama pod of the view for
its `/api/ps` (`drift`, the only importer of `httpx`); and a model file's own facts (`gguf`, the
only importer of the `gguf` package). With the CLI, the only importer of `kubernetes`.

It builds on `webhook.core` (the view, the ledger) and must not import `webhook.admission`,
`webhook.http`, `webhook.audit` or `webhook.cli`: the request path reads what it publishes, never
the other way round.
"""
