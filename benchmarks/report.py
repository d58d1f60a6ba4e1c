"""Rendering a benchmark run: `RESULTS.md` (tables, targets), the raw `.json`, and `latency.svg`.

Pure formatting of the dict `benchmarks.run` builds (the plot is `benchmarks/plot.py`).
`python -m benchmarks.report RUN.json [--baseline BEFORE.json]` re-renders a saved run.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.plot import PCTS, get, svg

KINDS = ("pod-mutate", "pod-validate", "binding", "binding:allowed", "binding:denied", "deployment", "all")


def write(run: Mapping[str, Any], *, out: Path, baseline: Mapping[str, Any] | None = None) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(run, indent=1), encoding="utf-8")
    out.write_text(markdown(run, baseline=baseline), encoding="utf-8")
    out.with_name("latency.svg").write_text(svg(run), encoding="utf-8")


def _num(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and value >= 100:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"


def _pcts(entry: Mapping[str, Any], server: str, kind: str = "all") -> str:
    lat = get(entry, server, "rate", "latency_ms", kind) or {}
    return " / ".join(_num(lat.get(p)) for p in PCTS)


def ratio(entry: Mapping[str, Any]) -> float | None:
    guard, floor = get(entry, "guard", "saturate", "throughput"), get(entry, "floor", "saturate", "throughput")
    return round(guard / floor, 3) if guard and floor else None


def round_ratios(entry: Mapping[str, Any]) -> list[float]:
    """guard / floor of each pair of saturated rounds run back to back (same host conditions)."""
    guard, floor = get(entry, "guard", "saturate_rounds") or [], get(entry, "floor", "saturate_rounds") or []
    return [round(g / f, 3) for g, f in zip(guard, floor, strict=False) if f]


def _ratio_cell(entry: Mapping[str, Any]) -> str:
    pairs = round_ratios(entry)
    spread = f" ({min(pairs):.2f}–{max(pairs):.2f})" if len(pairs) > 1 else ""
    return _num(ratio(entry)) + spread


def rounds_table(run: Mapping[str, Any]) -> list[str]:
    lines = ["| size | server | saturated rounds (reviews/s, in run order) | median |",
             "| --- | --- | --- | ---: |"]
    for e in run["sizes"]:
        for server in ("floor", "guard"):
            rounds = get(e, server, "saturate_rounds")
            if rounds:
                lines.append(f"| {e['size']} | {server} | {', '.join(_num(float(r)) for r in rounds)} "
                             f"| {_num(get(e, server, 'saturate', 'throughput'))} |")
        pairs = round_ratios(e)
        if pairs:
            lines.append(f"| {e['size']} | guard/floor per round | {', '.join(f'{r:.2f}' for r in pairs)} "
                         f"| {_num(ratio(e))} |")
    return lines


def summary_table(run: Mapping[str, Any]) -> list[str]:
    lines = [
        "| size | nodes | pods | guard (reviews/s) | floor (reviews/s) | guard/floor | guard p50 / p95 / p99 (ms) "
        "| floor p50 / p95 / p99 (ms) | guard RSS after load (MiB) | guard startup (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for e in run["sizes"]:
        mark = "" if get(e, "guard", "launcher") in (None, "ollama-guard serve") else " †"
        guard, floor = get(e, "guard", "saturate", "throughput"), get(e, "floor", "saturate", "throughput")
        lines.append(
            f"| {e['size']}{mark} | {e['nodes']:,} | {e['pods']:,} | {_num(guard)} | {_num(floor)} | {_ratio_cell(e)} "
            f"| {_pcts(e, 'guard')} "
            f"| {_pcts(e, 'floor')} | {_num(get(e, 'guard', 'memory_after', 'VmRSS'), 1)} "
            f"| {_num(get(e, 'guard', 'startup_s'))} |"
        )
    return lines


def contention(run: Mapping[str, Any], *, threshold: float = 0.3) -> list[str]:
    """A warning when other processes took CPU during a phase (the host may be shared)."""
    worst = []
    for e in run["sizes"]:
        for server in ("floor", "guard"):
            for mode in ("saturate", "rate"):
                p = get(e, server, mode)
                if p and "machine_cpu_cores" in p:
                    other = p["machine_cpu_cores"] - p["server_cpu_cores"] - p["generator_cpu_cores"]
                    worst.append((round(other, 2), f"{e['size']} {server} {mode}"))
    if not worst or max(worst)[0] < threshold:
        return []
    other, where = max(worst)
    busy = sum(1 for o, _ in worst if o >= threshold)
    return [f"> **Shared host:** other processes used CPU during {busy} of {len(worst)} phases (up to {other} "
            f"cores, in {where}; see the CPU table). Numbers from those phases are pessimistic; compare guard "
            "and floor phases run under similar load.", ""]


def direct_note(run: Mapping[str, Any]) -> str:
    if all(get(e, "guard", "launcher") in (None, "ollama-guard serve") for e in run["sizes"]):
        return ""
    return (" † served by `benchmarks/serve_direct.py` (the guard's server with the snapshot parsed by "
            "`json.loads`), because `ollama-guard serve` could not load this snapshot within `--max-load-seconds` "
            "(see the loader probe under View build).")


def failures(run: Mapping[str, Any]) -> list[str]:
    failed = [(e["size"], server, e[server]["error"]) for e in run["sizes"] for server in ("guard", "floor")
              if isinstance(e.get(server), Mapping) and "error" in e[server]]
    if not failed:
        return []
    return ["", "Failed:", *(f"- {size} {server}: `{' '.join(err.split())[:300]}`" for size, server, err in failed)]


def targets(run: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) for each of issue 8's targets that this run measured."""
    sizes = run["sizes"]
    rows: list[tuple[str, str, str]] = []

    def row(name: str, measured: str, ok: bool | None) -> None:
        rows.append((name, measured, "–" if ok is None else "met" if ok else "**missed**"))

    p99s = [(e["size"], get(e, "guard", "rate", "latency_ms", "pod-validate", "p99")) for e in sizes]
    p99s = [(s, v) for s, v in p99s if v is not None]
    row("pod validate p99 ≤ 5 ms at the offered rate", ", ".join(f"{s}: {v} ms" for s, v in p99s),
        all(v <= 5 for _, v in p99s) if p99s else None)
    ratios = [(e["size"], r) for e in sizes if (r := ratio(e)) is not None]
    row("saturated throughput ≥ 60% of the floor", ", ".join(f"{s}: {r:.0%}" for s, r in ratios),
        all(r >= 0.6 for _, r in ratios) if ratios else None)
    first, last = (sizes[0], sizes[-1]) if len(sizes) > 1 else (None, None)
    if first is not None and last is not None:
        for kind in ("all", "pod-validate"):
            a = get(first, "guard", "rate", "latency_ms", kind, "p50")
            b = get(last, "guard", "rate", "latency_ms", kind, "p50")
            if a and b:
                row(f"p50 ({kind}) at {last['pods']:,} pods ≤ 1.2 × p50 at {first['pods']:,} pods",
                    f"{b} ms vs {a} ms: × {b / a:.2f}", b <= 1.2 * a)
    big = max(sizes, key=lambda e: e["pods"]) if sizes else None
    rss = get(big, "guard", "memory_after", "VmRSS") if big else None
    if big is not None and rss is not None:
        peak = get(big, "guard", "memory_after", "VmHWM")
        row(f"RSS ≤ 250 MiB with the {big['pods']:,}-pod view", f"{rss} MiB (peak {peak} MiB)", rss <= 250)
    view = run.get("view_build")
    if view:
        seconds, measured = view_total(view)
        how = "measured" if measured else "projected (the loader was not run, see View build)"
        row(f"view build ≤ 10 s for {view['pods']:,} pods", f"{seconds:.1f} s, {how}", seconds <= 10)
    est = run.get("estimator") or {}
    if est:
        worst = max(est.get("annotation_1_model_us", 0), est.get("poststart_2_models_us", 0))
        row("estimator ≤ 50 µs per pod (`compute_demand`, no cache)", f"{worst} µs (worst of the two pods)",
            worst <= 50)
    return rows


