"""The benchmark harness: the guard against the floor, by cluster size and review kind, in one command.

Run from the repository root:

    .venv/bin/python -m benchmarks.run                   # small, medium, large (about 8 minutes)
    .venv/bin/python -m benchmarks.run --quick           # a tiny snapshot, about 30 seconds
    .venv/bin/python -m benchmarks.run --sizes small,large --rounds 5 --out /tmp/R.md

For each size (small: 10 nodes / 100 pods, medium: 500 / 10,000, large: 5,000 / 100,000) it
generates the snapshot once (`benchmarks/generate.py`, cached in the work directory) and derives
the replayed reviews (`benchmarks/reviews.py`): one file of request bodies per review kind (pod
mutate, pod validate, binding validate). It starts the floor (`benchmarks/floor.py`) and the guard
(`ollama-guard serve --snapshot FILE --tls-cert … --tls-key …`) side by side, each in its own
process on 127.0.0.1 with the same certificate, both on uvicorn + uvloop + httptools, and drives
them with the C load generator `wrk` (`benchmarks/generator.py`, one Lua script per kind in
`benchmarks/wrk/`; installed from Debian when missing unless `--no-install-wrk`):

- the generator's ceiling, once per run: the floor answering a trivial review, and how much of a
  core wrk needed for it (wrk is one thread: one core carries rate / cores);
- saturated throughput per kind, 8 keep-alive TLS connections, in `--rounds` rounds that alternate
  floor and guard (a shared host's speed drifts by more than the difference being measured;
  alternating exposes both servers to the same drift; the median round is reported);
- latency per kind at 1 connection (one review at a time, closed loop) for `--duration` seconds.

Each phase records the server's CPU, wrk's, the whole machine's and the load average (the machine
may be shared), and for the guard the decisions it counted in `/metrics`. RSS is read from /proc
after loading and after the load. In process it measures the time to build the view from the
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
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import generate, generator, procs, report
from benchmarks.inprocess import estimator_cost, probe_loader, view_build
from benchmarks.reviews import build_reviews, write_reviews
from webhook.install.certs import ensure_dev_certs

HERE = Path(__file__).resolve().parent
PROBE_ABOVE_MB = 2.0
#: the guard's /metrics counter of answered reviews, and which (webhook, kind) each review kind is
_COUNTED = re.compile(r'^ollama_guard_admission_requests_total\{([^}]*)\} ([0-9.e+]+)$', re.MULTILINE)
_WEBHOOK_KIND = {"pod-mutate": ("mutate", "Pod"), "pod-validate": ("validate", "Pod"),
                 "binding": ("validate", "Binding"), "deployment": ("validate", "Deployment")}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="small,medium,large", help="comma-separated: tiny, small, medium, large")
    parser.add_argument("--kinds", default=",".join(generator.KINDS), help="review kinds (comma-separated)")
    parser.add_argument("--duration", type=int, default=5, help="seconds of each 1-connection latency phase")
    parser.add_argument("--rounds", type=int, default=3, help="saturated rounds per server and kind, alternating")
    parser.add_argument("--round-seconds", type=int, default=5, help="seconds measured per saturated round")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of load before a server's first round")
    parser.add_argument("--connections", type=int, default=8, help="keep-alive TLS connections when saturating")
    parser.add_argument("--quick", action="store_true", help="tiny snapshot, 1 s phases (about 30 seconds)")
    parser.add_argument("--no-install-wrk", action="store_true",
                        help="do not apt-get install wrk when it is missing (the load phases are then skipped)")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--baseline", type=Path, help="an earlier run's .json to show as 'before'")
    parser.add_argument("--workdir", type=Path, default=HERE / ".work", help="snapshots, certificates, logs")
    parser.add_argument("--max-load-seconds", type=float, default=300.0,
                        help="longest projected `ollama-guard serve` snapshot load to wait for")
    parser.add_argument("--seed", type=int, default=generate.DEFAULT_SEED)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.duration, args.warmup = "tiny", 1, 0
        args.rounds, args.round_seconds = min(args.rounds, 2), 1
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    procs.terminate_on_sigterm()
    sizes = [generate.SIZES[s.strip()] for s in args.sizes.split(",") if s.strip()]
    paths, _ = ensure_dev_certs(args.workdir / "certs")
    wrk, wrk_note = generator.ensure_wrk(install=not args.no_install_wrk)
    log(f"load generator: {wrk_note}")
    run: dict[str, Any] = {
        "machine": machine(),
        "command": f".venv/bin/python -m benchmarks.run {shlex.join(sys.argv[1:] if argv is None else argv)}".strip(),
        "started": now(),
        "revision": revision(),
        "settings": {"duration_s": args.duration, "warmup_s": args.warmup, "rounds": args.rounds,
                     "round_s": args.round_seconds, "connections": args.connections, "kinds": args.kinds,
                     "seed": args.seed},
        "generator": {"wrk": wrk_note, "available": wrk is not None},
        "sizes": [],
    }
    largest: tuple[Path, dict[str, Any]] | None = None
    for size in sizes:
        snapshot = ensure_snapshot(size, args.workdir, seed=args.seed)
        meta = json.loads(generate.meta_path(snapshot).read_text(encoding="utf-8"))
        reviews = build_reviews(meta, seed=args.seed)
        write_reviews(reviews, args.workdir / f"{size.name}.reviews.json")
        bodies = {kind: generator.write_bodies(generator.bodies_of(reviews, kind),
                                               args.workdir / "bodies" / f"{size.name}.{kind}.jsonl")
                  for kind in args.kinds}
        bodies[generator.TRIVIAL] = generator.write_bodies([generator.TRIVIAL_BODY],
                                                           args.workdir / "bodies" / "trivial.jsonl")
        probe = probe_loader(snapshot) if snapshot.stat().st_size > PROBE_ABOVE_MB * 1e6 else None
        entry: dict[str, Any] = {"size": size.name, "nodes": meta["nodes"], "pods": meta["pods"],
                                 "tenants": meta["tenants"], "file_mb": round(snapshot.stat().st_size / 1e6, 1),
                                 "loader_probe": probe}
        log(f"{size.name}: {meta['nodes']} nodes, {meta['pods']} pods ({entry['file_mb']} MB)")
        cli_ok = probe is None or probe["projected_s"] <= args.max_load_seconds
        startup = 60 + (probe["projected_s"] * 3 if probe and cli_ok else entry["file_mb"] * 0.5)
        commands = {"floor": (floor_argv(paths, snapshot), 60.0),
                    "guard": (guard_argv(paths, snapshot, cli=cli_ok), startup)}
        bench = Bench(args, wrk, paths["ca.crt"], bodies)
        entry.update(bench.measure(commands, ceiling="ceiling" not in run))
        if "ceiling" in entry:
            run["ceiling"] = entry.pop("ceiling")
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
    run["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    if (end := revision()) != run["revision"]:
        run["revision"] += f", then {end} (the code changed during the run)"
    baseline = json.loads(args.baseline.read_text(encoding="utf-8")) if args.baseline else None
    report.write(run, out=args.out, baseline=baseline)
    log(f"wrote {args.out}, {args.out.with_suffix('.json')} and {args.out.with_name('latency.svg')}")
    return 0


class Bench:
    """One size: the servers side by side and every load phase against them."""

    def __init__(self, args: argparse.Namespace, wrk: str | None, ca: Path, bodies: dict[str, Path]) -> None:
        self.args, self.wrk, self.ca, self.bodies = args, wrk, ca, bodies
        self.servers: dict[str, procs.Server] = {}
        self.out: dict[str, dict[str, Any]] = {}

    def measure(self, commands: dict[str, tuple[list[str], float]], *, ceiling: bool) -> dict[str, Any]:
        """Start every server, take its memory, run the phases, stop them. A server that fails to
        start, or a failed phase, is recorded as `error` and the run goes on with the others."""
        result: dict[str, Any] = {}
        with contextlib.ExitStack() as stack:
            for name, (argv, startup) in commands.items():
                try:
                    self.servers[name] = start(stack, name, argv, self.args, startup=startup, ca=self.ca,
                                               out=self.out)
                except (procs.ServerFailed, RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
                    log(f"  {name}: FAILED: {exc}")
                    self.out[name] = {"error": str(exc)[-2000:]}
            if self.wrk is not None:
                if ceiling and "floor" in self.servers:
                    result["ceiling"] = self.ceiling()
                for kind in self.args.kinds:
                    self.saturate(kind)
                for kind in self.args.kinds:
                    for name in list(self.servers):
                        if (measured := self.phase(name, kind, connections=1, seconds=self.args.duration)):
                            self.out[name].setdefault("latency", {})[kind] = measured
                            shown = measured["latency_us"]
                            log(f"  {name} {kind} 1 connection: p50 {shown['p50']} µs, p99 {shown['p99']} µs")
            for name, server in self.servers.items():
                self.out[name]["memory_after"] = server.memory_mib()
        return {**self.out, **result}

    def ceiling(self) -> dict[str, Any]:
        """The floor answering a trivial review: the fastest this stack answers anything, and the
        share of a core wrk needed to drive it."""
        rounds = [r for _ in range(max(self.args.rounds, 1))
                  if (r := self.phase("floor", generator.TRIVIAL, connections=self.args.connections,
                                      seconds=self.args.round_seconds))]
        best = max(rounds, key=lambda r: r["throughput"]) if rounds else {}
        if best:
            log(f"  ceiling (floor, trivial review): {best['throughput']:.0f}/s, "
                f"wrk {best['generator_cpu_cores']} cores")
        return {**best, "rounds": [r["throughput"] for r in rounds]}

    def saturate(self, kind: str) -> None:
        names = list(self.servers)
        for name in names:  # warm-up: not recorded
            if self.args.warmup > 0:
                self.phase(name, kind, connections=self.args.connections, seconds=self.args.warmup)
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        for number in range(self.args.rounds):
            for name in names[:: 1 if number % 2 == 0 else -1]:
                measured = self.phase(name, kind, connections=self.args.connections, seconds=self.args.round_seconds)
                if measured is not None:
                    rounds[name].append(measured)
                    log(f"  {name} {kind} round {number + 1}: {measured['throughput']:.0f}/s "
                        f"(wrk {measured['generator_cpu_cores']} cores, other {measured['other_cpu_cores']})")
        for name, measured_rounds in rounds.items():
            if measured_rounds and name in self.out:
                self.out[name].setdefault("saturate", {})[kind] = median_round(measured_rounds)
                self.out[name].setdefault("saturate_rounds", {})[kind] = [r["throughput"] for r in measured_rounds]

    def phase(self, name: str, kind: str, *, connections: int, seconds: int) -> dict[str, Any] | None:
        """One wrk run against one server; on failure the server is recorded as failed and dropped."""
        server = self.servers.get(name)
        if server is None or self.wrk is None:
            return None
        try:
            before = self.decisions(server) if name == "guard" else None
            load0 = os.getloadavg()[0]
            cpu0, busy0, wall0 = server.cpu_seconds(), procs.machine_busy_seconds(), time.monotonic()
            measured = generator.run_wrk(self.wrk, port=server.port, kind=kind, bodies=self.bodies[kind],
                                         connections=connections, seconds=seconds)
            wall = time.monotonic() - wall0
            measured["server_cpu_cores"] = round((server.cpu_seconds() - cpu0) / wall, 3)
            measured["machine_cpu_cores"] = round((procs.machine_busy_seconds() - busy0) / wall, 3)
            measured["other_cpu_cores"] = round(max(measured["machine_cpu_cores"] - measured["server_cpu_cores"]
                                                    - measured["generator_cpu_cores"], 0.0), 3)
            measured["loadavg_1m_before"] = round(load0, 2)
            if before is not None:
                after = self.decisions(server)
                measured["decisions"] = decided(before, after, kind)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            log(f"  {name} {kind}: FAILED: {exc}")
            self.out[name]["error"] = str(exc)[-2000:]
            self.out[name]["memory_after"] = self.servers.pop(name).memory_mib()
            return None
        return measured

    def decisions(self, server: procs.Server) -> dict[tuple[str, ...], float]:
        status, body = procs.https_raw(server.port, "/metrics", ca=self.ca, timeout=10)
        if status != 200:
            raise RuntimeError(f"GET /metrics answered {status}")
        return {tuple(sorted(re.findall(r'(\w+)="([^"]*)"', labels))): float(value)
                for labels, value in _COUNTED.findall(body.decode())}


def decided(before: dict[tuple[str, ...], float], after: dict[tuple[str, ...], float], kind: str) -> dict[str, int]:
    """The guard's answers during a phase, by decision, for the webhook and object kind of `kind`."""
    webhook, object_kind = _WEBHOOK_KIND.get(kind, ("", ""))
    out: dict[str, int] = {}
    for key, value in after.items():
        labels = dict(key)
        if labels.get("webhook") == webhook and labels.get("kind") == object_kind:
            seen = int(value - before.get(key, 0.0))
            if seen:
                out[labels["decision"]] = out.get(labels["decision"], 0) + seen
    return out


