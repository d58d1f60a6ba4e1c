"""Subprocesses of a benchmark run: start a server, wait until it answers, read its RSS and CPU time
from /proc, and always stop it (SIGTERM, then SIGKILL), also on errors and Ctrl-C.

Linux only (/proc). Every wait is bounded; nothing listens anywhere but 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
STOP_GRACE_S = 10.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class ServerFailed(RuntimeError):
    """A server exited or did not become ready in time; the message carries the end of its log."""


@dataclass(frozen=True, slots=True)
class Server:
    name: str
    pid: int
    port: int
    log: Path

    def memory_mib(self) -> dict[str, float]:
        """VmRSS (resident now) and VmHWM (peak resident) in MiB."""
        return read_memory(self.pid)

    def cpu_seconds(self) -> float:
        return read_cpu_seconds(self.pid)


def read_memory(pid: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = round(int(value.split()[0]) / 1024, 1)
    return out


def read_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU seconds spent by the whole machine (all cores, every process) since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / CLOCK_TICKS


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def https_raw(port: int, path: str, *, ca: Path, timeout: float = 2.0) -> tuple[int, bytes]:
    context = ssl.create_default_context(cafile=str(ca))
    conn = http.client.HTTPSConnection(HOST, port, timeout=timeout, context=context)
    try:
        conn.request("GET", path, headers={"Host": "localhost"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def https_get(port: int, path: str, *, ca: Path, timeout: float = 2.0) -> tuple[int, dict[str, Any]]:
    status, body = https_raw(port, path, ca=ca, timeout=timeout)
    try:
        parsed = json.loads(body) if body else {}
    except ValueError:
        parsed = {}
    return status, parsed if isinstance(parsed, dict) else {}


@contextlib.contextmanager
def running(
    name: str, argv: Sequence[str], *, port: int, log: Path, ca: Path, ready_path: str, timeout: float
) -> Iterator[Server]:
    """Start `argv`, wait until `GET ready_path` answers 200 over TLS, yield, then stop it."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            _wait_ready(proc, name=name, port=port, ca=ca, path=ready_path, timeout=timeout, log=log)
            yield Server(name, proc.pid, port, log)
        finally:
            stop(proc)


def _wait_ready(
    proc: subprocess.Popen[bytes], *, name: str, port: int, ca: Path, path: str, timeout: float, log: Path
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerFailed(f"{name} exited with code {proc.returncode} before it was ready:\n{tail(log)}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            if https_get(port, path, ca=ca)[0] == 200:
                return
        time.sleep(0.1)
    raise ServerFailed(f"{name} was not ready within {timeout:.0f} s:\n{tail(log)}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (uvicorn shuts down gracefully), SIGKILL if it is still there after the grace period."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=STOP_GRACE_S)


def tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def run_json(argv: Sequence[str], *, timeout: float) -> dict[str, Any]:
    """Run a helper that prints one JSON object; raise with its stderr when it fails."""
    done = subprocess.run(argv, cwd=REPO, capture_output=True, timeout=timeout, check=False,
                          stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}… exited {done.returncode}:\n{done.stderr.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def terminate_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so `finally` blocks stop the servers as they do on Ctrl-C."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
