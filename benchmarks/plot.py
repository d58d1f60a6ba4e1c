"""The latency plot of a benchmark run, as a hand-written SVG (no plotting library).

Latency percentiles (p50, p90, p99; log scale) of pod validate reviews at 1 connection by cluster
size: the guard solid, the floor dashed. Input: the dict `benchmarks.run` builds. Pure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

PCTS = ("p50", "p90", "p99")
COLORS = {"p50": "#1f77b4", "p90": "#ff7f0e", "p99": "#d62728"}
KIND = "pod-validate"


def get(entry: Mapping[str, Any] | None, *path: str) -> Any:
    """`entry[path[0]][path[1]]…`, or None where a key is missing."""
    value: Any = entry
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def svg(run: Mapping[str, Any], *, width: int = 720, height: int = 420) -> str:
    """Latency percentiles (log scale, ms) at 1 connection by cluster size: guard solid, floor dashed."""

    def ms(entry: Mapping[str, Any], server: str, pct: str) -> float | None:
        us = get(entry, server, "latency", KIND, "latency_us", pct)
        return us / 1000 if us else None

    sizes = [e for e in run["sizes"] if get(e, "guard", "latency", KIND) or get(e, "floor", "latency", KIND)]
    left, right, top, bottom = 70, 170, 40, 75
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for e in sizes for srv in ("guard", "floor") for p in PCTS if (v := ms(e, srv, p))]
    lo = 10 ** math.floor(math.log10(min(values))) if values else 0.1
    hi = 10 ** math.ceil(math.log10(max(values))) if values else 100.0
    hi = hi * 10 if hi <= lo else hi

    def x(i: int) -> float:
        return left + (plot_w * (i + 0.5) / max(len(sizes), 1))

    def y(v: float) -> float:
        return top + plot_h * (1 - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)))

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="12">', '<rect width="100%" height="100%" fill="white"/>',
             f'<text x="{left}" y="22" font-size="14">Pod validate latency at 1 connection by cluster size '
             '(log scale)</text>']
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
        parts.append(f'<text x="{x(i):.1f}" y="{top + plot_h + 36}" text-anchor="middle">{e["pods"]:,} pods</text>')
        parts.append(f'<text x="{x(i):.1f}" y="{top + plot_h + 52}" text-anchor="middle">{e["nodes"]:,} nodes</text>')
    legend_y = top + 10
    for srv, dash in (("guard", ""), ("floor", ' stroke-dasharray="6,4"')):
        for p in PCTS:
            points = [(x(i), y(v)) for i, e in enumerate(sizes) if (v := ms(e, srv, p))]
            if not points:
                continue
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{COLORS[p]}" stroke-width="2"{dash}/>')
            parts += [f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{COLORS[p]}"/>' for px, py in points]
            parts.append(f'<line x1="{width - right + 15}" x2="{width - right + 45}" y1="{legend_y}" '
                         f'y2="{legend_y}" stroke="{COLORS[p]}" stroke-width="2"{dash}/>')
            parts.append(f'<text x="{width - right + 52}" y="{legend_y + 4}">{srv} {p}</text>')
            legend_y += 18
    parts.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#888"/>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
