"""The benchmark harness: the guard against the floor, by cluster size, in one command.

Run from the repository root:

    .venv/bin/python -m benchmarks.run                   # small, medium, large (several minutes)
    .venv/bin/python -m benchmarks.run --quick           # a tiny snapshot, a few seconds
    .venv/bin/python -m benchmarks.run --sizes small,large --duration 20 --rate 500 --out /tmp/R.md

For each size (small: 10 nodes / 100 pods, medium: 500 / 10,000, large: 5,000 / 100,000) it
generates the snapshot once (`benchmarks/generate.py`, cached in the work directory) and derives
the replayed reviews (`benchmarks/reviews.py`); then starts the floor (`benchmarks/floor.py`) and
the guard (`ollama-guard serve --snapshot FILE --tls-cert … --tls-key …`) side by side, each in
its own process on 127.0.0.1 with the same certificate, and drives them from a separate load
process (`benchmarks/load.py`, 8 keep-alive TLS connections), one server at a time: saturated
throughput (closed loop) in `--rounds` rounds that alternate floor and guard (a shared host's
speed drifts by more than the difference being measured; alternating exposes both servers to the
same drift, and the median round is reported), then latency at a fixed offered rate (open loop,
500 reviews/s). It reads the server's RSS from
/proc after loading and after the load, and its CPU time and the whole machine's during each
phase (the machine may be shared). In-process it measures the time to build the view from the
largest snapshot and the estimator's cost per pod.

If `ollama-guard serve`'s loader would need more than `--max-load-seconds` for a snapshot (it is
probed on a slice of the file first), that size is served by `benchmarks/serve_direct.py` (the
same server, the snapshot parsed with `json.loads`) and marked as such.

Writes `benchmarks/RESULTS.md` (or `--out`), the raw numbers next to it (`.json`) and the plot
`latency.svg` next to it. Every server is stopped at the end, also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import generate, procs, report
from benchmarks.inprocess import estimator_cost, probe_loader, view_build
from benchmarks.reviews import build_reviews, write_reviews
from webhook.install.certs import ensure_dev_certs

HERE = Path(__file__).resolve().parent
PROBE_ABOVE_MB = 2.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="small,medium,large", help="comma-separated: tiny, small, medium, large")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured in the fixed-rate phase")
    parser.add_argument("--rounds", type=int, default=5, help="saturated rounds per server, alternating floor/guard")
    parser.add_argument("--round-seconds", type=float, default=5.0, help="seconds measured per saturated round")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before each measured phase")
    parser.add_argument("--rate", type=float, default=500.0, help="offered rate of the latency phase (reviews/s)")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="tiny snapshot, short phases (a few seconds)")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--baseline", type=Path, help="an earlier run's .json to show as 'before'")
    parser.add_argument("--workdir", type=Path, default=HERE / ".work", help="snapshots, certificates, logs")
    parser.add_argument("--max-load-seconds", type=float, default=300.0,
                        help="longest projected `ollama-guard serve` snapshot load to wait for")
    parser.add_argument("--seed", type=int, default=generate.DEFAULT_SEED)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.duration, args.warmup = "tiny", min(args.duration, 0.5), min(args.warmup, 0.2)
        args.rounds, args.round_seconds = min(args.rounds, 2), min(args.round_seconds, 0.5)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    procs.terminate_on_sigterm()
    sizes = [generate.SIZES[s.strip()] for s in args.sizes.split(",") if s.strip()]
    paths, _ = ensure_dev_certs(args.workdir / "certs")
    run: dict[str, Any] = {
        "machine": machine(),
        "command": f".venv/bin/python -m benchmarks.run {shlex.join(sys.argv[1:] if argv is None else argv)}".strip(),
        "started": now(),
        "revision": revision(),
        "settings": {"duration_s": args.duration, "warmup_s": args.warmup, "rate": args.rate,
                     "rounds": args.rounds, "round_s": args.round_seconds,
                     "connections": args.connections, "seed": args.seed},
        "sizes": [],
    }
    largest: tuple[Path, dict[str, Any]] | None = None
    for size in sizes:
        snapshot = ensure_snapshot(size, args.workdir, seed=args.seed)
        meta = json.loads(generate.meta_path(snapshot).read_text(encoding="utf-8"))
        reviews = args.workdir / f"{size.name}.reviews.json"
        write_reviews(build_reviews(meta, seed=args.seed), reviews)
        probe = probe_loader(snapshot) if snapshot.stat().st_size > PROBE_ABOVE_MB * 1e6 else None
        entry = {"size": size.name, "nodes": meta["nodes"], "pods": meta["pods"], "tenants": meta["tenants"],
                 "file_mb": round(snapshot.stat().st_size / 1e6, 1), "loader_probe": probe}
        log(f"{size.name}: {meta['nodes']} nodes, {meta['pods']} pods ({entry['file_mb']} MB)")
        cli_ok = probe is None or probe["projected_s"] <= args.max_load_seconds
        startup = 60 + (probe["projected_s"] * 3 if probe and cli_ok else entry["file_mb"] * 0.5)
        commands = {"floor": (floor_argv(paths, snapshot), 60.0),
                    "guard": (guard_argv(paths, snapshot, cli=cli_ok), startup)}
        entry.update(measure_pair(commands, args, paths, reviews))
        entry["guard"]["launcher"] = "ollama-guard serve" if cli_ok else "benchmarks/serve_direct.py"
        run["sizes"].append(entry)
        largest = (snapshot, entry)
    if largest is not None:
        snapshot, entry = largest
        probe = entry["loader_probe"]
        use_loader = probe is None or probe["projected_s"] <= args.max_load_seconds
        log(f"view build from the {entry['size']} snapshot (loader: {'yes' if use_loader else 'projected only'})")
        built = view_build(snapshot, use_loader=use_loader)
        run["view_build"] = {"size": entry["size"], "pods": entry["pods"], **built}
        if not use_loader and probe:
            run["view_build"]["loader_projected_s"] = probe["projected_s"]  # + SnapshotSource: see report
    log("estimator cost")
    run["estimator"] = estimator_cost(repeat=3 if args.quick else 5, number=300 if args.quick else 3000)
    run["finished"] = now()
    if (end := revision()) != run["revision"]:
        run["revision"] += f", then {end} (the code changed during the run)"
    baseline = json.loads(args.baseline.read_text(encoding="utf-8")) if args.baseline else None
    report.write(run, out=args.out, baseline=baseline)
    log(f"wrote {args.out}, {args.out.with_suffix('.json')} and {args.out.with_name('latency.svg')}")
    return 0


def measure_pair(
    commands: dict[str, tuple[list[str], float]], args: argparse.Namespace, paths: dict[str, Path], reviews: Path
) -> dict[str, dict[str, Any]]:
    """Start every server, take its memory, drive them (alternating saturated rounds, then each at the
    fixed rate), stop them. A server that fails to start, or a failed load run, is recorded as
    `error` and the run goes on with the others."""
    out: dict[str, dict[str, Any]] = {}
    with contextlib.ExitStack() as stack:
        servers: dict[str, procs.Server] = {}
        for name, (argv, startup) in commands.items():
            try:
                servers[name] = start(stack, name, argv, args, paths, startup=startup, out=out)
            except (procs.ServerFailed, RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
                log(f"  {name}: FAILED: {exc}")
                out[name] = {"error": str(exc)[-2000:]}
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
        for number in range(args.rounds):
            for name in list(servers)[:: 1 if number % 2 == 0 else -1]:
                result = guarded_phase(servers, name, "saturate", args, paths, reviews, out)
                if result is not None:
                    rounds[name].append(result)
                    log(f"  {name} saturate round {number + 1}: {result['throughput']:.0f}/s")
        for name in list(servers):
            if rounds[name]:
                out[name]["saturate"] = median_round(rounds[name])
                out[name]["saturate_rounds"] = [round(r["throughput"], 1) for r in rounds[name]]
            result = guarded_phase(servers, name, "rate", args, paths, reviews, out)
            if result is not None:
                out[name]["rate"] = result
                shown = result["latency_ms"]["all"]
                log(f"  {name} rate: {result['throughput']:.0f}/s, p50 {shown.get('p50')} ms, "
                    f"p99 {shown.get('p99')} ms, errors {result['errors']}")
            if name in servers:
                out[name]["memory_after"] = servers[name].memory_mib()
    return out


def start(
    stack: contextlib.ExitStack, name: str, argv: list[str], args: argparse.Namespace, paths: dict[str, Path],
    *, startup: float, out: dict[str, dict[str, Any]]
) -> procs.Server:
    port = procs.free_port()
    argv = [a.replace("{port}", str(port)) for a in argv]
    started = time.monotonic()
    log_file = args.workdir / "logs" / f"{name}-{port}.log"
    server = stack.enter_context(procs.running(name, argv, port=port, log=log_file, ca=paths["ca.crt"],
                                               ready_path="/readyz", timeout=startup))
    out[name] = {"startup_s": round(time.monotonic() - started, 2), "memory_ready": server.memory_mib()}
    log(f"  {name}: ready in {out[name]['startup_s']} s, RSS {out[name]['memory_ready'].get('VmRSS')} MiB")
    return server


def guarded_phase(
    servers: dict[str, procs.Server], name: str, mode: str, args: argparse.Namespace, paths: dict[str, Path],
    reviews: Path, out: dict[str, dict[str, Any]],
) -> dict[str, Any] | None:
    """One phase; on failure the server is recorded as failed and dropped from the rest of the run."""
    try:
        return phase(servers[name], mode, args, paths["ca.crt"], reviews)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        log(f"  {name} {mode}: FAILED: {exc}")
        out[name]["error"] = str(exc)[-2000:]
        out[name]["memory_after"] = servers.pop(name).memory_mib()
        return None


def median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median throughput (a real phase: its latency and CPU figures belong to it)."""
    return sorted(rounds, key=lambda r: r["throughput"])[(len(rounds) - 1) // 2]


def phase(server: procs.Server, mode: str, args: argparse.Namespace, ca: Path, reviews: Path) -> dict[str, Any]:
    duration = args.round_seconds if mode == "saturate" else args.duration
    argv = procs.python_module(
        "benchmarks.load", "--port", str(server.port), "--ca", str(ca), "--reviews", str(reviews), "--mode", mode,
        "--duration", str(duration), "--warmup", str(args.warmup), "--rate", str(args.rate),
        "--connections", str(args.connections),
    )
    cpu0, busy0, wall0 = server.cpu_seconds(), procs.machine_busy_seconds(), time.monotonic()
    result = procs.run_json(argv, timeout=duration + args.warmup + 60)
    wall = time.monotonic() - wall0
    result["server_cpu_cores"] = round((server.cpu_seconds() - cpu0) / wall, 3)
    result["machine_cpu_cores"] = round((procs.machine_busy_seconds() - busy0) / wall, 3)
    return result


def floor_argv(paths: dict[str, Path], snapshot: Path) -> list[str]:
    del snapshot  # the floor knows nothing about the cluster
    return procs.python_module("benchmarks.floor", "--host", procs.HOST, "--port", "{port}",
                               "--tls-cert", str(paths["tls.crt"]), "--tls-key", str(paths["tls.key"]))


def guard_argv(paths: dict[str, Path], snapshot: Path, *, cli: bool) -> list[str]:
    tls = ["--tls-cert", str(paths["tls.crt"]), "--tls-key", str(paths["tls.key"])]
    common = ["--host", procs.HOST, "--port", "{port}", *tls, "--snapshot", str(snapshot)]
    if not cli:
        return procs.python_module("benchmarks.serve_direct", *common)
    script = Path(sys.executable).with_name("ollama-guard")
    head = [str(script)] if script.exists() else procs.python_module("webhook")
    return [*head, "serve", *common]


def ensure_snapshot(size: generate.ClusterSize, workdir: Path, *, seed: int) -> Path:
    """The cached snapshot of `size`, generated when absent or made by another generator version."""
    path = workdir / "snapshots" / f"{size.name}-{seed}.json"
    sidecar = generate.meta_path(path)
    if path.exists() and sidecar.exists():
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
        if meta.get("generator") == generate.GENERATOR_VERSION and meta.get("nodes") == size.nodes:
            return path
    log(f"generating the {size.name} snapshot ({size.nodes} nodes, {size.pods} pods)")
    generate.write_snapshot(generate.generate(size, seed=seed), path)
    return path


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown")
    import uvicorn

    return {"nproc": len(os.sched_getaffinity(0)), "cpu": cpu, "python": platform.python_version(),
            "kernel": platform.release(), "uvicorn": uvicorn.__version__,
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}


def revision() -> str:
    """The commit measured, and whether webhook/ had uncommitted changes (read-only git)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=procs.REPO, capture_output=True,
                              text=True, timeout=10, check=False).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "webhook"], cwd=procs.REPO,
                               capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + (" with uncommitted changes in webhook/" if dirty else "")


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
