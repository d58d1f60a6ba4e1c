"""One self-contained HTML page for an `AuditReport`: inline CSS, one inline SVG stacked bar per
guarded node (each tenant's share, the free part and the reserved part, a `<title>` tooltip per
segment; where a tenant's Ollama reported what it holds, a hatched strip along the bottom of its
share, running on cross-hatched past it when it holds more than its demand), then the findings,
the pods and workloads, what the mutating webhook would inject and the namespaces.

No scripts, fonts, images or any network resource; every user string is HTML-escaped (text and
attributes). Pure: report in, text out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape

from webhook.audit.model import RESULTS, AuditReport, Finding, NodeLine, OtherNode, Subject, TenantLine
from webhook.audit.render_text import (
    admission_text,
    advertised_text,
    gpu_text,
    header_lines,
    iso,
    placement_text,
    verdict_text,
)
from webhook.core.quantity import format_mib

PALETTE = ("#4e79a7", "#f28e2b", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#e15759")
BAR_WIDTH = 1000
BAR_TOP, BAR_HEIGHT = 6, 40
OBSERVED_HEIGHT = 10

CSS = """
:root { color-scheme: light; --fail: #c62828; --warn: #b26a00; --pass: #2e7d32; --error: #6a1b9a; --skip: #6b7280; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328;
       background: #f6f7f9; }
header, main, footer { max-width: 1180px; margin: 0 auto; padding: 0 24px; }
header { padding-top: 24px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 28px 0 10px; }
h3 { font-size: 16px; margin: 0 0 4px; }
.meta, .sub, .note { color: #57606a; }
.sub { font-weight: normal; font-size: 14px; }
.summary { list-style: none; display: flex; gap: 8px; padding: 0; margin: 12px 0 0; flex-wrap: wrap; }
.summary li, .badge { border-radius: 999px; padding: 2px 10px; font-weight: 600; color: #fff; white-space: nowrap; }
.summary li.zero { opacity: .35; }
.fail { background: var(--fail); } .warn { background: var(--warn); } .pass { background: var(--pass); }
.error { background: var(--error); } .skip { background: var(--skip); }
.card { background: #fff; border: 1px solid #d0d7de; border-radius: 8px; padding: 14px 16px; margin: 0 0 14px; }
.card.over { border-color: var(--fail); box-shadow: 0 0 0 1px var(--fail); }
.figures { margin: 0 0 8px; font-variant-numeric: tabular-nums; }
.figures strong.over { color: var(--fail); }
svg.bar { display: block; width: 100%; height: auto; }
svg.bar text { font: 13px system-ui, sans-serif; fill: #fff; paint-order: stroke; stroke: rgba(0, 0, 0, .35);
               stroke-width: 2px; pointer-events: none; }
svg.bar text.axis { fill: #57606a; stroke: none; font-size: 12px; }
svg.bar rect:hover { filter: brightness(1.12); }
.legend { list-style: none; padding: 0; margin: 8px 0 0; display: grid;
          grid-template-columns: repeat(auto-fill, minmax(330px, 1fr)); gap: 4px 16px; font-size: 14px; }
.legend li { display: flex; gap: 8px; align-items: baseline; }
.swatch { flex: none; width: 12px; height: 12px; border-radius: 2px; display: inline-block;
          transform: translateY(1px); }
.swatch.planned { opacity: .6; outline: 1px dashed #1f2328; }
table { width: 100%; border-collapse: collapse; background: #fff; border: 1px solid #d0d7de; font-size: 14px; }
th, td { text-align: left; vertical-align: top; padding: 6px 10px; border-bottom: 1px solid #eaeef2; }
th { background: #f0f2f5; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.msg { max-width: 560px; }
tr.denied td:first-child { border-left: 3px solid var(--fail); }
code { font: 13px ui-monospace, SFMono-Regular, Menlo, monospace; background: #f0f2f5; padding: 1px 4px;
       border-radius: 4px; }
details { margin: 10px 0; } summary { cursor: pointer; color: #57606a; }
footer { padding: 24px; color: #57606a; font-size: 13px; }
"""


def render_html(report: AuditReport) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>ollama-guard audit · {escape(iso(report))}</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        _header(report),
        "<main>",
        _nodes(report),
        _findings(report.ordered_findings()),
        _subjects(report.subjects),
        _injections(report.subjects),
        _namespaces(report),
        "</main>",
        _footer(report),
        "</body>",
        "</html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"


def _header(report: AuditReport) -> str:
    lines = header_lines(report)
    pills = "".join(
        f'<li class="{r}{"" if report.summary[r] else " zero"}">{report.summary[r]} {r}</li>' for r in RESULTS
    )
    meta = f'<p class="meta">{escape(lines[0])}</p>'
    return f'<header><h1>ollama-guard audit</h1>{meta}<ul class="summary">{pills}</ul></header>'


def _footer(report: AuditReport) -> str:
    ignored = ""
    if report.ignored:
        kinds = ", ".join(sorted({ref.kind for _, ref in report.ignored}))
        ignored = f"Ignored {len(report.ignored)} manifest object(s) of other kinds ({escape(kinds)}). "
    return (
        f"<footer>{ignored}Verdicts are what the validating webhook would answer in <code>enforce</code> mode; "
        "“in its namespace” is its answer under the namespace's own mode. Planned tenants come from the "
        "manifests, placed on the candidate node with the most free VRAM.</footer>"
    )


# --- nodes ---------------------------------------------------------------------------------------
def _nodes(report: AuditReport) -> str:
    out = ['<section id="nodes"><h2>Guarded GPU nodes (time-sliced)</h2>']
    out += [_node_card(line) for line in report.nodes] or ['<p class="note">No time-sliced GPU node.</p>']
    if report.other_nodes:
        rows = [[escape(o.name), escape(o.product or "—"), _slots(o), escape(o.reason)] for o in report.other_nodes]
        out.append("<h2>GPU nodes not guarded</h2>" + _table(["node", "GPU", "slots", "why"], rows))
    out.append("</section>")
    return "\n".join(out)


def _slots(node: OtherNode) -> str:
    return "MIG slices" if node.mig else f"{node.slots} {escape(node.gpu_resource)}"


def _node_card(line: NodeLine) -> str:
    node = line.node
    over = line.free_mib < 0
    free = (
        f'<strong class="over">{format_mib(-line.free_mib)} over budget</strong>'
        if over
        else f"<strong>{format_mib(line.free_mib)}</strong> free"
    )
    planned = f" (incl. {format_mib(line.planned_mib)} planned)" if line.planned_mib else ""
    reserved = f" · {format_mib(node.reserved_mib)} reserved" if node.reserved_mib else ""
    figures = (
        f"capacity {format_mib(node.capacity_mib)}{reserved} · budget {format_mib(node.budget_mib)} · "
        f"committed <strong>{format_mib(line.committed_mib)}</strong>{planned} · {free} · "
        f"{round(line.used_ratio * 100)}% used · advertised {escape(advertised_text(line).replace(chr(10), ' '))}"
    )
    problems = "".join(f'<p class="note"><span class="badge error">error</span> {escape(p)}</p>' for p in node.problems)
    return (
        f'<article class="card{" over" if over else ""}">'
        f'<h3>{escape(node.name)} <span class="sub">{escape(gpu_text(line))}</span></h3>'
        f'<p class="figures">{figures}</p>{problems}{node_bar(line)}{_legend(line.tenants)}</article>'
    )


def node_bar(line: NodeLine) -> str:
    """One SVG stacked bar: tenants (and what they were observed holding), free, reserved; scaled to
    the larger of capacity, commitments and observed use."""
    node = line.node
    if node.problems or node.capacity_mib <= 0:
        return _unknown_bar(line)
    scale = max(node.capacity_mib, node.reserved_mib + line.committed_mib, _observed_reach(line), 1)

    def x(mib: int) -> float:
        return round(mib * BAR_WIDTH / scale, 2)

    segments: list[str] = []
    observed: list[tuple[str, str]] = []
    cursor = 0
    for i, tenant in enumerate(line.tenants):
        segments.append(
            _segment(
                x(cursor),
                x(cursor + tenant.demand_mib),
                tenant_color(i),
                _tenant_title(tenant),
                tenant.name,
                planned=tenant.planned,
                part=("tenant", tenant.key),
            )
        )
        if tenant.observed_mib is not None:
            end, seen = x(cursor + tenant.demand_mib), x(cursor + tenant.observed_mib)
            observed.append(_observed(x(cursor), end, seen, tenant))
        cursor += tenant.demand_mib
    if line.free_mib > 0:
        free = f"free: {format_mib(line.free_mib)}"
        segments.append(_segment(x(cursor), x(node.budget_mib), "#e5e7eb", free, "", part=("free", "")))
    if node.reserved_mib:
        start = max(node.budget_mib, cursor)
        segments.append(
            _segment(
                x(start),
                x(start + node.reserved_mib),
                "#9ca3af",
                f"reserved for the system: {format_mib(node.reserved_mib)}",
                "reserved",
                part=("reserved", ""),
            )
        )
    if observed:  # what runs past a share is drawn last, over its neighbours' strips
        segments += [_patterns(), *(o[0] for o in observed), *(o[1] for o in observed)]
    budget_x = x(node.budget_mib)
    marker = (
        f'<line x1="{budget_x}" y1="{BAR_TOP - 4}" x2="{budget_x}" y2="{BAR_TOP + BAR_HEIGHT + 4}" '
        f'stroke="{"#c62828" if line.free_mib < 0 else "#1f2328"}" stroke-width="2" stroke-dasharray="4 3">'
        f"<title>budget: {escape(format_mib(node.budget_mib))}</title></line>"
    )
    label = f"{node.name}: {format_mib(line.committed_mib)} of {format_mib(node.budget_mib)} VRAM committed"
    axis_y = BAR_TOP + BAR_HEIGHT + 16
    return (
        f'<svg class="bar" viewBox="0 0 {BAR_WIDTH} {axis_y + 4}" role="img" aria-label="{escape(label)}">'
        f"{''.join(segments)}{marker}"
        f'<text class="axis" x="0" y="{axis_y}">0</text>'
        f'<text class="axis" x="{BAR_WIDTH}" y="{axis_y}" text-anchor="end">{escape(format_mib(scale))}</text>'
        "</svg>"
    )


def _unknown_bar(line: NodeLine) -> str:
    """A node whose VRAM cannot be read: one labelled segment (the guard admits no tenant there)."""
    title = "; ".join(line.node.problems) or "VRAM unknown"
    segment = _segment(0, BAR_WIDTH, "#6a1b9a", title, "VRAM unknown: the guard admits no GPU tenant here")
    label = f"{line.node.name}: VRAM unknown"
    return (
        f'<svg class="bar" viewBox="0 0 {BAR_WIDTH} {BAR_TOP + BAR_HEIGHT + 6}" role="img" '
        f'aria-label="{escape(label)}">{segment}</svg>'
    )


def _observed_reach(line: NodeLine) -> int:
    """How far right the observed strips reach (a tenant above its demand runs past its share)."""
    reach, cursor = 0, 0
    for tenant in line.tenants:
        if tenant.observed_mib is not None:
            reach = max(reach, cursor + tenant.observed_mib)
        cursor += tenant.demand_mib
    return reach


def _patterns() -> str:
    """Hatching, so observed use reads without colour: diagonal within the demand, crossed above it."""
    line = '<path d="M0 6 L6 0" stroke="#1f2328" stroke-width="1.6"/>'
    cross = line + '<path d="M0 0 L6 6" stroke="#1f2328" stroke-width="1.6"/>'
    return (
        '<defs><pattern id="og-observed" width="6" height="6" patternUnits="userSpaceOnUse">'
        f'<rect width="6" height="6" fill="#ffffff" fill-opacity="0.85"/>{line}</pattern>'
        '<pattern id="og-over" width="6" height="6" patternUnits="userSpaceOnUse">'
        f'<rect width="6" height="6" fill="#fca5a5"/>{cross}</pattern></defs>'
    )


def _observed(x0: float, x_end: float, x_seen: float, tenant: TenantLine) -> tuple[str, str]:
    """The strip of what `tenant` holds by its Ollama's `/api/ps` within its share, and the part above
    its demand, which runs past its share ("" when none)."""
    seen = format_mib(tenant.observed_mib or 0)
    title = f"{tenant.key}: observed {seen} of its {format_mib(tenant.demand_mib)} demand (Ollama /api/ps)"
    y = BAR_TOP + BAR_HEIGHT - OBSERVED_HEIGHT
    inside = round(min(x_seen, x_end) - x0, 2)
    within, over = "", ""
    if inside > 0:
        within = (
            f'<rect x="{x0}" y="{y}" width="{inside}" height="{OBSERVED_HEIGHT}" fill="url(#og-observed)" '
            f'stroke="#1f2328" stroke-width="0.6" data-part="observed" data-key="{escape(tenant.key)}">'
            f"<title>{escape(title)}</title></rect>"
        )
    if x_seen > x_end:
        above = format_mib((tenant.observed_mib or 0) - tenant.demand_mib)
        over = (
            f'<rect x="{x_end}" y="{y - 4}" width="{round(x_seen - x_end, 2)}" height="{OBSERVED_HEIGHT + 4}" '
            f'fill="url(#og-over)" stroke="#c62828" stroke-width="1.5" data-part="over" '
            f'data-key="{escape(tenant.key)}"><title>{escape(f"{title}: {above} above its demand")}</title></rect>'
        )
    return within, over


def _segment(
    x0: float,
    x1: float,
    color: str,
    title: str,
    label: str,
    *,
    planned: bool = False,
    part: tuple[str, str] = ("", ""),
) -> str:
    width = round(max(x1 - x0, 0), 2)
    if width <= 0:
        return ""
    style = ' fill-opacity="0.6" stroke="#1f2328" stroke-dasharray="5 3"' if planned else ""
    data = f' data-part="{part[0]}" data-key="{escape(part[1])}"' if part[0] else ""
    rect = (
        f'<rect x="{x0}" y="{BAR_TOP}" width="{width}" height="{BAR_HEIGHT}" fill="{color}"{style}{data}>'
        f"<title>{escape(title)}</title></rect>"
    )
    chars = int(width // 8) - 1
    if not label or chars < 4:
        return rect
    text = label if len(label) <= chars else label[: chars - 1] + "…"
    return rect + f'<text x="{round(x0 + 6, 2)}" y="{BAR_TOP + BAR_HEIGHT / 2 + 5}">{escape(text)}</text>'


def tenant_color(index: int) -> str:
    """The colour of a node's `index`-th tenant in its bar and legend."""
    return PALETTE[index % len(PALETTE)]


def _tenant_title(t: TenantLine) -> str:
    origin = f"planned: {t.owner}" if t.planned and t.owner else ("planned" if t.planned else "running")
    models = f"; models {', '.join(t.models)}" if t.models else ""
    problem = f"; {t.problem}" if t.problem else ""
    return f"{t.key}: {format_mib(t.demand_mib)} ({t.source}; {origin}){models}{problem}"


def _legend(tenants: Sequence[TenantLine]) -> str:
    if not tenants:
        return '<p class="note">No GPU tenant.</p>'
    items = []
    for i, t in enumerate(tenants):
        kind = " planned" if t.planned else ""
        origin = f" · planned: {escape(t.owner)}" if t.planned and t.owner else (" · planned" if t.planned else "")
        models = f" · {escape(', '.join(t.models))}" if t.models else ""
        models += f" · observed {format_mib(t.observed_mib)}" if t.observed_mib is not None else ""
        items.append(
            f'<li><span class="swatch{kind}" style="background:{tenant_color(i)}"></span>'
            f"<span><strong>{escape(t.key)}</strong> {format_mib(t.demand_mib)} · {escape(t.source)}"
            f"{models}{origin}</span></li>"
        )
    return f'<ul class="legend">{"".join(items)}</ul>'


# --- tables --------------------------------------------------------------------------------------
def _table(
    header: Sequence[str], rows: Iterable[Sequence[str]], *, numeric: Sequence[int] = (), classes: Sequence[str] = ()
) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for r, row in enumerate(rows):
        cls = f' class="{classes[r]}"' if r < len(classes) and classes[r] else ""
        cells = "".join(
            f'<td class="{"num" if i in numeric else ("msg" if i == len(row) - 1 else "")}">{cell}</td>'
            for i, cell in enumerate(row)
        )
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _finding_rows(findings: Iterable[Finding]) -> list[list[str]]:
    return [
        [
            f'<span class="badge {f.result}">{f.result}</span>',
            escape(f.severity),
            escape(f.rule),
            escape(f.resource.display),
            escape(f.message),
        ]
        for f in findings
    ]


def _findings(findings: Sequence[Finding]) -> str:
    problems = [f for f in findings if f.result not in ("pass", "skip")]
    rest = [f for f in findings if f.result in ("pass", "skip")]
    header = ["result", "severity", "rule", "resource", "message"]
    out = ['<section id="findings"><h2>Findings</h2>']
    out.append(_table(header, _finding_rows(problems)) if problems else '<p class="note">No failures or warnings.</p>')
    if rest:
        out.append(
            f"<details><summary>{len(rest)} passed or skipped</summary>{_table(header, _finding_rows(rest))}</details>"
        )
    out.append("</section>")
    return "\n".join(out)


def _subjects(subjects: Sequence[Subject]) -> str:
    if not subjects:
        return ""
    rows = []
    for s in subjects:
        demand = f"{format_mib(s.demand_mib)} ({escape(s.demand_source)})" if s.demand_mib is not None else "—"
        verdict = {"admit": "pass", "deny": "fail", "error": "error"}.get(s.verdict, "skip")
        rows.append(
            [
                escape(s.resource.display),
                escape(s.origin),
                demand,
                str(s.replicas),
                f'<span class="badge {verdict}">{escape(verdict_text(s))}</span>',
                escape(admission_text(s)),
                escape(placement_text(s)),
            ]
        )
    classes = ["denied" if s.verdict == "deny" else "" for s in subjects]
    header = ["resource", "from", "demand per pod", "pods", "verdict", "in its namespace", "nodes"]
    return (
        '<section id="subjects"><h2>Pods and workloads, as if created now</h2>'
        f"{_table(header, rows, numeric=(2, 3), classes=classes)}</section>"
    )


def _injections(subjects: Sequence[Subject]) -> str:
    injected = [s for s in subjects if s.inject]
    if not injected:
        return ""
    rows = [
        [
            escape(s.resource.display) + (' <span class="sub">(if re-created)</span>' if s.origin == "cluster" else ""),
            "<br>".join(f"<code>{escape(line)}</code>" for line in s.inject),
        ]
        for s in injected
    ]
    return (
        '<section id="inject"><h2>What the mutating webhook would inject</h2>'
        f"{_table(['resource', 'changes'], rows)}</section>"
    )


def _namespaces(report: AuditReport) -> str:
    if not report.namespaces:
        return ""
    rows = []
    for line in report.namespaces:
        p = line.policy
        quota = (
            f"{format_mib(line.used_mib)} of {format_mib(p.vram_quota_mib)}"
            if p.vram_quota_mib is not None
            else f"{format_mib(line.used_mib)} (no quota)"
        )
        rows.append(
            [
                escape(p.namespace),
                escape("exempt" if p.exempt else p.enforcement),
                f"{p.max_loaded_models} / {p.context_length} / {p.num_parallel}",
                quota,
                escape(", ".join(p.allowed_models)),
            ]
        )
    header = ["namespace", "mode", "caps (models / context / parallel)", "VRAM used", "allowed models"]
    return f'<section id="namespaces"><h2>Namespaces</h2>{_table(header, rows)}</section>'
