"""The load generator: Debian's `wrk` (C, one thread, keep-alive TLS), one Lua script per review kind.

`wrk -t1 -cN -dSs -s benchmarks/wrk/KIND.lua https://127.0.0.1:PORT/validate?timeout=5s -- BODIES`:
wrk does TLS itself (OpenSSL), keeps every connection alive, and POSTs the pre-built review bodies of
BODIES (one JSON document per line, written by `write_bodies`) in turn; `benchmarks/wrk/replay.lua`
prints its summary as one JSON line. Its CPU time is read from the kernel's accounting of reaped
children (`RUSAGE_CHILDREN`), so each phase shows how much of a core the generator needed.

`ensure_wrk(install=True)` installs Debian's package when it is missing (`apt-get update && apt-get
install -y wrk`, as root): only the benchmark command asks for that, never the tests.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from benchmarks.reviews import DEFAULT_PATH, PATHS, Review

SCRIPTS = Path(__file__).resolve().parent / "wrk"
KINDS = ("pod-mutate", "pod-validate", "binding")
#: the generator's ceiling: the floor answering the smallest review a webhook can be sent
TRIVIAL = "trivial"
TRIVIAL_BODY = '{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"0"}}'
APT_TIMEOUT_S = 600
MARK = "wrk-json "


def ensure_wrk(*, install: bool) -> tuple[str | None, str]:
    """wrk's path and a note (its version, or why it is absent). Installs it when asked and possible."""
    found = shutil.which("wrk")
    if found is None and install:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            return None, "wrk is not installed and cannot be installed here (needs apt-get as root)"
        for argv in (["apt-get", "update"], ["apt-get", "install", "-y", "wrk"]):
            done = subprocess.run(argv, capture_output=True, text=True, timeout=APT_TIMEOUT_S, check=False,
                                  stdin=subprocess.DEVNULL, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
            if done.returncode != 0:
                return None, f"`{' '.join(argv)}` failed: {done.stderr.strip()[-300:]}"
        found = shutil.which("wrk")
    if found is None:
        return None, "wrk is not installed (`apt-get install wrk`; `python -m benchmarks.run` installs it itself)"
    done = subprocess.run([found, "-v"], capture_output=True, text=True, timeout=10, check=False)
    return found, (done.stdout or done.stderr).splitlines()[0].split(" Copyright")[0].strip()


def write_bodies(bodies: Iterable[str], path: Path) -> Path:
    """One review body per line, as `replay.lua` reads them (a body is compact JSON: no newline)."""
    lines = list(bodies)
    assert all("\n" not in body for body in lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def bodies_of(reviews: Iterable[Review], kind: str) -> list[str]:
    return [r.body for r in reviews if r.kind == kind]


def url_path(kind: str) -> str:
    return PATHS.get(kind, DEFAULT_PATH)


def run_wrk(
    wrk: str, *, port: int, kind: str, bodies: Path, connections: int, seconds: int, host: str = "127.0.0.1"
) -> dict[str, Any]:
    """One wrk run of `seconds` (whole seconds: wrk's `-d`): rate, latency (µs), errors, its own CPU."""
    script = SCRIPTS / f"{kind}.lua"
    argv = [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "-s", str(script),
            f"https://{host}:{port}{url_path(kind)}", "--", str(bodies)]
    before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False,
                          stdin=subprocess.DEVNULL)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith(MARK)), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk exited {done.returncode}:\n{(done.stdout + done.stderr)[-2000:]}")
    summary: dict[str, Any] = json.loads(line[len(MARK):])
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    measured_s = summary["duration_us"] / 1e6
    return {
        "throughput": round(summary["requests"] / measured_s, 1),
        "requests": summary["requests"],
        "window_s": round(measured_s, 3),
        "connections": connections,
        "latency_us": summary["latency_us"],
        "errors": sum(summary["errors"].values()),
        "error_kinds": {k: v for k, v in summary["errors"].items() if v},
        "generator_cpu_cores": round(cpu / wall, 3),
    }
