"""Human text renderings of an `AuditReport`: a terminal table (rich) and Markdown (pull requests).

Both read the frozen report only; nothing here evaluates anything. User strings reach rich as
`Text` objects (never parsed as console markup) and Markdown escaped (never live HTML or table
syntax). Pure apart from writing to the console it is given.
"""

from __future__ import annotations

import io
from collections.abc import Iterable

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from webhook.audit.model import RESULTS, AuditReport, Finding, NodeLine, Subject
from webhook.core.quantity import format_mib

STYLES = {"fail": "bold red", "error": "bold magenta", "warn": "yellow", "pass": "green", "skip": "dim"}
MARKS = {"fail": "❌", "error": "🛑", "warn": "⚠️", "pass": "✅", "skip": "⏭️"}
ADMISSION = {"denied": "denied", "warned": "allowed, with warnings", "audited": "allowed, would-deny recorded"}


def usage_bar(ratio: float, *, width: int = 10) -> str:
    """`[██████░░░░] 62%`; a full bar and the real percentage when over 100%."""
    filled = min(max(round(ratio * width), 0), width)
    return f"[{'█' * filled}{'░' * (width - filled)}] {round(ratio * 100)}%"


def header_lines(report: AuditReport) -> list[str]:
    manifests = f" + {len(report.manifest_origins)} manifest file(s)" if report.manifest_origins else ""
    scope = f"namespace {report.namespace}" if report.namespace else "all namespaces"
    counts = " · ".join(f"{report.summary[r]} {r}" for r in RESULTS)
    return [
        f"state: {report.state_origin}{manifests} · {scope} · generated {iso(report)}",
        f"results: {counts}",
    ]


def iso(report: AuditReport) -> str:
    return report.generated_at.isoformat().replace("+00:00", "Z")


def gpu_text(line: NodeLine) -> str:
    node = line.node
    product = node.product or "GPU"
    return f"{node.gpu_count} × {product}, {node.replicas} replicas"


def admission_text(subject: Subject) -> str:
    return ADMISSION.get(subject.admission, subject.admission)


def verdict_text(subject: Subject) -> str:
    return {"skip": "skipped", "admit": "admitted", "deny": "denied", "error": "not evaluated"}[subject.verdict]


def placement_text(subject: Subject) -> str:
    placed = ", ".join(dict.fromkeys(subject.nodes))
    pending = subject.replicas - len(subject.nodes) if subject.origin != "cluster" else 0
    if subject.verdict in ("deny", "error"):
        return "—"
    parts = [placed] if placed else []
    if pending > 0:
        parts.append(f"{pending} pending")
    return ", ".join(parts) or "—"


# --- table (rich) --------------------------------------------------------------------------------
def table_renderables(report: AuditReport) -> list[RenderableType]:
    out: list[RenderableType] = [Text("ollama-guard audit", style="bold")]
    out += [Text(line) for line in header_lines(report)]
    out.append(_nodes_table(report))
    if any(line.tenants for line in report.nodes):
        out.append(_tenants_table(report))
    if report.other_nodes:
        table = _table("GPU nodes not guarded (their tenants are not counted)", "node", "GPU", "slots", "why")
        for other in report.other_nodes:
            slots = "MIG slices" if other.mig else f"{other.slots} {other.gpu_resource}"
            table.add_row(Text(other.name), Text(other.product or "—"), slots, Text(other.reason))
        out.append(table)
    if report.namespaces:
        out.append(_namespaces_table(report))
    if report.subjects:
        out.append(_subjects_table(report.subjects))
    out.append(_findings_table(report.ordered_findings()))
    injected = [s for s in report.subjects if s.inject]
    if injected:
        table = _table("What the mutating webhook would inject", "resource", "changes")
        for s in injected:
            table.add_row(Text(s.resource.display), Text("\n".join(s.inject)))
        out.append(table)
    if report.ignored:
        kinds = ", ".join(sorted({ref.kind for _, ref in report.ignored}))
        out.append(Text(f"ignored {len(report.ignored)} manifest object(s) of other kinds: {kinds}", style="dim"))
    return out