def start(
    stack: contextlib.ExitStack, name: str, argv: list[str], args: argparse.Namespace, *, startup: float, ca: Path,
    out: dict[str, dict[str, Any]],
) -> procs.Server:
    port = procs.free_port()
    argv = [a.replace("{port}", str(port)) for a in argv]
    started = time.monotonic()
    log_file = args.workdir / "logs" / f"{name}-{port}.log"
    server = stack.enter_context(procs.running(name, argv, port=port, log=log_file, ca=ca,
                                               ready_path="/readyz", timeout=startup))
    out[name] = {"startup_s": round(time.monotonic() - started, 2), "memory_ready": server.memory_mib()}
    log(f"  {name}: ready in {out[name]['startup_s']} s, RSS {out[name]['memory_ready'].get('VmRSS')} MiB")
    return server


def median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median throughput (a real phase: its latency and CPU figures belong to it)."""
    return sorted(rounds, key=lambda r: r["throughput"])[(len(rounds) - 1) // 2]


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

    from webhook.http.server import server_stack

    stack = server_stack()
    return {"nproc": len(os.sched_getaffinity(0)), "cpu": cpu, "python": platform.python_version(),
            "kernel": platform.release(), "uvicorn": uvicorn.__version__, "loop": stack.loop, "http": stack.http,
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
