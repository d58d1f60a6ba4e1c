"""Renderings of a time-slicing plan (design §16): a terminal table, JSON, and YAML to apply.

- `table` (rich): per node class the nodes, their replicas now and the recommendation, the
  reasoning, problems, then the numbered steps to apply (the `kubectl` line of each change) and
  what to verify.
- `json` (`schemaVersion: 1`): the same, machine-readable; each change carries its API call.
- `yaml`: the ConfigMap to `kubectl apply -f -`, with the reasoning and the remaining steps as
  comments. `kubectl apply` on an existing ConfigMap adds or replaces these keys only.

Reads the frozen plan and changes only; nothing here decides anything. User strings reach rich as
`Text` (never console markup). Pure apart from writing to the console it is given.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from webhook.core.deviceplugin import (
    Changes,
    Targets,
    class_config,
    config_map,
    dump_yaml,
    planned,
    verify_command,
)
from webhook.core.quantity import format_mib
from webhook.core.timeslicing import LABEL_CONFIG, ClassPlan, Plan, current_replicas

SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class PlanReport:
    plan: Plan
    changes: Changes
    targets: Targets
    #: where the state came from ("snapshot FILE", "live cluster URL")
    origin: str
    #: what was assumed about objects the state does not show (snapshot mode), each a line
    assumed: tuple[str, ...] = ()


def recommended_text(c: ClassPlan) -> str:
    if c.replicas is None:
        return "—"
    return f"{c.replicas}" if c.replicas > 1 else "1 (no sharing)"


def now_text(c: ClassPlan) -> str:
    values = sorted({current_replicas(n) or "1" for n in c.node_class.nodes})
    return ", ".join(values)


# --- json ----------------------------------------------------------------------------------------
def report_doc(report: PlanReport) -> dict[str, Any]:
    plan, changes = report.plan, report.changes
    return {
        "schemaVersion": SCHEMA_VERSION,
        "source": report.origin,
        "maxReplicas": plan.max_replicas,
        "classes": [_class_doc(c) for c in plan.classes],
        "skippedNodes": [{"name": s.name, "reason": s.reason} for s in plan.skipped],
        "problems": list(plan.problems),
        "unplaced": list(plan.unplaced),
        "apply": {
            "configMap": config_map(plan, report.targets) if planned(plan) else None,
            "changes": [
                {"step": c.step, "what": c.what, "command": c.command, "method": c.method, "path": c.path,
                 "contentType": c.content_type, "body": c.body}
                for c in changes.changes
            ],
            "blockers": list(changes.blockers),
            "unchanged": list(changes.unchanged),
            "assumed": list(report.assumed),
            "verify": [{"node": e.node, "resource": e.resource, "allocatable": e.count, "replicas": e.replicas}
                       for e in changes.expectations],
        },
    }


def _class_doc(c: ClassPlan) -> dict[str, Any]:
    node_class = c.node_class
    return {
        "name": node_class.name,
        "product": node_class.product,
        "gpuMemoryMiB": node_class.gpu_memory_mib,
        "gpuCount": node_class.gpu_count,
        "usableMiBPerGPU": node_class.usable_mib,
        "replicas": c.replicas,
        "basis": c.basis,
        "reasons": list(c.reasons),
        "problems": list(c.problems),
        "notes": list(c.notes),
        "nodes": [
            {"name": n.name, "currentReplicas": current_replicas(n) or None,
             "currentConfig": n.labels.get(LABEL_CONFIG)}
            for n in node_class.nodes
        ],
        "workloads": {
            "sized": [{"workload": s.workload, "models": list(s.models), "demandMiB": s.demand_mib, "gpus": s.gpus}
                      for s in c.sized],
            "unsized": list(c.unsized),
        },
        "config": class_config(c) if c.replicas is not None else None,
        "renameByDefault": c.rename_by_default,
        "failRequestsGreaterThanOne": c.fail_requests_greater_than_one,
    }


def render_json(report: PlanReport) -> str:
    return json.dumps(report_doc(report), indent=2, ensure_ascii=False) + "\n"


# --- yaml ----------------------------------------------------------------------------------------
def render_yaml(report: PlanReport) -> str:
    """The ConfigMap, preceded by the reasoning and the other steps as comments."""
    lines = [f"# ollama-guard timeslicing plan · {report.origin}"]
    for c in report.plan.classes:
        lines.append(f"# {c.node_class.name}: replicas {recommended_text(c)} (now {now_text(c)}) — {c.basis}")
        lines += [f"#   {r}" for r in (*c.reasons, *c.problems, *c.notes)]
    lines += [f"# problem: {p}" for p in (*report.plan.problems, *report.plan.unplaced)]
    lines += [f"# not applicable as it stands: {b}" for b in report.changes.blockers]
    later = [c for c in report.changes.changes if c.step != "configmap"]
    if later:
        lines.append("# then:")
        lines += [f"#   {c.command}" for c in later]
    if report.changes.expectations:
        lines.append(f"# verify: {verify_command(report.changes.expectations)}")
    if not planned(report.plan):
        return "\n".join(lines) + "\n"
    return "\n".join(lines) + "\n" + dump_yaml(config_map(report.plan, report.targets))


# --- table ---------------------------------------------------------------------------------------
def print_table(report: PlanReport, console: Console) -> None:
    plan = report.plan
    console.print(Text(f"time-slicing plan · {report.origin} · at most {plan.max_replicas} replicas per GPU"))
    table = Table(title="GPU node classes", title_justify="left")
    for column in ("config (class)", "nodes", "GPUs", "VRAM / GPU", "usable", "now", "recommended", "basis"):
        table.add_column(column)
    for c in plan.classes:
        node_class = c.node_class
        known = node_class.gpu_memory_mib > 0
        table.add_row(Text(node_class.name), Text(", ".join(n.name for n in node_class.nodes)),
                      Text(f"{node_class.gpu_count} × {node_class.product or 'GPU'}"),
                      format_mib(node_class.gpu_memory_mib) if known else "unknown",
                      format_mib(node_class.usable_mib) if known else "unknown",
                      Text(now_text(c)), recommended_text(c), c.basis)
    console.print(table)
    for c in plan.classes:
        console.print(Text(f"\n{c.node_class.name}", style="bold"))
        _bullets(console, c.reasons, "·")
        _bullets(console, c.problems, "!", style="bold red")
        _bullets(console, c.notes, "note:")
    for s in plan.skipped:
        console.print(Text(f"skipped node {s.name}: {s.reason}", style="dim"))
    _bullets(console, (*plan.problems, *plan.unplaced), "problem:", style="bold red")
    print_steps(report, console)


def _bullets(console: Console, lines: tuple[str, ...], mark: str, *, style: str = "") -> None:
    for line in lines:
        console.print(Text(f"  {mark} {line}", style=style), soft_wrap=True)


def print_steps(report: PlanReport, console: Console) -> None:
    changes = report.changes
    console.print(Text("\nWhat to apply", style="bold"))
    _bullets(console, report.assumed, "assumed:", style="dim")
    _bullets(console, changes.blockers, "cannot apply:", style="bold red")
    for i, change in enumerate(changes.changes, start=1):
        console.print(Text(f"{i}. {change.what}"))
        console.print(Text(_indent(change.command)), soft_wrap=True)
    if not changes.changes and not changes.blockers:
        console.print(Text("nothing to change: the cluster already has this plan"))
    _bullets(console, changes.unchanged, "unchanged:", style="dim")
    if changes.expectations:
        console.print(Text("\nVerify (once the device plugin has restarted)", style="bold"))
        console.print(Text(_indent(verify_command(changes.expectations))), soft_wrap=True)
        for e in changes.expectations:
            console.print(Text(f"  {e.node}: allocatable {e.resource} = {e.count} "
                               f"(nvidia.com/gpu.replicas={e.replicas})"))


def _indent(text: str) -> str:
    return "\n".join(f"   {line}" for line in text.splitlines())


def render_table(report: PlanReport, *, width: int = 120) -> str:
    buffer = io.StringIO()
    print_table(report, Console(file=buffer, width=width, color_system=None))
    return buffer.getvalue()
