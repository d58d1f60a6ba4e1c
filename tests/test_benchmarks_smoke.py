"""Smoke run of the benchmark harness (`python -m benchmarks.run --quick`), so it does not rot.

Runs the real thing on a tiny snapshot: the floor and `ollama-guard serve` as subprocesses over TLS
on 127.0.0.1, driven by `wrk` (C) when it is installed. The test never installs wrk (it passes
`--no-install-wrk`): without it the load phases are skipped, with the reason, and only the rest of the
report is checked. Asserts the report's shape and that every review was answered without error; no
timing is asserted (CI machines vary). `benchmarks` is not an installed package, so everything runs
as `python -m benchmarks.…` from the repository root.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
NUMBER = re.compile(r"^\d[\d,]*(\.\d+)?$")
PAIR = re.compile(r"^\d+\.\d{3} / \d+\.\d{3}$")  # p50 / p99 in ms
RATIO = re.compile(r"^\d+\.\d+ \(\d+\.\d+–\d+\.\d+\)$")  # median, then the per-round range
KINDS = ["pod-mutate", "pod-validate", "binding"]
needs_wrk = pytest.mark.skipif(shutil.which("wrk") is None,
                               reason="wrk is not installed (apt-get install wrk; the benchmark command installs it)")


def table(text: str, heading: str) -> list[dict[str, str]]:
    """The first table under `## heading` as rows of column -> cell."""
    section = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    lines = [line.strip().strip("|") for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].split("|")]
    return [dict(zip(header, (cell.strip() for cell in line.split("|")), strict=True)) for line in lines[2:]]


def run_module(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "RESULTS.md"
    run_module("benchmarks.run", "--quick", "--no-install-wrk", "--out", str(out),
               "--workdir", str(out.parent / "work"), timeout=240)
    return out


def entry_of(quick_run: Path) -> dict[str, Any]:
    run = json.loads(quick_run.with_suffix(".json").read_text(encoding="utf-8"))
    (entry,) = run["sizes"]
    assert isinstance(entry, dict)
    return entry


@needs_wrk
def test_quick_run_writes_a_summary_row_per_review_kind_with_numbers_for_guard_and_floor(quick_run: Path) -> None:
    rows = table(quick_run.read_text(encoding="utf-8"), "Summary")
    assert [(r["size"], r["review"]) for r in rows] == [("tiny", kind) for kind in KINDS]
    for row in rows:
        for column in ("guard (reviews/s)", "floor (reviews/s)"):
            assert NUMBER.match(row[column]), (column, row[column])
        assert RATIO.match(row["guard/floor"]), row["guard/floor"]
        for column in ("guard p50 / p99, 1 connection (ms)", "floor p50 / p99, 1 connection (ms)"):
            assert PAIR.match(row[column]), (column, row[column])


@needs_wrk
def test_quick_run_replays_every_review_kind_against_both_servers_without_errors(quick_run: Path) -> None:
    entry = entry_of(quick_run)
    for server in ("guard", "floor"):
        for phase in ("saturate", "latency"):
            assert set(entry[server][phase]) == set(KINDS)
            for measured in entry[server][phase].values():
                assert measured["errors"] == 0, measured["error_kinds"]
                assert measured["requests"] > 0 and 0 < measured["generator_cpu_cores"] < 2
        assert all(len(r) == 2 for r in entry[server]["saturate_rounds"].values())  # --quick: two rounds
    decided = {kind: entry["guard"]["saturate"][kind]["decisions"] for kind in KINDS}
    assert set(decided["pod-mutate"]) == {"patched"}  # a mutation is a patch, never a denial
    assert "allowed" in decided["pod-validate"] and "allowed" in decided["binding"]
    assert not any("error" in counts for counts in decided.values())  # never the guard's own failure
    for kind in KINDS:  # every answer the generator counted is one the guard counted as decided
        assert sum(decided[kind].values()) >= entry["guard"]["saturate"][kind]["requests"]
    assert entry["guard"]["launcher"] == "ollama-guard serve"


@needs_wrk
def test_quick_run_records_the_generators_ceiling_and_the_targets(quick_run: Path) -> None:
    run = json.loads(quick_run.with_suffix(".json").read_text(encoding="utf-8"))
    assert run["ceiling"]["throughput"] > 0 and run["ceiling"]["generator_cpu_cores"] > 0
    text = quick_run.read_text(encoding="utf-8")
    assert "## The generator's ceiling" in text and "one core carries" in text
    targets = {r["target"]: r["verdict"] for r in table(text, "Targets (issue 17)")}
    for kind in KINDS:
        assert targets[f"{kind}: guard ≥ 60% of the floor, 8 connections"] in ("met", "**missed**")
        assert targets[f"{kind}: guard p99 ≤ 1 ms at 1 connection"] in ("met", "**missed**")
    assert targets["load generator reaches ≥ 2 × the floor's rate"] in ("met", "**missed**")


def test_quick_run_writes_memory_the_plot_and_the_in_process_measurements(quick_run: Path) -> None:
    text = quick_run.read_text(encoding="utf-8")
    (memory,) = table(text, "Memory and startup")
    assert NUMBER.match(memory["guard RSS after load (MiB)"]) and NUMBER.match(memory["guard startup (s)"])
    svg = quick_run.with_name("latency.svg").read_text(encoding="utf-8")
    assert svg.startswith("<svg") and "</svg>" in svg
    assert "## View build (in process)" in text and "## Estimator cost per pod" in text
    assert "`.venv/bin/python -m benchmarks.run --quick --no-install-wrk --out" in text
    assert "on uvloop + httptools" in text


def test_without_wrk_the_report_says_why_the_load_phases_are_missing(quick_run: Path) -> None:
    run = json.loads(quick_run.with_suffix(".json").read_text(encoding="utf-8"))
    if run["generator"]["available"]:
        pytest.skip("wrk is installed: the load phases ran")
    assert "wrk is not installed" in run["generator"]["wrk"]
    assert "Not measured: wrk is not installed" in quick_run.read_text(encoding="utf-8")


def test_generated_snapshots_are_deterministic_and_keep_tenants_within_slots(tmp_path: Path) -> None:
    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    for path in paths:
        run_module("benchmarks.generate", "--size", "small", "--seed", "3", "--out", str(path), timeout=60)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    items = json.loads(paths[0].read_text(encoding="utf-8"))["items"]
    meta = json.loads((tmp_path / "a.json.meta.json").read_text(encoding="utf-8"))
    assert (meta["nodes"], meta["pods"]) == (10, 100) == (
        sum(o["kind"] == "Node" for o in items), sum(o["kind"] == "Pod" for o in items))
    slots = {n["metadata"]["name"]: int(n["status"]["allocatable"].get("nvidia.com/gpu", 0))
             for n in items if n["kind"] == "Node"}
    used: dict[str, int] = {}
    for pod in (o for o in items if o["kind"] == "Pod" and o["spec"].get("nodeName")):
        node = pod["spec"]["nodeName"]
        for c in pod["spec"]["containers"]:
            used[node] = used.get(node, 0) + int(c["resources"]["limits"].get("nvidia.com/gpu", 0))
    assert all(used.get(node, 0) <= slot for node, slot in slots.items())
    assert all(free >= 0 for free in meta["free_mib"].values())
    stamped = [p for p in items if p["kind"] == "Pod" and "ollama-guard.io/vram-demand" in
               (p["metadata"].get("annotations") or {})]
    assert stamped and all(p["metadata"]["annotations"]["ollama-guard.io/estimate"].startswith('{"assumptions"')
                           for p in stamped)


def test_the_in_process_hot_path_tool_reports_every_review_kind(quick_run: Path) -> None:
    """`benchmarks.hotpath` on the quick run's snapshot and bodies: one line per kind, warm and cold µs for the
    guard and the floor, and the guard's Python calls per review."""
    done = run_module("benchmarks.hotpath", "--size", "tiny", "--runs", "1", "--reviews", "40",
                      "--workdir", str(quick_run.parent / "work"), timeout=120)
    lines = done.stdout.strip().splitlines()
    assert lines[0].split() == ["kind", "warm", "guard", "warm", "floor", "cold", "guard", "cold", "floor", "calls"]
    rows = {line.split()[0]: [float(cell) for cell in line.split()[1:]] for line in lines[1:]}
    assert sorted(rows) == sorted(KINDS)
    for kind, figures in rows.items():
        assert len(figures) == 5 and all(f > 0 for f in figures), (kind, figures)
        assert figures[4] >= 5  # a review runs the endpoint, the reader and a decision: several calls at least
