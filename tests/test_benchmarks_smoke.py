"""Smoke run of the benchmark harness (`python -m benchmarks.run --quick`), so it does not rot.

Runs the real thing on a tiny snapshot: the floor and `ollama-guard serve` as subprocesses over TLS
on 127.0.0.1, the load generator as a third process. Asserts that it wrote a RESULTS-style report
with numbers for both servers; no timing is asserted (CI machines vary). `benchmarks` is not an
installed package, so everything runs as `python -m benchmarks.…` from the repository root.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NUMBER = re.compile(r"^\d[\d,]*(\.\d+)?$")
TRIPLE = re.compile(r"^\d+(\.\d+)? / \d+(\.\d+)? / \d+(\.\d+)?$")
RATIO = re.compile(r"^\d+\.\d+ \(\d+\.\d+–\d+\.\d+\)$")  # median, then the per-round range


def summary_rows(text: str) -> list[dict[str, str]]:
    """The Summary table of a RESULTS.md as rows of column -> cell."""
    section = text.split("## Summary", 1)[1].split("\n## ", 1)[0]
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
    run_module("benchmarks.run", "--quick", "--out", str(out), "--workdir", str(out.parent / "work"), timeout=240)
    return out


def test_quick_run_writes_a_summary_row_with_numbers_for_guard_and_floor(quick_run: Path) -> None:
    rows = summary_rows(quick_run.read_text(encoding="utf-8"))
    assert [r["size"] for r in rows] == ["tiny"]
    row = rows[0]
    for column in ("guard (reviews/s)", "floor (reviews/s)", "guard RSS after load (MiB)"):
        assert NUMBER.match(row[column]), (column, row[column])
    assert RATIO.match(row["guard/floor"]), row["guard/floor"]
    for column in ("guard p50 / p95 / p99 (ms)", "floor p50 / p95 / p99 (ms)"):
        assert TRIPLE.match(row[column]), (column, row[column])


def test_quick_run_replays_every_review_kind_against_both_servers_without_errors(quick_run: Path) -> None:
    run = json.loads(quick_run.with_suffix(".json").read_text(encoding="utf-8"))
    (entry,) = run["sizes"]
    for server in ("guard", "floor"):
        for phase in ("saturate", "rate"):
            measured = entry[server][phase]
            assert measured["errors"] == 0, measured["error_examples"]
            assert {"pod-mutate", "pod-validate", "binding", "deployment"} <= set(measured["latency_ms"])
        assert len(entry[server]["saturate_rounds"]) == 2  # --quick: two alternating saturated rounds
    guard_decisions = entry["guard"]["rate"]["decisions"]
    assert set(guard_decisions["pod-mutate"]) == {"allowed"}  # a mutation is a patch, never a denial
    assert entry["guard"]["launcher"] == "ollama-guard serve"


def test_quick_run_writes_the_plot_and_the_in_process_measurements(quick_run: Path) -> None:
    svg = quick_run.with_name("latency.svg").read_text(encoding="utf-8")
    assert svg.startswith("<svg") and "guard p99" in svg and "floor p50" in svg
    text = quick_run.read_text(encoding="utf-8")
    assert "## View build (in process)" in text and "## Estimator cost per pod" in text
    assert "`.venv/bin/python -m benchmarks.run --quick --out" in text


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
