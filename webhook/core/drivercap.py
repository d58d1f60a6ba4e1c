"""Driver-enforced VRAM caps (design §8, "Driver-enforced cap"): the `NVIDIA_GPU_MEMORY_LIMIT` and
`NVIDIA_GPU_MEMORY_REQUEST` an Ollama container must carry, and what is wrong with the ones it has.

What NVIDIA's side does, read in the sources (nvidia-container-toolkit,
`cmd/nvidia-cdi-hook/apply-cuda-memory-limits/apply-cuda-memory-limits.go` and its test,
`pkg/nvcdi/cuda-memory-limits.go`, `pkg/nvcdi/full-gpu-nvml.go`; pull requests #1995 and #2075;
NVIDIA's "MPS v3 Memory Partitioning" page for `nvmlDeviceSetMemoryLimits_v1`):
- The CDI spec of every full GPU carries a `createRuntime` hook `nvidia-cdi-hook
  apply-cuda-memory-limits --driver-root R --gpu-id <that GPU's UUID>`. It reads the two variables
  from the container's OCI spec by their exact, singular names and, for each GPU id it was given,
  calls `SetMemoryLimits_v1(<the container's cgroup>, request, limit)`: the same figure on every
  GPU of the container. **The values are per GPU** (and per container: the cgroup is the
  container's own), so the guard sets `ceil(pod demand / GPUs requested)`, the per-GPU figure the
  node budget checks too (design §6).
- Values are whole MiB, parsed with Go's `strconv.ParseUint(v, 10, 64)` (digits only: no sign,
  space, suffix or fraction) and at most `DEVICE_MEMORY_LIMIT_MAX / MiB` = 2^44 − 1; anything else,
  or a request above the limit, makes the hook fail, and a failing `createRuntime` hook stops the
  container from starting. So the guard never writes such a pair, and denies one it is given.
- One version of the hook returns early unless *both* are set; another defaults a missing limit to
  "max" and a missing request to the limit. Setting both works with either.
- The limit is the hard cap (an allocation past it fails with `CUDA_ERROR_OUT_OF_MEMORY` in that
  container only); the request is the soft limit (MPS may evict a client above it under pressure).
  `cuMemGetInfo` then reports the limit as the total, which is why Ollama's own fitting works inside.
  The guard sets both to the demand.

Other spellings, notably the plural `NVIDIA_GPU_MEMORY_LIMITS` / `…_REQUESTS` (named in the closed
draft #1995, and used by schedulers whose caps were then never applied), are never looked at: they
get a warning naming the right one.

Chosen where the design is silent: a value the hook would refuse (`-1`, `1.5`, `abc`, `8Gi`, 30
digits, a request above the limit), and a limit of 0 (accepted by the hook, but no memory at all),
is not replaced by the mutation but denied by the validating webhook with a 400 naming the
container and the variable, like every other malformed declaration (`ollama-guard.io/vram-mib`,
`OLLAMA_*`): the author learns at `kubectl apply`, not from a container that never starts, and no
guess at what `1.5` or `8Gi` meant (a factor of 1024 apart) is written for them. A `valueFrom`
value, which the guard cannot read, is replaced by the cap. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from webhook.core.demand import PodDemand
from webhook.core.tenants import ContainerFacts, PodFacts

ENV_LIMIT = "NVIDIA_GPU_MEMORY_LIMIT"
ENV_REQUEST = "NVIDIA_GPU_MEMORY_REQUEST"
#: the spellings the hook never reads -> the one it does
PLURALS = {"NVIDIA_GPU_MEMORY_LIMITS": ENV_LIMIT, "NVIDIA_GPU_MEMORY_REQUESTS": ENV_REQUEST}
#: the hook's `maxMebiBytes`: `nvml.DEVICE_MEMORY_LIMIT_MAX` (2^64 − 1 bytes) in whole MiB
MAX_CAP_MIB = (1 << 44) - 1
RULE = "driver-memory-limit"
Severity = Literal["fail", "warn"]


@dataclass(frozen=True, slots=True)
class CapChange:
    """One of a container's two variables as the guard must leave it."""

    name: str
    value: int
    #: "absent", "above" (a literal above the cap) or "valueFrom" (a value the guard cannot read)
    was: Literal["absent", "above", "valueFrom"]
    old: str = ""


