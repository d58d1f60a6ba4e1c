"""The decision core: pure functions and frozen values that decide what the guard says.

Owns quantities, the model catalog and its data (`catalog`, with its entry schema in
`catalog_schema` and entries made from a GGUF's facts in `catalog_import`), the VRAM estimate and
where each of its numbers comes from (`estimate`, `breakdown`), a pod's demand, what a pod
declares, who is subject to the guard (`tenants`), namespace policy, node inventory, candidate
nodes (`scheduling`), workload templates, the immutable `ClusterView` (`view`, with `staleness`:
what a view known to be behind may not decide), the ledger of committed VRAM, the evaluation of a
pod or template against all of it with the words of every message (`evaluation`, `explain`);
the figure each node advertises as `ollama-guard.io/vram-mib` (`advertise`), the driver-enforced
VRAM cap (`drivercap`), runtime drift (`drift`: Ollama's `/api/ps` against a pod's demand) and the
time-slicing plan (`timeslicing`, `replicas`, with the device plugin's config format in
`deviceplugin`).

Everything here can be read and tested with plain dicts. It imports the standard library,
pydantic and PyYAML (the catalog data) only: never FastAPI, uvicorn, kubernetes, cryptography or
any other `webhook` package. It never reads the environment, and the clock only where a caller
passes one in.
"""