def render_table(report: AuditReport, *, width: int = 120) -> str:
    """The table as plain text (no colour codes), for files and goldens."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, force_terminal=False, highlight=False)
    print_table(report, console)
    return buffer.getvalue()


def print_table(report: AuditReport, console: Console) -> None:
    console.print(Group(*_spaced(table_renderables(report))), highlight=False)


def _spaced(items: Iterable[RenderableType]) -> list[RenderableType]:
    out: list[RenderableType] = []
    for item in items:
        if isinstance(item, Table) and out:
            out.append(Text(""))
        out.append(item)
    return out


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", expand=False)
    for column in columns:
        table.add_column(column, overflow="fold", no_wrap=column == "VRAM")
    return table


def advertised_text(line: NodeLine) -> str:
    """`ollama-guard.io/vram-mib` on the node now, and what the advertiser wants there when that differs."""
    shown = "—" if line.advertised_mib is None else format_mib(line.advertised_mib)
    target = line.advertise_target_mib
    if target is None or target == line.advertised_mib:
        return shown
    return f"{shown}\n(target {format_mib(target)})"


def _nodes_table(report: AuditReport) -> Table:
    columns = ("node", "GPUs", "budget", "committed", "free", "advertised", "VRAM")
    table = _table("Guarded GPU nodes (time-sliced)", *columns)
    for line in report.nodes:
        node = line.node
        budget = format_mib(node.budget_mib)
        if node.reserved_mib:
            budget += f"\n({format_mib(node.reserved_mib)} reserved)"
        committed = format_mib(line.committed_mib)
        if line.planned_mib:
            committed += f"\n(+{format_mib(line.planned_mib)} planned)"
        free = format_mib(line.free_mib) if line.free_mib >= 0 else f"{format_mib(-line.free_mib)} OVER"
        bar = Text(usage_bar(line.used_ratio), style="bold red" if line.free_mib < 0 else "")
        if node.problems:
            bar = Text("; ".join(node.problems), style="bold magenta")
        table.add_row(Text(node.name), Text(gpu_text(line)), budget, committed, free, advertised_text(line), bar)
    if not report.nodes:
        table.add_row("—", "no time-sliced GPU node", "", "", "", "", "")
    return table


def _tenants_table(report: AuditReport) -> Table:
    table = _table("Tenants per node", "node", "tenant", "demand", "source", "models", "origin")
    for line in report.nodes:
        for t in line.tenants:
            origin = f"planned: {t.owner}" if t.planned and t.owner else ("planned" if t.planned else "running")
            source = t.source + (f" ({t.problem})" if t.problem else "")
            table.add_row(
                Text(line.node.name),
                Text(t.key),
                format_mib(t.demand_mib),
                Text(source),
                Text(", ".join(t.models) or "—"),
                Text(origin),
            )
    return table


def _namespaces_table(report: AuditReport) -> Table:
    table = _table("Namespaces", "namespace", "mode", "caps (models / context / parallel)", "VRAM quota", "models")
    for line in report.namespaces:
        p = line.policy
        mode = "exempt" if p.exempt else p.enforcement
        quota = f"{format_mib(line.used_mib)} of {format_mib(p.vram_quota_mib)}" if p.vram_quota_mib else "none"
        caps = f"{p.max_loaded_models} / {p.context_length} / {p.num_parallel}"
        table.add_row(Text(p.namespace), mode, caps, quota, Text(", ".join(p.allowed_models)))
    return table


def _subjects_table(subjects: Iterable[Subject]) -> Table:
    table = _table(
        "Pods and workloads, as if created now", "resource", "from", "demand", "verdict", "in its namespace", "nodes"
    )
    for s in subjects:
        demand = f"{format_mib(s.demand_mib)} ({s.demand_source})" if s.demand_mib is not None else "—"
        if s.replicas != 1:
            demand += f" × {s.replicas}"
        style = {"admit": "green", "deny": "bold red", "error": "bold magenta"}.get(s.verdict, "dim")
        table.add_row(
            Text(s.resource.display),
            Text(s.origin),
            demand,
            Text(verdict_text(s), style=style),
            admission_text(s),
            Text(placement_text(s)),
        )
    return table


def _findings_table(findings: Iterable[Finding]) -> Table:
    table = _table("Findings (worst first)", "result", "severity", "rule", "resource", "message")
    for f in findings:
        table.add_row(
            Text(f.result, style=STYLES[f.result]), f.severity, f.rule, Text(f.resource.display), Text(f.message)
        )
    return table


# --- markdown ------------------------------------------------------------------------------------
def md(text: str) -> str:
    """Escape a user string for a Markdown table cell: no HTML, no emphasis, no table breaks."""
    out = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    for ch in "\\`*_[]|#~":
        out = out.replace(ch, "\\" + ch)
    return " ".join(out.split())


def _md_table(header: list[str], rows: Iterable[list[str]], align: str = "") -> list[str]:
    marks = [("---:" if a == "r" else "---") for a in (align or "l" * len(header)).ljust(len(header), "l")]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(marks) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def render_markdown(report: AuditReport) -> str:
    counts = " · ".join(f"{MARKS[r]} {report.summary[r]} {r}" for r in RESULTS if report.summary[r])
    out = ["## ollama-guard audit", "", f"**{counts or 'no results'}**", ""]
    out += [md(line) + "  " for line in header_lines(report)[:1]] + [""]
    out += _md_nodes(report)
    problems = [f for f in report.ordered_findings() if f.result not in ("pass", "skip")]
    out += ["### Findings", ""]
    if problems:
        rows = [
            [f"{MARKS[f.result]} {f.result}", f.severity, md(f.rule), md(f.resource.display), md(f.message)]
            for f in problems
        ]
        out += _md_table(["result", "severity", "rule", "resource", "message"], rows)
    else:
        out += ["No failures or warnings.", ""]
    others = [f for f in report.ordered_findings() if f.result in ("pass", "skip")]
    if others:
        out += [f"<details><summary>{len(others)} passed or skipped</summary>", ""]
        out += _md_table(
            ["result", "rule", "resource", "message"],
            [[f"{MARKS[f.result]} {f.result}", md(f.rule), md(f.resource.display), md(f.message)] for f in others],
        )
        out += ["</details>", ""]
    out += _md_subjects(report)
    return "\n".join(out).rstrip() + "\n"


def _md_nodes(report: AuditReport) -> list[str]:
    out = ["### Guarded GPU nodes", ""]
    rows = [
        [
            md(line.node.name),
            md(gpu_text(line)),
            format_mib(line.node.budget_mib),
            format_mib(line.committed_mib),
            format_mib(line.free_mib) if line.free_mib >= 0 else f"**{format_mib(-line.free_mib)} over**",
            md(advertised_text(line).replace("\n", " ")),
            f"`{usage_bar(line.used_ratio)}`",
        ]
        for line in report.nodes
    ]
    out += (
        _md_table(["node", "GPUs", "budget", "committed", "free", "advertised", "VRAM"], rows, "llrrrrl")
        if rows
        else ["No time-sliced GPU node.", ""]
    )
    tenants = [
        [
            md(line.node.name),
            md(t.key),
            format_mib(t.demand_mib),
            md(t.source),
            md(", ".join(t.models) or "—"),
            md(f"planned: {t.owner}" if t.planned and t.owner else ("planned" if t.planned else "running")),
        ]
        for line in report.nodes
        for t in line.tenants
    ]
    if tenants:
        out += ["<details><summary>Tenants per node</summary>", ""]
        out += _md_table(["node", "tenant", "demand", "source", "models", "origin"], tenants, "llrlll")
        out += ["</details>", ""]
    if report.other_nodes:
        out += ["### GPU nodes not guarded", ""]
        out += _md_table(
            ["node", "GPU", "why"], [[md(o.name), md(o.product or "—"), md(o.reason)] for o in report.other_nodes]
        )
    return out


def _md_subjects(report: AuditReport) -> list[str]:
    out: list[str] = []
    if report.subjects:
        out += ["### Pods and workloads, as if created now", ""]
        rows = [
            [
                md(s.resource.display),
                md(s.origin),
                f"{format_mib(s.demand_mib)} ({md(s.demand_source)})" if s.demand_mib is not None else "—",
                str(s.replicas),
                verdict_text(s),
                admission_text(s),
                md(placement_text(s)),
            ]
            for s in report.subjects
        ]
        out += _md_table(["resource", "from", "demand", "copies", "verdict", "in its namespace", "nodes"], rows, "llrr")
    injected = [s for s in report.subjects if s.inject]
    if injected:
        out += ["### What the mutating webhook would inject", ""]
        out += [f"- **{md(s.resource.display)}**: {md('; '.join(s.inject))}" for s in injected] + [""]
    if report.namespaces:
        out += ["### Namespaces", ""]
        out += _md_table(
            ["namespace", "mode", "caps (models / context / parallel)", "VRAM quota", "allowed models"],
            [
                [
                    md(line.policy.namespace),
                    "exempt" if line.policy.exempt else line.policy.enforcement,
                    f"{line.policy.max_loaded_models} / {line.policy.context_length} / {line.policy.num_parallel}",
                    f"{format_mib(line.used_mib)} of {format_mib(line.policy.vram_quota_mib)}"
                    if line.policy.vram_quota_mib
                    else "none",
                    md(", ".join(line.policy.allowed_models)),
                ]
                for line in report.namespaces
            ],
        )
    return out
