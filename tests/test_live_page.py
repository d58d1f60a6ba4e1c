"""The live VRAM page (design §15) in a real headless browser: Debian's `chromium` driven by
Playwright's Python package (`executable_path=/usr/bin/chromium`; Playwright never downloads a
browser here), against `ollama-guard serve` as a user runs it.

On the embedded default and on a busy multi-node snapshot (with fake Ollama servers on loopback
for runtime drift): every bar segment is as wide as its numbers say, a denial sent to `/validate`
shows within one refresh, the page says which node is full without colour, it fits a phone's
width, the Content Security Policy lets it run without a console error, and the page's JSON agrees
with `ollama-guard audit --format json` and `/metrics`. Screenshots are written under the test's
tmp_path and their sizes checked. Skips, saying why, only when Chromium or Playwright is missing.
"""

from __future__ import annotations

import copy
import json
import os
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_ollama import (
    PodSpec,
    answer,
    closed_port,
    fake_ollamas,
    gpu_node,
    loaded,
    namespace,
    ps_body,
    stamped_pod,
    write_snapshot,
)
from guard_process import Guard, serving

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REFRESH = 2.0  # seconds, the page's own period
ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "webhook" / "data" / "sample-review.json"

try:
    from playwright.sync_api import Browser, Page, sync_playwright
except ImportError:  # pragma: no cover - the skip says what to install
    sync_playwright = None  # type: ignore[assignment]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip("Chromium is not installed at /usr/bin/chromium (Debian: apt-get install -y chromium)")
    if sync_playwright is None:
        pytest.skip("Playwright's Python package is not installed (pip install playwright; no browser download)")
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def open_page(browser: Browser, guard: Guard, *, width: int = 1280, height: int = 800) -> tuple[Page, list[str]]:
    page = browser.new_page(viewport={"width": width, "height": height})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("request", lambda r: None if r.url.startswith(guard.page) else problems.append(f"request to {r.url}"))
    page.goto(guard.page + "/")
    page.wait_for_selector("[data-node]", timeout=10_000)
    return page, problems


def bar_widths(page: Page, node: str) -> dict[tuple[str, str], tuple[float, float]]:
    """(part, key) -> (x, width) of each bar rectangle, as fractions of the drawn bar's width."""
    found: dict[str, list[float]] = page.evaluate(
        """(node) => {
            const svg = document.querySelector(`[data-bar="${CSS.escape(node)}"] svg`);
            const box = svg.getBoundingClientRect(), full = svg.viewBox.baseVal.width;
            const scale = box.width / full;  // px per viewBox unit
            const out = {};
            for (const r of svg.querySelectorAll("rect[data-part]")) {
                const b = r.getBoundingClientRect();
                out[r.dataset.part + "|" + r.dataset.key] = [(b.left - box.left) / box.width, b.width / box.width];
            }
            return out;
        }""",
        node,
    )
    return {(k.split("|", 1)[0], k.split("|", 1)[1]): (v[0], v[1]) for k, v in found.items()}


def scale_of(node: dict[str, Any], observed: dict[str, int]) -> int:
    reach, cursor = 0, 0
    for t in node["tenants"]:
        key = f"{t['namespace']}/{t['name']}"
        if key in observed:
            reach = max(reach, cursor + observed[key])
        cursor += t["demandMiB"]
    return int(max(node["capacityMiB"], node["reservedMiB"] + node["committedMiB"], reach, 1))


def assert_bars_match_the_numbers(page: Page, state: dict[str, Any]) -> int:
    """Every tenant, free, observed and over segment: position and width = MiB / scale (±0.3% of the bar)."""
    observed = {f"{o['namespace']}/{o['name']}": o["observedMiB"] for o in state["observations"] if o["observedMiB"]}
    checked = 0
    for node in state["nodes"]:
        widths, scale, cursor = bar_widths(page, node["name"]), scale_of(node, observed), 0
        for t in node["tenants"]:
            key = f"{t['namespace']}/{t['name']}"
            x, w = widths[("tenant", key)]
            assert x == pytest.approx(cursor / scale, abs=0.003) and w == pytest.approx(
                t["demandMiB"] / scale, abs=0.003
            )
            if key in observed:
                seen = observed[key]
                assert widths[("observed", key)][1] == pytest.approx(min(seen, t["demandMiB"]) / scale, abs=0.003)
                if seen > t["demandMiB"]:
                    ox, ow = widths[("over", key)]
                    assert ox == pytest.approx((cursor + t["demandMiB"]) / scale, abs=0.003)
                    assert ow == pytest.approx((seen - t["demandMiB"]) / scale, abs=0.003)
            checked += 1
            cursor += t["demandMiB"]
        if node["freeMiB"] > 0:
            assert widths[("free", "")][1] == pytest.approx(node["freeMiB"] / scale, abs=0.003)
            checked += 1
    return checked


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


