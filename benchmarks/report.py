"""Rendering a benchmark run: `RESULTS.md` (tables, targets), the raw `.json`, and `latency.svg`.

Pure formatting of the dict `benchmarks.run` builds (the plot is `benchmarks/plot.py`).
`python -m benchmarks.report RUN.json [--baseline BEFORE.json]` re-renders a saved run.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.plot import get, svg

TARGET_RATIO = 0.6
TARGET_P99_MS = 1.0
TARGET_RSS_MIB = 250
BUSY_CORES = 0.3  # other processes' CPU during a phase above which the phase is flagged


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


def _ms(us: Any) -> str:
    return "–" if us is None else f"{us / 1000:.3f}"


def kinds(run: Mapping[str, Any]) -> list[str]:
    return list(run["settings"].get("kinds") or [])


def rate(entry: Mapping[str, Any], server: str, kind: str) -> float | None:
    value = get(entry, server, "saturate", kind, "throughput")
    return float(value) if value else None


def ratio(entry: Mapping[str, Any], kind: str) -> float | None:
    guard, floor = rate(entry, "guard", kind), rate(entry, "floor", kind)
    return round(guard / floor, 3) if guard and floor else None


def round_ratios(entry: Mapping[str, Any], kind: str) -> list[float]:
    """guard / floor of each pair of saturated rounds run back to back (same host conditions)."""
    guard = get(entry, "guard", "saturate_rounds", kind) or []
    floor = get(entry, "floor", "saturate_rounds", kind) or []
    return [round(g / f, 3) for g, f in zip(guard, floor, strict=False) if f]


def _ratio_cell(entry: Mapping[str, Any], kind: str) -> str:
    pairs = round_ratios(entry, kind)
    spread = f" ({min(pairs):.2f}–{max(pairs):.2f})" if len(pairs) > 1 else ""
    return _num(ratio(entry, kind)) + spread


def _lat(entry: Mapping[str, Any], server: str, kind: str) -> str:
    lat = get(entry, server, "latency", kind, "latency_us") or {}
    return f"{_ms(lat.get('p50'))} / {_ms(lat.get('p99'))}"


def summary_table(run: Mapping[str, Any]) -> list[str]:
    lines = ["| size | pods | review | guard (reviews/s) | floor (reviews/s) | guard/floor | "
             "guard p50 / p99, 1 connection (ms) | floor p50 / p99, 1 connection (ms) |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for e in run["sizes"]:
        mark = "" if get(e, "guard", "launcher") in (None, "ollama-guard serve") else " †"
        for kind in kinds(run):
            lines.append(f"| {e['size']}{mark} | {e['pods']:,} | {kind} | {_num(rate(e, 'guard', kind))} "
                         f"| {_num(rate(e, 'floor', kind))} | {_ratio_cell(e, kind)} | {_lat(e, 'guard', kind)} "
                         f"| {_lat(e, 'floor', kind)} |")
    return lines


def memory_table(run: Mapping[str, Any]) -> list[str]:
    lines = ["| size | nodes | pods | guard RSS ready (MiB) | guard RSS after load (MiB) | guard peak (MiB) "
             "| guard startup (s) | floor RSS after load (MiB) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for e in run["sizes"]:
        lines.append(f"| {e['size']} | {e['nodes']:,} | {e['pods']:,} "
                     f"| {_num(get(e, 'guard', 'memory_ready', 'VmRSS'), 1)} "
                     f"| {_num(get(e, 'guard', 'memory_after', 'VmRSS'), 1)} "
                     f"| {_num(get(e, 'guard', 'memory_after', 'VmHWM'), 1)} | {_num(get(e, 'guard', 'startup_s'))} "
                     f"| {_num(get(e, 'floor', 'memory_after', 'VmRSS'), 1)} |")
    return lines


def phases(run: Mapping[str, Any]) -> list[tuple[str, str, str, str, Mapping[str, Any]]]:
    """(size, server, kind, phase, measured) for every recorded phase (the median saturated round)."""
    out = []
    ceiling = run.get("ceiling")
    if ceiling and ceiling.get("throughput"):
        out.append(("–", "floor", "trivial", "ceiling", ceiling))
    for e in run["sizes"]:
        for server in ("floor", "guard"):
            for phase, label in (("saturate", f"{run['settings']['connections']} connections"),
                                 ("latency", "1 connection")):
                for kind in kinds(run):
                    measured = get(e, server, phase, kind)
                    if measured:
                        out.append((e["size"], server, kind, label, measured))
    return out


def contention(run: Mapping[str, Any]) -> list[str]:
    """How busy the rest of the host was (the machine may be shared)."""
    seen = [(m.get("other_cpu_cores", 0.0), f"{size} {server} {kind} ({label})", m.get("loadavg_1m_before"))
            for size, server, kind, label, m in phases(run)]
    if not seen:
        return []
    busy = [s for s in seen if s[0] >= BUSY_CORES]
    loads = [s[2] for s in seen if s[2] is not None]
    head = (f"> **Host load:** 1-minute load average {min(loads):.2f}–{max(loads):.2f} before the phases; "
            if loads else "> **Host load:** ")
    if not busy:
        return [head + f"other processes used less than {BUSY_CORES} cores in every phase.", ""]
    worst = max(busy)
    return [head + f"other processes used ≥ {BUSY_CORES} cores in {len(busy)} of {len(seen)} phases (up to "
            f"{worst[0]:.2f}, in {worst[1]}; see the CPU table). Numbers from those phases are pessimistic.", ""]


def ceiling_lines(run: Mapping[str, Any]) -> list[str]:
    ceiling = run.get("ceiling") or {}
    gen = run.get("generator") or {}
    if not gen.get("available"):
        return [f"Not measured: {gen.get('wrk', 'no load generator')}.", ""]
    if not ceiling.get("throughput"):
        return ["Not measured.", ""]
    fastest = max((rate(e, "floor", k) or 0.0 for e in run["sizes"] for k in kinds(run)), default=0.0)
    cores = ceiling["generator_cpu_cores"] or 1e-9
    one_core = ceiling["throughput"] / cores
    lines = [f"The floor answering a trivial review (`{{\"request\":{{\"uid\":\"0\"}}}}`, "
             f"{run['settings']['connections']} connections): **{_num(ceiling['throughput'])}/s** (best of "
             f"{', '.join(_num(float(r)) for r in ceiling.get('rounds', []))}), with wrk ({gen.get('wrk')}, "
             f"one thread) using {cores:.2f} of a core and the floor {ceiling.get('server_cpu_cores')}."]
    if fastest:
        verdict = "reaches" if one_core >= 2 * fastest else "does **not** reach"
        lines.append(f"wrk is one thread: at that cost per request one core carries ~{_num(one_core)}/s, "
                     f"{one_core / fastest:.1f} × the fastest floor rate measured with a review "
                     f"({_num(fastest)}/s), so the generator {verdict} 2 × the floor's rate. The trivial "
                     f"review itself ran at {ceiling['throughput'] / fastest:.2f} × that floor rate: past that, "
                     "the limit is the server's own Python (one core), not the generator.")
    return [" ".join(lines), ""]


def targets(run: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) for issue 17's targets (and issue 8's view-build and estimator ones)."""
    sizes = run["sizes"]
    rows: list[tuple[str, str, str]] = []

    def row(name: str, measured: str, ok: bool | None) -> None:
        rows.append((name, measured, "–" if ok is None else "met" if ok else "**missed**"))

    for kind in kinds(run):
        ratios = [(e["size"], r) for e in sizes if (r := ratio(e, kind)) is not None]
        row(f"{kind}: guard ≥ {TARGET_RATIO:.0%} of the floor, {run['settings']['connections']} connections",
            ", ".join(f"{s}: {r:.0%}" for s, r in ratios),
            all(r >= TARGET_RATIO for _, r in ratios) if ratios else None)
    for kind in kinds(run):
        p99s = [(e["size"], v) for e in sizes if (v := get(e, "guard", "latency", kind, "latency_us", "p99"))]
        row(f"{kind}: guard p99 ≤ {TARGET_P99_MS:g} ms at 1 connection",
            ", ".join(f"{s}: {_ms(v)} ms" for s, v in p99s),
            all(v / 1000 <= TARGET_P99_MS for _, v in p99s) if p99s else None)
    big = max(sizes, key=lambda e: e["pods"]) if sizes else None
    rss = get(big, "guard", "memory_after", "VmRSS") if big else None
    if big is not None and rss is not None:
        peak = get(big, "guard", "memory_after", "VmHWM")
        row(f"RSS ≤ {TARGET_RSS_MIB} MiB with the {big['pods']:,}-pod view", f"{rss} MiB (peak {peak} MiB)",
            rss <= TARGET_RSS_MIB)
    ceiling = run.get("ceiling") or {}
    fastest = max((rate(e, "floor", k) or 0.0 for e in sizes for k in kinds(run)), default=0.0)
    if ceiling.get("throughput") and fastest:
        one_core = ceiling["throughput"] / (ceiling["generator_cpu_cores"] or 1e-9)
        row("load generator reaches ≥ 2 × the floor's rate", f"~{_num(one_core)}/s per wrk core vs "
            f"{_num(fastest)}/s: × {one_core / fastest:.1f}", one_core >= 2 * fastest)
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


