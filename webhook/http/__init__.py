"""The HTTP edge: the ASGI admission endpoints, the server factory, TLS with hot reload, metrics,
the live page's read-only server (`page`) and its ring of recent decisions (`recent`).

Owns everything FastAPI, uvicorn and prometheus_client (their only importers). A request is
decoded here, decided by `webhook.admission` from the in-memory state of `webhook.state`, and
encoded back; no Kubernetes API call is made on the request path. It must not import
`webhook.audit` or `webhook.cli`.
"""