@dataclass(frozen=True, slots=True)
class CapPlan:
    """What one container needs: the changes, or (nothing changed) a value the hook would refuse."""

    container: str
    changes: tuple[CapChange, ...] = ()
    problem: str = ""
    #: the problem in one kubectl warning line
    short: str = ""


@dataclass(frozen=True, slots=True)
class CapFinding:
    """A violation in the words of the evaluation (`Violation` is built from it there)."""

    message: str
    short: str
    code: int
    severity: Severity


def accounted_mib(demand: PodDemand, requested_mib: int) -> int | None:
    """What the pod is accounted for: its demand, else (counted as a node's even share) the
    `ollama-guard.io/vram-mib` it requests; None when neither is known."""
    if demand.demand_mib is not None:
        return demand.demand_mib
    return requested_mib if requested_mib > 0 else None


def per_gpu_cap(pod: PodFacts, accounted: int | None) -> int | None:
    """The cap for each Ollama container of a GPU pod: accounted MiB / GPUs, rounded up."""
    if accounted is None or accounted <= 0 or not pod.is_gpu_tenant or not pod.ollama_containers:
        return None
    return min(-(-accounted // pod.gpus), MAX_CAP_MIB)


def plan_cap(container: ContainerFacts, cap: int) -> CapPlan:
    """Both variables at most `cap`: an absent one is set (the request to the limit), a higher or
    unreadable one lowered to `cap`, a value at or below it kept. A value the hook would refuse, or a
    request left above the limit, is a `problem` and nothing is planned (the validating webhook
    denies it)."""
    env, name = container.env, container.name
    try:
        limit = _read(env, ENV_LIMIT, minimum=1, container=name)
        request = _read(env, ENV_REQUEST, minimum=0, container=name)
    except CapValueError as exc:
        return CapPlan(name, problem=str(exc), short=exc.short)
    new_limit = cap if limit is None or limit > cap else limit
    new_request = new_limit if request is None else cap if request > cap else request
    if new_request > new_limit:
        problem = (
            f"container {name!r}: {ENV_REQUEST}={new_request} is above {ENV_LIMIT}={new_limit}: NVIDIA's "
            "driver-cap hook refuses to start such a container; set the request at or below the limit"
        )
        return CapPlan(name, problem=problem, short=f"container {name}: {ENV_REQUEST} is above {ENV_LIMIT}")
    changes = [
        _change(var, env, new)
        for var, old, new in ((ENV_LIMIT, limit, new_limit), (ENV_REQUEST, request, new_request))
        if old is None or old != new
    ]
    return CapPlan(name, tuple(changes))


def parse_cap_mib(text: str) -> int | None:
    """`text` as the hook reads it (Go's `strconv.ParseUint(text, 10, 64)`, at most `MAX_CAP_MIB`):
    ASCII digits only, leading zeros allowed; None for anything else. Never converts more than 14
    significant digits (a 5,000-digit value costs nothing)."""
    if not (text and text.isascii() and text.isdigit()):
        return None
    digits = text.lstrip("0") or "0"
    if len(digits) > len(str(MAX_CAP_MIB)):
        return None
    value = int(digits)
    return value if value <= MAX_CAP_MIB else None


class CapValueError(ValueError):
    """A value NVIDIA's hook would refuse; `short` is the one-line form."""

    def __init__(self, message: str, short: str) -> None:
        super().__init__(message)
        self.short = short


def _read(env: Mapping[str, str | None], var: str, *, minimum: int, container: str) -> int | None:
    """The variable's whole MiB; None when absent or from `valueFrom` (both get the guard's value)."""
    if var not in env or env[var] is None:
        return None
    text = env[var] or ""
    value = parse_cap_mib(text)
    if value is not None and value >= minimum:
        return value
    shown = text if len(text) <= 40 else f"{text[:30]}… ({len(text)} characters)"
    why = (
        "a hard limit of 0 MiB leaves the container no GPU memory at all"
        if value == 0
        else f"NVIDIA's hook reads a whole number of MiB up to {MAX_CAP_MIB} and refuses to start the container on "
        "anything else"
    )
    message = (
        f'container {container!r}: env {var}="{shown}" is not a driver VRAM cap: {why}; write MiB as plain digits '
        "(8 GiB = 8192), or remove it and the guard sets the pod's demand"
    )
    plain = f"={text!r}" if len(text) <= 16 and text.isascii() and text.isprintable() else ""
    raise CapValueError(message, f"container {container}: {var}{plain} is not a whole number of MiB")


def _change(var: str, env: Mapping[str, str | None], new: int) -> CapChange:
    if var not in env:
        return CapChange(var, new, "absent")
    if env[var] is None:
        return CapChange(var, new, "valueFrom")
    return CapChange(var, new, "above", str(env[var])[:40])


def mutation_warnings(container: ContainerFacts, plan: CapPlan) -> list[str]:
    """kubectl warnings (≤ 120 characters for names up to 20) for what the mutation changes of the
    author's own values, and for the plural spellings the hook never reads."""
    name = container.name
    out = [
        f"container {name}: NVIDIA's hook ignores {plural}; use {singular}"
        for plural, singular in PLURALS.items()
        if plural in container.env
    ]
    for change in plan.changes:
        if change.was == "above":
            out.append(f"container {name}: {change.name}={change.old} lowered to {change.value} (per-GPU demand, MiB)")
        elif change.was == "valueFrom":
            out.append(f"container {name}: {change.name} from valueFrom replaced by {change.value} (per-GPU demand)")
    return out


def cap_findings(pod: PodFacts, demand: PodDemand, *, template: bool = False) -> list[CapFinding]:
    """What `/validate` and the audit say about each Ollama container's cap: a value the hook would
    refuse (400), and a cap missing or above the pod's accounted demand (a warning). A `template`
    (a workload's pods as the mutation will create them) is only told what the mutation overrides."""
    cap = per_gpu_cap(pod, accounted_mib(demand, demand.requested_mib))
    if cap is None:
        return []
    out: list[CapFinding] = []
    for container in pod.ollama_containers:
        plan = plan_cap(container, cap)
        if plan.problem:
            out.append(CapFinding(plan.problem, plan.short, 400, "fail"))
            continue
        changes = [c for c in plan.changes if not (template and c.was == "absent")]
        if changes:
            out.append(_finding(container.name, changes, cap, template=template))
    return out


def _finding(container: str, changes: list[CapChange], cap: int, *, template: bool) -> CapFinding:
    absent = [c.name for c in changes if c.was == "absent"]
    above = [f"{c.name}={c.old}" for c in changes if c.was == "above"]
    unread = [c.name for c in changes if c.was == "valueFrom"]
    accounted = f"the {cap} MiB per GPU the guard accounts for this pod"
    parts = [f"{', '.join(above)} is above {accounted}, so the driver may let it take VRAM promised to its neighbours"]
    parts = parts if above else []
    if unread:
        parts.append(f"{', '.join(unread)} comes from valueFrom, which the guard cannot check against {accounted}")
    if absent:
        parts.append(
            f"no {' and '.join(absent)}: it was created without the guard's mutation (while the guard was away, or "
            f"before it set driver caps), so NVIDIA's driver (R615+, container toolkit 1.20.1+) does not cap it at "
            + accounted
        )
    values = ", ".join(f"{c.name}={c.value}" for c in changes)
    fix = f"its pods get {values} from the mutating webhook" if template else f"set {values}"
    message = f"container {container!r}: {'; '.join(parts)}; {fix}"
    if above:
        short = f"container {container}: {above[0]} exceeds the per-GPU demand {cap}"
    elif unread:
        short = f"container {container}: {unread[0]} from valueFrom exceeds the per-GPU demand {cap}"
    else:
        what = f"{ENV_LIMIT}/_REQUEST" if len(absent) == 2 else absent[0]
        short = f"container {container}: no {what}; driver cap unset (per-GPU demand {cap})"
    return CapFinding(message, short, 200, "warn")