def rounds_table(run: Mapping[str, Any]) -> list[str]:
    lines = ["| size | review | server | saturated rounds (reviews/s, in run order) | median |",
             "| --- | --- | --- | --- | ---: |"]
    for e in run["sizes"]:
        for kind in kinds(run):
            for server in ("floor", "guard"):
                rounds = get(e, server, "saturate_rounds", kind)
                if rounds:
                    lines.append(f"| {e['size']} | {kind} | {server} | {', '.join(_num(float(r)) for r in rounds)} "
                                 f"| {_num(rate(e, server, kind))} |")
            pairs = round_ratios(e, kind)
            if pairs:
                lines.append(f"| {e['size']} | {kind} | guard/floor per round | "
                             f"{', '.join(f'{r:.2f}' for r in pairs)} | {_num(ratio(e, kind))} |")
    return lines


def latency_table(run: Mapping[str, Any]) -> list[str]:
    lines = ["| size | review | server | reviews/s | mean | p50 | p90 | p99 | p99.9 | max |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for e in run["sizes"]:
        for kind in kinds(run):
            for server in ("floor", "guard"):
                m = get(e, server, "latency", kind)
                if m:
                    lat = m["latency_us"]
                    lines.append(f"| {e['size']} | {kind} | {server} | {_num(m['throughput'])} | {_ms(lat['mean'])} "
                                 f"| {_ms(lat['p50'])} | {_ms(lat['p90'])} | {_ms(lat['p99'])} | {_ms(lat['p999'])} "
                                 f"| {_ms(lat['max'])} |")
    return lines


def machine_table(run: Mapping[str, Any]) -> list[str]:
    lines = ["| size | server | review | phase | reviews/s | server CPU | wrk CPU | other processes | "
             "load 1 min | errors | guard's decisions |",
             "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for size, server, kind, label, m in phases(run):
        shown = ", ".join(f"{k} {v:,}" for k, v in sorted((m.get("decisions") or {}).items()))
        lines.append(f"| {size} | {server} | {kind} | {label} | {_num(m['throughput'])} | {m.get('server_cpu_cores')} "
                     f"| {m['generator_cpu_cores']} | {m.get('other_cpu_cores')} | {m.get('loadavg_1m_before')} "
                     f"| {m['errors']} | {shown} |")
    return lines


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


def markdown(run: Mapping[str, Any], *, baseline: Mapping[str, Any] | None = None) -> str:
    m, s, gen = run["machine"], run["settings"], run.get("generator") or {}
    loads = ", ".join(str(x) for x in m["loadavg_at_start"])
    end = f"; at the end {', '.join(str(x) for x in m['loadavg_at_end'])}" if m.get("loadavg_at_end") else ""
    out = [
        "# ollama-guard benchmark results",
        "",
        f"- Machine: {m['nproc']} × {m['cpu']} (nproc {m['nproc']}), Linux {m['kernel']}, Python {m['python']}, "
        f"uvicorn {m['uvicorn']} on {m.get('loop', '?')} + {m.get('http', '?')}; load average (1, 5, 15 min) at "
        f"start {loads}{end}",
        f"- Run: {run['started']} to {run['finished']}; code: {run.get('revision', 'not recorded')}",
        f"- Command: `{run['command'].strip()}`",
        f"- Load generator: {gen.get('wrk', '–')}, one thread, keep-alive TLS (wrk's own OpenSSL), one Lua "
        "script per review kind (`benchmarks/wrk/`) replaying pre-built review bodies derived from requests "
        "recorded from kube-apiserver 1.24 (`benchmarks/reviews.py`; 40 distinct reviews per kind, each with "
        f"its own UID). Saturated: {s['connections']} connections, {s['rounds']} rounds of {s['round_s']} s per "
        "server and kind, floor and guard alternating (both servers up side by side; the median round "
        "reported, each back-to-back pair's guard/floor ratio shown as a range), after a "
        f"{s['warmup_s']} s warm-up. Latency: 1 connection, one review at a time, {s['duration_s']} s per "
        "server and kind (wrk's percentiles).",
        "- Floor: `benchmarks/floor.py`, a bare ASGI app on the guard's own uvicorn settings (uvloop, "
        "httptools) and certificate; it decodes the review with orjson, as the guard does, and answers allowed "
        "with its UID. Its requests take uvicorn's ASGI cycle; the guard's reviews take the guard's direct path "
        "(`webhook/http/protocol.py`), which skips that cycle (`FINDINGS.md` section 14: a floor on that path).",
        "- Profiles, causes, fixes and before/after: `benchmarks/FINDINGS.md`.",
        "",
        *contention(run),
        "## Summary",
        "",
        *summary_table(run),
        "",
        "guard/floor: the median rounds' ratio, then the range of the back-to-back pairs." + direct_note(run),
        *failures(run),
        "",
        "## The generator's ceiling",
        "",
        *ceiling_lines(run),
        "## Targets (issue 17)",
        "",
        "| target | measured | verdict |",
        "| --- | --- | --- |",
        *[f"| {t} | {v} | {ok} |" for t, v, ok in targets(run)],
        "",
        "## Memory and startup",
        "",
        *memory_table(run),
        "",
        "## Latency at 1 connection (ms)",
        "",
        *latency_table(run),
        "",
        "## Saturated rounds",
        "",
        *rounds_table(run),
        "",
        "## CPU per phase: server, generator, the rest of the machine",
        "",
        "Cores used during each phase (saturated: the median round). 'Other processes' is the whole machine "
        "less the server and wrk: anything above ~0.1 means another process competed for the two cores. "
        "The guard's decisions are its own `/metrics` counts over the phase.",
        "",
        *machine_table(run),
        "",
        *view_section(run),
        *estimator_section(run),
        *(baseline_section(run, baseline) if baseline else []),
        "![latency at 1 connection by cluster size](latency.svg)",
        "",
    ]
    return "\n".join(out)


def view_total(view: Mapping[str, Any]) -> tuple[float, bool]:
    """Seconds `ollama-guard serve` needs to build its state, and whether that was measured."""
    if "serve_s" in view:
        return float(view["serve_s"]), True
    if "loader_s" in view:  # runs before 2026-11-24 06:00 timed load_objects + SnapshotSource on the list
        return float(view["loader_s"]) + float(view["source_s"]), True
    return float(view.get("loader_projected_s", 0)) + float(view.get("source_s", 0)), False


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
             "| size | review | metric | before | after |", "| --- | --- | --- | ---: | ---: |"]
    for e in run["sizes"]:
        old = before.get(e["size"])
        if old is None:
            continue
        for kind in kinds(run):
            for label, value in (("guard reviews/s", lambda x, k=kind: rate(x, "guard", k)),
                                 ("guard/floor", lambda x, k=kind: ratio(x, k)),
                                 ("guard p99, 1 connection (ms)",
                                  lambda x, k=kind: get(x, "guard", "latency", k, "latency_us", "p99"))):
                a, b = value(old), value(e)
                if label.endswith("(ms)"):
                    a, b = (None if v is None else v / 1000 for v in (a, b))
                lines.append(f"| {e['size']} | {kind} | {label} | {_num(a, 3 if label.endswith('(ms)') else 2)} "
                             f"| {_num(b, 3 if label.endswith('(ms)') else 2)} |")
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
