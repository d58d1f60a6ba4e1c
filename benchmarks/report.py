"""Rendering a benchmark run: `RESULTS.md` (tables, targets), the raw `.json`, and `latency.svg`.

Pure formatting of the dict `benchmarks.run` builds; the SVG is written by hand (no plotting
library): latency percentiles at the fixed offered rate by cluster size, guard against floor.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

KINDS = ("pod-mutate", "pod-validate", "binding", "binding:allowed", "binding:denied", "deployment", "all")
PCTS = ("p50", "p95", "p99")


def write(run: Mapping[str, Any], *, out: Path, baseline: Mapping[str, Any] | None = None) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(run, indent=1), encoding="utf-8")
    out.write_text(markdown(run, baseline=baseline), encoding="utf-8")
    out.with_name("latency.svg").write_text(svg(run), encoding="utf-8")


def _get(entry: Mapping[str, Any], *path: str) -> Any:
    value: Any = entry
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def _num(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and value >= 100:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"


def _pcts(entry: Mapping[str, Any], server: str, kind: str = "all") -> str:
    lat = _get(entry, server, "rate", "latency_ms", kind) or {}
    return " / ".join(_num(lat.get(p)) for p in PCTS)


def ratio(entry: Mapping[str, Any]) -> float | None:
    guard, floor = _get(entry, "guard", "saturate", "throughput"), _get(entry, "floor", "saturate", "throughput")
    return round(guard / floor, 3) if guard and floor else None


def summary_table(run: Mapping[str, Any]) -> list[str]:
    lines = [
        "| size | nodes | pods | guard (reviews/s) | floor (reviews/s) | guard/floor | guard p50 / p95 / p99 (ms) "
        "| floor p50 / p95 / p99 (ms) | guard RSS after load (MiB) | guard startup (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for e in run["sizes"]:
        mark = "" if _get(e, "guard", "launcher") in (None, "ollama-guard serve") else " †"
        lines.append(
            f"| {e['size']}{mark} | {e['nodes']:,} | {e['pods']:,} | {_num(_get(e, 'guard', 'saturate', 'throughput'))} "
            f"| {_num(_get(e, 'floor', 'saturate', 'throughput'))} | {_num(ratio(e))} | {_pcts(e, 'guard')} "
            f"| {_pcts(e, 'floor')} | {_num(_get(e, 'guard', 'memory_after', 'VmRSS'), 1)} "
            f"| {_num(_get(e, 'guard', 'startup_s'))} |"
        )
    return lines


def targets(run: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) for each of issue 8's targets that this run measured."""
    sizes = run["sizes"]
    rows: list[tuple[str, str, str]] = []

    def row(name: str, measured: str, ok: bool | None) -> None:
        rows.append((name, measured, "–" if ok is None else "met" if ok else "**missed**"))

    p99s = [(e["size"], _get(e, "guard", "rate", "latency_ms", "pod-validate", "p99")) for e in sizes]
    p99s = [(s, v) for s, v in p99s if v is not None]
    row("pod validate p99 ≤ 5 ms at the offered rate", ", ".join(f"{s}: {v} ms" for s, v in p99s),
        all(v <= 5 for _, v in p99s) if p99s else None)
    ratios = [(e["size"], ratio(e)) for e in sizes]
    ratios = [(s, r) for s, r in ratios if r is not None]
    row("saturated throughput ≥ 60% of the floor", ", ".join(f"{s}: {r:.0%}" for s, r in ratios),
        all(r >= 0.6 for _, r in ratios) if ratios else None)
    first, last = (sizes[0], sizes[-1]) if len(sizes) > 1 else (None, None)
    if first is not None and last is not None:
        for kind in ("all", "pod-validate"):
            a = _get(first, "guard", "rate", "latency_ms", kind, "p50")
            b = _get(last, "guard", "rate", "latency_ms", kind, "p50")
            if a and b:
                row(f"p50 ({kind}) at {last['pods']:,} pods ≤ 1.2 × p50 at {first['pods']:,} pods",
                    f"{b} ms vs {a} ms: × {b / a:.2f}", b <= 1.2 * a)
    big = max(sizes, key=lambda e: e["pods"]) if sizes else None
    rss = _get(big, "guard", "memory_after", "VmRSS") if big else None
    if big is not None and rss is not None:
        peak = _get(big, "guard", "memory_after", "VmHWM")
        row(f"RSS ≤ 250 MiB with the {big['pods']:,}-pod view", f"{rss} MiB (peak {peak} MiB)", rss <= 250)
    view = run.get("view_build")
    if view:
        total = view.get("total_s")
        how = "measured" if "loader_s" in view else "projected (loader not run, see below)"
        seconds = total if "loader_s" in view else view.get("loader_projected_s", 0) + view.get("source_s", 0)
        row(f"view build ≤ 10 s for {view['pods']:,} pods", f"{seconds:.1f} s, {how}", seconds <= 10)
    est = run.get("estimator") or {}
    if est:
        worst = max(est.get("annotation_1_model_us", 0), est.get("poststart_2_models_us", 0))
        row("estimator ≤ 50 µs per pod (`compute_demand`)", f"{worst} µs (worst of the two pods)", worst <= 50)
    return rows