def view_total(view: Mapping[str, Any]) -> tuple[float, bool]:
    """Seconds `ollama-guard serve` needs to build its state, and whether that was measured."""
    if "serve_s" in view:
        return float(view["serve_s"]), True
    if "loader_s" in view:  # runs before 2026-11-24 06:00 timed load_objects + SnapshotSource on the list
        return float(view["loader_s"]) + float(view["source_s"]), True
    return float(view.get("loader_projected_s", 0)) + float(view.get("source_s", 0)), False


def kinds_table(run: Mapping[str, Any], server: str) -> list[str]:
    lines = ["| size | review | count | p50 | p95 | p99 | max | decisions |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for e in run["sizes"]:
        latencies = get(e, server, "rate", "latency_ms") or {}
        decisions = get(e, server, "rate", "decisions") or {}
        for kind in KINDS:
            lat = latencies.get(kind)
            if not lat or not lat.get("count"):
                continue
            shown = ", ".join(f"{k} {v}" for k, v in sorted((decisions.get(kind) or {}).items()))
            lines.append(f"| {e['size']} | {kind} | {lat['count']:,} | {lat['p50']} | {lat['p95']} | {lat['p99']} "
                         f"| {lat['max']} | {shown} |")
    return lines


def machine_table(run: Mapping[str, Any]) -> list[str]:
    lines = ["| size | server | phase | reviews/s | server CPU (cores) | generator CPU (cores) | whole machine (cores) "
             "| send lag p99 (ms) | errors |", "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for e in run["sizes"]:
        for server in ("floor", "guard"):
            for mode in ("saturate", "rate"):
                p = get(e, server, mode)
                if not p:
                    continue
                lag = get(p, "send_lag_ms", "p99")
                lines.append(f"| {e['size']} | {server} | {mode} | {_num(p['throughput'])} | {p['server_cpu_cores']} "
                             f"| {p['generator_cpu_cores']} | {p['machine_cpu_cores']} | {_num(lag)} "
                             f"| {p['errors']} |")
    return lines


def _saturation(settings: Mapping[str, Any]) -> str:
    if "rounds" not in settings:  # runs before 2026-11-24 08:00: one saturated phase per server
        return f"Saturated throughput: one {settings['duration_s']} s phase per server, floor first."
    return (f"Saturated throughput: {settings['rounds']} rounds of {settings['round_s']} s per server, floor and "
            "guard alternating (both servers up side by side), the median round reported and the guard/floor "
            "ratio of each back-to-back pair shown as a range.")


def markdown(run: Mapping[str, Any], *, baseline: Mapping[str, Any] | None = None) -> str:
    m, s = run["machine"], run["settings"]
    out = [
        "# ollama-guard benchmark results",
        "",
        f"- Machine: {m['nproc']} × {m['cpu']} (nproc {m['nproc']}), Linux {m['kernel']}, Python {m['python']}, "
        f"uvicorn {m['uvicorn']}; load average at start {', '.join(str(x) for x in m['loadavg_at_start'])}",
        f"- Run: {run['started']} to {run['finished']}; code: {run.get('revision', 'not recorded')}",
        f"- Command: `{run['command'].strip()}`",
        f"- Load: {s['connections']} keep-alive TLS connections from one generator process "
        f"(`benchmarks/load.py`). {_saturation(s)} Latency at {s['rate']:.0f} reviews/s offered for "
        f"{s['duration_s']} s (open loop, measured from each review's scheduled time). Every phase after a "
        f"{s['warmup_s']} s warm-up. "
        "Mix per 10 reviews: 3 pod mutate, 3 pod validate, 3 binding validate, 1 Deployment validate, "
        "derived from requests recorded from kube-apiserver 1.24 (`benchmarks/reviews.py`).",
        "- Floor: `benchmarks/floor.py`, a bare ASGI app on the same uvicorn settings and certificate "
        "(decodes the review with orjson, as the guard does, and answers allowed with its UID).",
        "- Profiles, causes of missed targets, fixes and before/after: `benchmarks/FINDINGS.md`.",
        "",
        *contention(run),
        "## Summary",
        "",
        *summary_table(run),
        "",
        "Latencies: all reviews at the offered rate." + direct_note(run),
        *failures(run),
        "",
        "## Targets (issue 8)",
        "",
        "| target | measured | verdict |",
        "| --- | --- | --- |",
        *[f"| {t} | {v} | {ok} |" for t, v, ok in targets(run)],
        "",
        f"## Guard latency per review kind at {s['rate']:.0f}/s (ms)",
        "",
        *kinds_table(run, "guard"),
        "",
        f"## Floor latency per review kind at {s['rate']:.0f}/s (ms)",
        "",
        *kinds_table(run, "floor"),
        "",
        "## Saturated rounds",
        "",
        *rounds_table(run),
        "",
        "## CPU: server, generator, whole machine",
        "",
        "The generator is not the bottleneck when its CPU stays well under one core while the server's is "
        "near one core (both are single Python processes). 'Whole machine' includes every process on the "
        "host; more than server + generator means something else was running.",
        "",
        *machine_table(run),
        "",
        *view_section(run),
        *estimator_section(run),
        *(baseline_section(run, baseline) if baseline else []),
        "![latency percentiles by cluster size](latency.svg)",
        "",
    ]
    return "\n".join(out)


def view_section(run: Mapping[str, Any]) -> list[str]:
    view = run.get("view_build")
    lines = ["## View build (in process)", ""]
    if not view:
        return [*lines, "Not measured.", ""]
    seconds, measured = view_total(view)
    serve = _num(seconds) if measured else f"~{_num(seconds)} (projected)"
    lines += ["| snapshot | MB | objects | GPU nodes | tenants | `ollama-guard serve`: load + build (s) "
              "| `json.loads` (s) | `SnapshotSource` on that list (s) |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
              f"| {view['size']} | {view['file_mb']} | {view['objects']:,} | {view['nodes']:,} | {view['tenants']:,} "
              f"| {serve} | {view['json_s']} | {view['source_s']} |", ""]
    lines.append("The serve column times `webhook.cli.serve.choose_source` (what `ollama-guard serve --snapshot` does "
                 "before it listens); the last two parse the whole file with `json.loads` and build from that list.")
    probes = [(e["size"], e["loader_probe"]) for e in run["sizes"] if e.get("loader_probe")]
    if probes:
        lines.append("Loader probe (`webhook.state.files.load_objects` on a ~1 MB slice of the snapshot): " + "; ".join(
            f"{s}: {p['s_per_mb']} s/MB, {p['file_mb']} MB → ~{p['projected_s']:.0f} s" for s, p in probes) + ".")
    return [*lines, ""]


def estimator_section(run: Mapping[str, Any]) -> list[str]:
    est = run.get("estimator") or {}
    if not est:
        return []
    rows = [("recorded pod (`llama3.1:8b` by annotation), mutated", "annotation_1_model"),
            ("two models from the postStart pull script, mutated", "poststart_2_models")]
    return ["## Estimator cost per pod (timeit, best of runs)", "",
            "Computed: every cache cleared before each call (runs before 2026-11-24 08:00 kept the estimate cache "
            "warm). Replica: the same pod again, answered from the demand memo.", "",
            "| pod | `compute_demand`, computed (µs) | `read_pod` + `compute_demand` (µs) | replica (µs) |",
            "| --- | ---: | ---: | ---: |",
            *[f"| {label} | {est.get(key + '_us')} | {est.get(key + '_with_read_pod_us')} "
              f"| {_num(est.get(key + '_cached_us'))} |" for label, key in rows],
            ""]


def baseline_section(run: Mapping[str, Any], baseline: Mapping[str, Any]) -> list[str]:
    before = {e["size"]: e for e in baseline.get("sizes", [])}
    lines = [f"## Before and after (before: run of {baseline.get('started')})", "",
             "| size | metric | before | after |", "| --- | --- | ---: | ---: |"]
    metrics: tuple[tuple[str, Callable[[Mapping[str, Any]], Any]], ...] = (
        ("guard reviews/s", lambda e: get(e, "guard", "saturate", "throughput")),
        ("guard/floor", ratio),
        ("guard p50 (ms)", lambda e: get(e, "guard", "rate", "latency_ms", "all", "p50")),
        ("guard p99 (ms)", lambda e: get(e, "guard", "rate", "latency_ms", "all", "p99")),
        ("pod validate p99 (ms)", lambda e: get(e, "guard", "rate", "latency_ms", "pod-validate", "p99")),
        ("guard RSS after load (MiB)", lambda e: get(e, "guard", "memory_after", "VmRSS")),
        ("guard startup (s)", lambda e: get(e, "guard", "startup_s")),
    )
    for e in run["sizes"]:
        old = before.get(e["size"])
        if old is None:
            continue
        for label, metric in metrics:
            lines.append(f"| {e['size']} | {label} | {_num(metric(old))} | {_num(metric(e))} |")
    views = [v if isinstance(v, Mapping) else None for v in (baseline.get("view_build"), run.get("view_build"))]
    if views[0] and views[1]:
        (old_s, old_measured), (new_s, new_measured) = view_total(views[0]), view_total(views[1])
        shown = [f"{_num(s)}{'' if m else ' (projected)'}" for s, m in ((old_s, old_measured), (new_s, new_measured))]
        lines.append(f"| {views[1]['size']} | view build: serve load + build (s) | {shown[0]} | {shown[1]} |")
    return [*lines, ""]


def main(argv: Sequence[str] | None = None) -> None:
    """Re-render RESULTS.md and latency.svg from a run's saved .json (no measuring)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=main.__doc__)
    parser.add_argument("run", type=Path, help="a run's .json (written next to its RESULTS.md)")
    parser.add_argument("--out", type=Path, help="default: RESULTS.md next to the .json")
    parser.add_argument("--baseline", type=Path, help="an earlier run's .json to show as 'before'")
    args = parser.parse_args(argv)
    run = json.loads(args.run.read_text(encoding="utf-8"))
    baseline = json.loads(args.baseline.read_text(encoding="utf-8")) if args.baseline else None
    write(run, out=args.out or args.run.with_suffix(".md"), baseline=baseline)


if __name__ == "__main__":
    main()
