"""In-process measurements: the snapshot loader's speed, the time to build the view, the estimator's cost.

- `probe_loader`: how fast `webhook.state.files.load_objects` (what `ollama-guard serve --snapshot`
  uses) reads a ~1 MB slice of this snapshot, written to a file of the same kind, and what that
  projects for the whole file. The harness uses it to decide whether the CLI can load it at all.
- `view_build`: what `ollama-guard serve --snapshot` does before it listens
  (`webhook.cli.serve.choose_source`: load + `SnapshotSource`), when the probe allows it; and, for
  comparison, `json.loads` of the whole file then `SnapshotSource` on that list, timed separately.
- `estimator_cost`: `compute_demand` per pod (timeit), on the recorded pod after the guard's mutation
  and on a two-model pod declared by its postStart script: the whole computation (every cache
  cleared before each call: declaration, settings, catalog lookups, the formula), the same with
  `read_pod` included, and what a repeated identical pod (a workload's replica) pays (a memo hit).
"""

from __future__ import annotations

import gc
import json
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

import jsonpatch

from benchmarks.objects import pull_script
from benchmarks.reviews import recorded
from benchmarks.tenants import guard_for, mutation_patch
from webhook.cli.serve import choose_source
from webhook.cli.settings import load_settings
from webhook.core.catalog import load_catalog
from webhook.core.demand import clear_caches, compute_demand
from webhook.core.tenants import read_pod
from webhook.state.files import load_objects
from webhook.state.snapshot import SnapshotSource

PROBE_BYTES = 1 << 20


def probe_loader(path: Path) -> dict[str, float]:
    """Seconds per MB of `load_objects` on a slice of this snapshot, and the whole file's projection."""
    gc.disable()  # only to take the slice quickly: the cyclic GC triples json.loads on large files
    try:
        items: list[Any] = json.loads(path.read_text(encoding="utf-8"))["items"]
    finally:
        gc.enable()
    sample: list[Any] = []
    size = 0
    for item in items:
        sample.append(item)
        size += len(json.dumps(item, separators=(",", ":")))
        if size >= PROBE_BYTES:
            break
    del items
    text = json.dumps({"apiVersion": "v1", "kind": "List", "items": sample}, separators=(",", ":"))
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / f"probe{path.suffix}"
        probe.write_text(text, encoding="utf-8")
        started = time.perf_counter()
        load_objects([probe])
        per_mb = (time.perf_counter() - started) / (len(text) / 1e6)
    total_mb = path.stat().st_size / 1e6
    return {"s_per_mb": round(per_mb, 3), "file_mb": round(total_mb, 1), "projected_s": round(per_mb * total_mb, 1)}


def view_build(path: Path, *, use_loader: bool) -> dict[str, Any]:
    """Seconds to build the guard's state from `path`: the serve path, and json.loads + SnapshotSource."""
    settings = load_settings()
    cluster, catalog = settings.cluster_policy(), load_catalog(settings.catalog_overlay)
    result: dict[str, Any] = {"file_mb": round(path.stat().st_size / 1e6, 1)}
    if use_loader:
        started = time.perf_counter()
        served, _ = choose_source(snapshot=path, kubeconfig=None, context=None, settings=settings, catalog=catalog)
        result["serve_s"] = round(time.perf_counter() - started, 2)
        del served
        gc.collect()
    started = time.perf_counter()
    objects = json.loads(path.read_text(encoding="utf-8"))["items"]
    result["json_s"] = round(time.perf_counter() - started, 2)
    started = time.perf_counter()
    source = SnapshotSource(objects, cluster=cluster, catalog=catalog, origin=str(path))
    result["source_s"] = round(time.perf_counter() - started, 2)
    view = source.ledger.view
    result.update(objects=len(objects), nodes=len(view.nodes), tenants=len(view.tenants))
    result["total_json_s"] = round(result["json_s"] + result["source_s"], 2)
    return result


def estimator_cost(*, repeat: int = 5, number: int = 2000) -> dict[str, float]:
    """Microseconds per pod for `compute_demand` (best of `repeat` runs of `number` calls)."""
    builder, guard = guard_for({"team-a": {}})
    ns = guard.ledger.view.namespace_policy(guard.cluster, "team-a")
    single = recorded("validate-pod-create-2")["request"]["object"]
    jsonpatch.apply_patch(single, mutation_patch(guard, single), in_place=True)
    double = recorded("validate-pod-create-2")["request"]["object"]
    double["metadata"].pop("annotations")
    double["spec"]["containers"][0]["lifecycle"]["postStart"]["exec"]["command"] = pull_script(
        ("qwen2.5:14b", "nomic-embed-text"))
    jsonpatch.apply_patch(double, mutation_patch(guard, double), in_place=True)
    out: dict[str, float] = {}
    for label, raw in (("annotation_1_model", single), ("poststart_2_models", double)):
        facts = read_pod(raw, gpu_resources=guard.cluster.gpu_resources)

        def demand(facts: Any = facts) -> object:
            clear_caches()
            return compute_demand(facts, ns=ns, cluster=guard.cluster, catalog=guard.catalog)

        def with_read(raw: Any = raw) -> object:
            clear_caches()
            pod = read_pod(raw, gpu_resources=guard.cluster.gpu_resources)
            return compute_demand(pod, ns=ns, cluster=guard.cluster, catalog=guard.catalog)

        def replica(facts: Any = facts) -> object:
            return compute_demand(facts, ns=ns, cluster=guard.cluster, catalog=guard.catalog)

        out[f"{label}_us"] = _best_us(demand, repeat=repeat, number=number)
        out[f"{label}_with_read_pod_us"] = _best_us(with_read, repeat=repeat, number=number)
        out[f"{label}_cached_us"] = _best_us(replica, repeat=repeat, number=number)
    del builder
    return out


def _best_us(func: Any, *, repeat: int, number: int) -> float:
    return round(min(timeit.repeat(func, repeat=repeat, number=number)) / number * 1e6, 1)