def kinds_table(run: Mapping[str, Any], server: str) -> list[str]:
    lines = ["| size | review | count | p50 | p95 | p99 | max | decisions |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for e in run["sizes"]:
        latencies = _get(e, server, "rate", "latency_ms") or {}
        decisions = _get(e, server, "rate", "decisions") or {}
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
                p = _get(e, server, mode)
                if not p:
                    continue
                lag = _get(p, "send_lag_ms", "p99")
                lines.append(f"| {e['size']} | {server} | {mode} | {_num(p['throughput'])} | {p['server_cpu_cores']} "
                             f"| {p['generator_cpu_cores']} | {p['machine_cpu_cores']} | {_num(lag)} "
                             f"| {p['errors']} |")
    return lines


def markdown(run: Mapping[str, Any], *, baseline: Mapping[str, Any] | None = None) -> str:
    m, s = run["machine"], run["settings"]
    out = [
        "# ollama-guard benchmark results",
        "",
        f"- Machine: {m['nproc']} × {m['cpu']} (nproc {m['nproc']}), Linux {m['kernel']}, Python {m['python']}, "
        f"uvicorn {m['uvicorn']}; load average at start {', '.join(str(x) for x in m['loadavg_at_start'])}",
        f"- Run: {run['started']} to {run['finished']}",
        f"- Command: `{run['command']}`",
        f"- Load: {s['connections']} keep-alive TLS connections from one generator process "
        f"(`benchmarks/load.py`); each phase {s['duration_s']} s after a {s['warmup_s']} s warm-up; latency "
        f"at {s['rate']:.0f} reviews/s offered (open loop, measured from each review's scheduled time). "
        "Mix per 10 reviews: 3 pod mutate, 3 pod validate, 3 binding validate, 1 Deployment validate, "
        "derived from requests recorded from kube-apiserver 1.24 (`benchmarks/reviews.py`).",
        "- Floor: `benchmarks/floor.py`, a bare ASGI app on the same uvicorn settings and certificate "
        "(decodes the review, answers allowed with its UID).",
        "",
        "## Summary",
        "",
        *summary_table(run),
        "",
        "Latencies: all reviews at the offered rate. † served by `benchmarks/serve_direct.py` (the guard's "
        "server with the snapshot parsed by `json.loads`), because `ollama-guard serve` could not load this "
        "snapshot in `--max-load-seconds` (see the loader row under View build).",
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
    lines += ["| snapshot | MB | objects | GPU nodes | tenants | `load_objects` (s) | `json.loads` (s) "
              "| `SnapshotSource` (s) | total (s) |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    loader = f"{view['loader_s']}" if "loader_s" in view else f"~{view.get('loader_projected_s')} (projected)"
    total = view["total_s"] if "loader_s" in view else view.get("loader_projected_s", 0) + view["source_s"]
    lines.append(f"| {view['size']} | {view['file_mb']} | {view['objects']:,} | {view['nodes']:,} "
                 f"| {view['tenants']:,} | {loader} | {view['json_s']} | {view['source_s']} | {_num(float(total))} |")
    probes = [(e["size"], e["loader_probe"]) for e in run["sizes"] if e.get("loader_probe")]
    lines += ["", "Total = `ollama-guard serve`'s loader + `SnapshotSource`. With `json.loads` instead of the "
              f"loader it would be {view['total_json_s']} s."]
    if probes:
        lines += ["Loader probe (`webhook.snapshot.parse_documents` on a ~1 MB slice of the snapshot): " + "; ".join(
            f"{s}: {p['s_per_mb']} s/MB, {p['file_mb']} MB → ~{p['projected_s']:.0f} s" for s, p in probes) + "."]
    return [*lines, ""]


def estimator_section(run: Mapping[str, Any]) -> list[str]:
    est = run.get("estimator") or {}
    if not est:
        return []
    rows = [("recorded pod (`llama3.1:8b` by annotation), mutated", "annotation_1_model"),
            ("two models from the postStart pull script, mutated", "poststart_2_models")]
    return ["## Estimator cost per pod (timeit, best of runs)", "",
            "| pod | `compute_demand` (µs) | `read_pod` + `compute_demand` (µs) |", "| --- | ---: | ---: |",
            *[f"| {label} | {est.get(key + '_us')} | {est.get(key + '_with_read_pod_us')} |" for label, key in rows],
            ""]


def baseline_section(run: Mapping[str, Any], baseline: Mapping[str, Any]) -> list[str]:
    before = {e["size"]: e for e in baseline.get("sizes", [])}
    lines = [f"## Before and after (before: run of {baseline.get('started')})", "",
             "| size | metric | before | after |", "| --- | --- | ---: | ---: |"]
    metrics: tuple[tuple[str, Callable[[Mapping[str, Any]], Any]], ...] = (
        ("guard reviews/s", lambda e: _get(e, "guard", "saturate", "throughput")),
        ("guard/floor", ratio),
        ("guard p50 (ms)", lambda e: _get(e, "guard", "rate", "latency_ms", "all", "p50")),
        ("guard p99 (ms)", lambda e: _get(e, "guard", "rate", "latency_ms", "all", "p99")),
        ("pod validate p99 (ms)", lambda e: _get(e, "guard", "rate", "latency_ms", "pod-validate", "p99")),
        ("guard RSS after load (MiB)", lambda e: _get(e, "guard", "memory_after", "VmRSS")),
        ("guard startup (s)", lambda e: _get(e, "guard", "startup_s")),
    )
    for e in run["sizes"]:
        old = before.get(e["size"])
        if old is None:
            continue
        for label, get in metrics:
            lines.append(f"| {e['size']} | {label} | {_num(get(old))} | {_num(get(e))} |")
    for label, key in (("view build total (s)", "total_s"), ("view build, json.loads path (s)", "total_json_s")):
        lines.append(f"| {run.get('view_build', {}).get('size', '–')} | {label} "
                     f"| {_num(_get(baseline, 'view_build', key))} | {_num(_get(run, 'view_build', key))} |")
    return [*lines, ""]


def svg(run: Mapping[str, Any], *, width: int = 720, height: int = 420) -> str:
    """Latency percentiles (log scale) at the offered rate by cluster size: guard solid, floor dashed."""
    sizes = [e for e in run["sizes"] if _get(e, "guard", "rate") or _get(e, "floor", "rate")]
    left, right, top, bottom = 70, 170, 40, 60
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for e in sizes for srv in ("guard", "floor") for p in PCTS
              if (v := _get(e, srv, "rate", "latency_ms", "all", p))]
    lo = 10 ** math.floor(math.log10(min(values))) if values else 0.1
    hi = 10 ** math.ceil(math.log10(max(values))) if values else 100.0
    hi = hi * 10 if hi <= lo else hi

    def x(i: int) -> float:
        return left + (plot_w * (i + 0.5) / max(len(sizes), 1))

    def y(v: float) -> float:
        return top + plot_h * (1 - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)))

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="12">', '<rect width="100%" height="100%" fill="white"/>',
             f'<text x="{left}" y="22" font-size="14">Latency at {run["settings"]["rate"]:.0f} reviews/s by cluster '
             'size (all reviews; log scale)</text>']
    tick = lo
    while tick <= hi * 1.0001:
        for mult in (1, 2, 5):
            v = tick * mult
            if lo <= v <= hi:
                parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/>')
                parts.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g} ms</text>')
        tick *= 10
    for i, e in enumerate(sizes):
        parts.append(f'<text x="{x(i):.1f}" y="{top + plot_h + 20}" text-anchor="middle">{e["size"]}</text>')
        parts.append(f'<text x="{x(i):.1f}" y="{top + plot_h + 36}" text-anchor="middle">'
                     f'{e["nodes"]:,} nodes / {e["pods"]:,} pods</text>')
    colors = {"p50": "#1f77b4", "p95": "#ff7f0e", "p99": "#d62728"}
    legend_y = top + 10
    for srv, dash in (("guard", ""), ("floor", ' stroke-dasharray="6,4"')):
        for p in PCTS:
            points = [(x(i), y(v)) for i, e in enumerate(sizes) if (v := _get(e, srv, "rate", "latency_ms", "all", p))]
            if not points:
                continue
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colors[p]}" stroke-width="2"{dash}/>')
            parts += [f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{colors[p]}"/>' for px, py in points]
            parts.append(f'<line x1="{width - right + 15}" x2="{width - right + 45}" y1="{legend_y}" '
                         f'y2="{legend_y}" stroke="{colors[p]}" stroke-width="2"{dash}/>')
            parts.append(f'<text x="{width - right + 52}" y="{legend_y + 4}">{srv} {p}</text>')
            legend_y += 18
    parts.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#888"/>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def parse_summary(text: str) -> list[dict[str, str]]:
    """The Summary table of a RESULTS.md as rows of column -> cell (for tests and comparisons)."""
    lines = text.split("## Summary", 1)[1].split("\n## ", 1)[0].strip().splitlines()
    rows = [line for line in lines if line.startswith("|")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in r.strip("|").split("|")), strict=True)) for r in rows[2:]]


def sizes_of(rows: Sequence[Mapping[str, str]]) -> list[str]:
    return [r["size"] for r in rows]