def screenshot(page: Page, path: Path, *, width: int, min_height: int) -> None:
    page.screenshot(path=str(path), full_page=True)
    w, h = png_size(path)
    assert w == width and h >= min_height
    assert path.stat().st_size > 15_000  # a drawn page, not a blank one


def fits_the_width(page: Page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def denial_review() -> tuple[dict[str, Any], str]:
    """The sample review asking for a context above team-a's cap: denied in every capacity mode."""
    review = json.loads(SAMPLE.read_text())
    name = f"denied-{uuid.uuid4().hex[:6]}"
    request = review["request"]
    request["uid"] = str(uuid.uuid4())
    request["name"] = name
    obj = copy.deepcopy(request["object"])
    obj["metadata"].pop("generateName", None)
    obj["metadata"]["name"] = name
    obj["spec"]["containers"][0]["env"].append({"name": "OLLAMA_CONTEXT_LENGTH", "value": "65536"})
    request["object"] = obj
    return review, name


def test_embedded_default_page(tmp_path: Path, browser: Browser) -> None:
    with serving(tmp_path) as guard:
        page, problems = open_page(browser, guard)
        state = guard.state()
        assert assert_bars_match_the_numbers(page, state) == 3  # two tenants and the free part
        card = page.locator('[data-node="gpu-h100-a"]')
        assert "HAS ROOM" in card.inner_text() and "4 replicas per GPU" in card.inner_text()
        assert "team-b/ollama-qwen-7d9f8b6c5d-x2kqp" in card.inner_text()
        assert "Runtime drift is off: snapshot mode" in page.locator("#drift").inner_text()
        assert "No denial or warning" in page.locator("#recent").inner_text()
        screenshot(page, tmp_path / "embedded-1280.png", width=1280, min_height=800)

        review, name = denial_review()
        answered = guard.review("/validate", review)
        sent = time.monotonic()
        assert answered["allowed"] is False and "OLLAMA_CONTEXT_LENGTH=65536" in answered["status"]["message"]
        row = page.locator("#recent tr", has_text=name)
        row.wait_for(timeout=(REFRESH + 2.0) * 1000)
        shown_after = time.monotonic() - sent
        assert shown_after <= REFRESH + 1.0, f"the denial took {shown_after:.1f} s to show"
        text = row.inner_text()
        assert "DENIED" in text and "validate" in text and answered["status"]["message"][:80] in text
        screenshot(page, tmp_path / "embedded-denied-1280.png", width=1280, min_height=800)

        phone, phone_problems = open_page(browser, guard, width=390, height=844)
        assert fits_the_width(phone)
        assert phone.locator("#recent tr", has_text=name).count() == 1
        screenshot(phone, tmp_path / "embedded-phone.png", width=390, min_height=844)
    assert problems == [] and phone_problems == []


def busy_cluster(tmp_path: Path, ports: dict[str, int]) -> Path:
    """Three guarded nodes (one over budget, one with reserved VRAM, one empty), a MIG node and two
    namespaces; three Ollama pods asked on loopback (one above its demand, one fine, one refused)."""
    mig = gpu_node("gpu-mig", memory_mib=81559)
    mig["metadata"]["labels"].update(
        {"nvidia.com/mig.strategy": "single", "nvidia.com/gpu.sharing-strategy": "none", "nvidia.com/gpu.replicas": "1"}
    )
    mig["status"] = {"capacity": {"nvidia.com/mig-3g.40gb": "2"}, "allocatable": {"nvidia.com/mig-3g.40gb": "2"}}
    objects = [
        gpu_node("gpu-a", memory_mib=46068),
        gpu_node("gpu-b", memory_mib=24564, reserved="2Gi"),
        gpu_node("gpu-c", memory_mib=81559, gpus=2, replicas=2),
        mig,
        namespace("team-a", vram_quota="40Gi"),
        namespace("team-b", enforcement="warn", context_length="16384"),
        stamped_pod(PodSpec("chat-big", "gpu-a", 8000, port=ports["big"])),
        stamped_pod(PodSpec("chat-fine", "gpu-a", 8000, port=ports["fine"])),
        stamped_pod(PodSpec("batch-cuda", "gpu-a", 4000, ollama=False)),
        stamped_pod(PodSpec("rag-0", "gpu-b", 8000, namespace="team-b", port=ports["gone"])),
        stamped_pod(PodSpec("rag-1", "gpu-b", 8000, namespace="team-b")),
        stamped_pod(PodSpec("rag-2", "gpu-b", 8000, namespace="team-b")),
    ]
    return write_snapshot(tmp_path / "busy.json", objects)


def test_busy_snapshot_page(tmp_path: Path, browser: Browser) -> None:
    with fake_ollamas(
        answer(ps_body(loaded("llama3.1:8b", 9500, context=131072))), answer(ps_body(loaded("qwen2.5:7b", 5000)))
    ) as (big, fine):
        snapshot = busy_cluster(tmp_path, {"big": big.port, "fine": fine.port, "gone": closed_port()})
        with serving(tmp_path, "--snapshot", str(snapshot), "--drift", "on", "--drift-interval", "1") as guard:
            page, problems = open_page(browser, guard)
            page.locator("#drift tr", has_text="over by").wait_for(timeout=8000)
            state = guard.state()
            with guard.https() as client:
                metrics = client.get("/metrics").text
            assert assert_bars_match_the_numbers(page, state) == 8  # 6 tenants, 2 free parts
            cards = {n: page.locator(f'[data-node="{n}"]').inner_text() for n in ("gpu-a", "gpu-b", "gpu-c")}
            assert "OVER BUDGET" in cards["gpu-b"] and "HAS ROOM" in cards["gpu-a"] and "HAS ROOM" in cards["gpu-c"]
            assert "reserved 2.0 GiB" in cards["gpu-b"] and "2 × NVIDIA-L40S-SHARED" in cards["gpu-c"]
            assert "full: gpu-b" in page.locator("#tiles").inner_text()
            assert "pod(s) above their demand: chat-big" in page.locator("#tiles").inner_text()
            drift = page.locator("#drift").inner_text()
            assert "▲ over by 1.5 GiB" in drift and "llama3.1:8b (context 131072, 9.3 GiB)" in drift
            assert "unknown" in page.locator("#drift tr", has_text="rag-0").inner_text()
            assert "OVER QUOTA" not in page.locator("#namespaces").inner_text()
            assert "gpu-mig" in page.locator("#other").inner_text()
            assert "observed-vram" in page.locator("#findings").inner_text()
            screenshot(page, tmp_path / "busy-1280.png", width=1280, min_height=800)
            phone, phone_problems = open_page(browser, guard, width=390, height=844)
            phone.locator("#drift tr", has_text="over by").wait_for(timeout=8000)
            assert fits_the_width(phone)
            screenshot(phone, tmp_path / "busy-phone.png", width=390, min_height=844)
    audit = subprocess.run(
        [sys.executable, "-m", "webhook", "audit", "--snapshot", str(snapshot), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert audit.returncode == 0, audit.stderr

    def figures(doc: dict[str, Any]) -> list[tuple[Any, ...]]:
        return [
            (
                n["name"],
                n["budgetMiB"],
                n["committedMiB"],
                n["freeMiB"],
                [(t["name"], t["demandMiB"]) for t in n["tenants"]],
            )
            for n in doc["nodes"]
        ]

    assert figures(state) == figures(json.loads(audit.stdout))
    for node in state["nodes"]:
        assert f'ollama_guard_node_vram_committed_mib{{node="{node["name"]}"}} {float(node["committedMiB"])}' in metrics
    assert problems == [] and phone_problems == []
